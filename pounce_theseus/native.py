"""Where the native NLP solve comes from.

``pounce_kkt._native`` has ``NlpProblem`` (one NLP layout checked once: sizes, bounds, the
Jacobian and Hessian patterns, the options; then ``solve(problem, x0, track_iterates,
options)`` from values only) and ``nlp_solve`` (one call on a layout built for it) when the
crate is built with its ``nlp`` feature (the default; it brings pounce-nlp and
pounce-restoration in as direct dependencies, see rust/py/src/nlp.rs). A build without it
has no NLP solve, and PounceOptimizer says so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pounce_kkt import _native as _core

__all__ = ["MISSING_REASON", "NlpProblem", "nlp_problem", "nlp_solve", "require_nlp_solve"]

MISSING_REASON = (
    "pounce_kkt._native was built without the `nlp` feature (rust/Cargo.toml), so it has "
    "no nlp_solve; rebuild with default features (scripts/dev setup)"
)

_HAVE_NLP = bool(getattr(_core, "HAVE_NLP", False))
nlp_solve: Callable | None = getattr(_core, "nlp_solve", None) if _HAVE_NLP else None
NlpProblem: type | None = getattr(_core, "NlpProblem", None) if _HAVE_NLP else None


def require_nlp_solve() -> Callable:
    """The native ``nlp_solve``, or a RuntimeError saying how to get it."""
    if nlp_solve is None:
        raise RuntimeError(MISSING_REASON)
    return nlp_solve


def nlp_problem(x_l: np.ndarray, x_u: np.ndarray, g_l: np.ndarray, g_u: np.ndarray,
                jac_rows: np.ndarray, jac_cols: np.ndarray, hess_rows: np.ndarray,
                hess_cols: np.ndarray, options: dict | None = None):
    """A native ``NlpProblem`` of one layout (n = len(x_l), m = len(g_l); float64 bounds,
    int64 0-based patterns, the Hessian's lower triangle), or a RuntimeError saying how to
    get one. Build it once per layout and call its ``solve(problem, x0, track_iterates,
    options)`` per solve."""
    if NlpProblem is None:
        raise RuntimeError(MISSING_REASON)
    return NlpProblem(len(x_l), len(g_l), x_l, x_u, g_l, g_u, jac_rows, jac_cols, hess_rows,
                      hess_cols, options)
