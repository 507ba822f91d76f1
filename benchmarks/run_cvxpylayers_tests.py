"""Run cvxpylayers' own torch tests with the default solver switched to "pounce".

    .venv/bin/python benchmarks/run_cvxpylayers_tests.py /path/to/cvxpylayers [--baseline]

Takes a checkout of https://github.com/cvxgrp/cvxpylayers and runs its
`tests/test_torch.py` and `tests/test_dual_variables.py` (1.x) against the INSTALLED
cvxpylayers (their pyproject's `pythonpath = ["src"]` is bypassed with `-c /dev/null`).
A 0.1.x checkout has `cvxpylayers/torch/test_cvxpylayer.py` instead: it runs too, with
benchmarks/cvxpylayers_01x_shim.py in both modes (two 0.1.x-only names it imports) and its
`test_least_squares_custom_method` (0.1.x's `custom_method` argument, gone in 1.x) deselected;
it is imported by path (`--import-mode=importlib`).
Nothing of theirs is copied here: this file is loaded into pytest as a plugin
(`-p run_cvxpylayers_tests`) that imports pounce_cvxpy and makes
`CvxpyLayer(..., solver=None)` mean `solver="pounce"`; explicit solvers are left alone.
`--baseline` runs the same files without the plugin (cvxpylayers' default, diffcp).
Prints pytest's summary and the pass/fail/skip counts (the full log goes to
benchmarks/out/). Not part of the CI suite.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from suite_runner import run_suite

TEST_FILES = ("tests/test_torch.py", "tests/test_dual_variables.py")
# A 0.1.x checkout's torch tests, its shim plugin, and its pytest arguments: the file sits
# inside the checkout's `cvxpylayers` package, so it is imported by path (not as
# `cvxpylayers.torch.test_cvxpylayer` of the installed package), and the one test 1.x
# cannot run is deselected.
OLD_TEST_FILES = ("cvxpylayers/torch/test_cvxpylayer.py",)
OLD_SHIMS = ("cvxpylayers_01x_shim",)
OLD_ARGS = ("--import-mode=importlib", "-k", "not test_least_squares_custom_method")


def _switch_default_solver() -> None:
    """Make `CvxpyLayer(solver=None)` build a POUNCE layer (idempotent)."""
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401  (registers "pounce")

    init = CvxpyLayer.__init__
    if getattr(init, "__pounce_default__", False):
        return

    @functools.wraps(init)
    def __init__(self, problem, parameters, variables, solver=None, *args, **kwargs):
        init(self, problem, parameters, variables, "pounce" if solver is None else solver,
             *args, **kwargs)

    __init__.__pounce_default__ = True
    CvxpyLayer.__init__ = __init__


def pytest_configure(config) -> None:  # noqa: ANN001  (pytest plugin hook)
    _switch_default_solver()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="path of a cvxpylayers git checkout")
    ap.add_argument("--baseline", action="store_true", help="run without the switch (diffcp)")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    a = ap.parse_args()
    files = [str(a.checkout / f) for f in TEST_FILES]
    shims, extra = (), []
    if not all(Path(f).is_file() for f in files):
        files = [str(a.checkout / f) for f in OLD_TEST_FILES]
        shims, extra = OLD_SHIMS, list(OLD_ARGS)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        print(f"not a cvxpylayers checkout, missing: {missing}", file=sys.stderr)
        return 2
    return run_suite(a.checkout, files, Path(__file__).stem, "cvxpylayers_tests", a.baseline,
                     [*extra, *a.pytest_args], shims)

if __name__ == "__main__":
    raise SystemExit(main())
