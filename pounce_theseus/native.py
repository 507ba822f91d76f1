"""Where the native NLP solve comes from.

``pounce_kkt._native.nlp_solve`` exists when the crate is built with its ``nlp`` feature
(the default; it brings pounce-nlp and pounce-restoration in as direct dependencies, see
rust/py/src/nlp.rs). A build without it has no NLP solve, and PounceOptimizer says so.
"""

from __future__ import annotations

from collections.abc import Callable

from pounce_kkt import _native as _core

__all__ = ["MISSING_REASON", "nlp_solve", "require_nlp_solve"]

MISSING_REASON = (
    "pounce_kkt._native was built without the `nlp` feature (rust/Cargo.toml), so it has "
    "no nlp_solve; rebuild with default features (scripts/dev setup)"
)

nlp_solve: Callable | None = getattr(_core, "nlp_solve", None) if getattr(
    _core, "HAVE_NLP", False
) else None


def require_nlp_solve() -> Callable:
    """The native ``nlp_solve``, or a RuntimeError saying how to get it."""
    if nlp_solve is None:
        raise RuntimeError(MISSING_REASON)
    return nlp_solve
