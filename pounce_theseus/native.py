"""Where the native NLP solve comes from.

``pounce_kkt._native.nlp_solve`` exists when the crate is built with its ``nlp`` feature
(pounce-nlp and pounce-restoration as direct dependencies; see rust/src/nlp.rs). Until
the project manifest enables it, a development build of the same Rust source can be
placed next to this file as ``_nlp_native`` (``pounce_theseus/build_nlp_native.sh``).
"""

from __future__ import annotations

from collections.abc import Callable

from pounce_kkt import _native as _core

__all__ = ["MISSING_REASON", "nlp_solve", "require_nlp_solve"]

MISSING_REASON = (
    "pounce_kkt._native was built without the `nlp` feature (pounce-nlp and "
    "pounce-restoration are not direct dependencies of rust/Cargo.toml), and no "
    "development build pounce_theseus/_nlp_native is present; run "
    "pounce_theseus/build_nlp_native.sh"
)

nlp_solve: Callable | None
if getattr(_core, "HAVE_NLP", False):
    nlp_solve = _core.nlp_solve
else:
    try:
        from pounce_theseus._nlp_native import nlp_solve  # type: ignore[no-redef]
    except ImportError:
        nlp_solve = None


def require_nlp_solve() -> Callable:
    """The native ``nlp_solve``, or a RuntimeError saying how to build it."""
    if nlp_solve is None:
        raise RuntimeError(MISSING_REASON)
    return nlp_solve
