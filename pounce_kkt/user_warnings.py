"""Warnings attributed to the user's line, past every library frame between it and us."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from functools import lru_cache

# Packages whose frames sit between a user's call and the warning: ours, the layers we plug
# into (cvxpylayers, Theseus, diffcp's API), and the frameworks that call them (torch, cvxpy).
LIBRARY_PACKAGES = ("pounce_kkt", "pounce_cvxpy", "pounce_theseus", "cvxpylayers", "theseus",
                    "diffcp", "cvxpy", "torch")


@lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    dirs = []
    for name in LIBRARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for d in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.join(os.path.realpath(d), ""))
    return tuple(dirs)


def _in_library(filename: str) -> bool:
    path = os.path.realpath(filename) if os.path.isabs(filename) else filename
    return path.startswith(_library_dirs())


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn(message, category)` attributed to the user's line: the first frame,
    going outwards from the caller, whose file is not in one of LIBRARY_PACKAGES."""
    frame = sys._getframe(1)
    level = 2
    while frame is not None and _in_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
