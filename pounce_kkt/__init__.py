"""Shared core of pounce-layers: native POUNCE solves and the Torch KKT backward.

Public API (docs/design.md, "Core API"): :class:`ConeDims`, :class:`ConicStructure`,
:class:`SolveOptions`, :func:`conic_solve` (differentiable), :func:`conic_forward` /
:func:`conic_vjp` (the same forward and backward as plain functions), :func:`conic_jvp`
(the forward-mode derivative on the same KKT solve), :class:`SolverError`,
:class:`SolveInfo` (per-item statuses and residuals), and the warnings
:class:`InaccurateSolutionWarning` (items solved only to "optimal_inaccurate") and
:class:`DegenerateGradientWarning` (minimum-norm gradients at non-unique solutions).
"""

from pounce_kkt import _native
from pounce_kkt.accuracy import SolveInfo
from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.conic import (
    ConicSolution,
    ConicState,
    SolveOptions,
    conic_forward,
    conic_solve,
    conic_vjp,
)
from pounce_kkt.conic_jvp import conic_jvp
from pounce_kkt.errors import (
    SOLVED_STATUSES,
    DegenerateGradientWarning,
    InaccurateSolutionWarning,
    SolverError,
)
from pounce_kkt.structure import ConicStructure

__all__ = [
    "SOLVED_STATUSES",
    "ConeDims",
    "ConicSolution",
    "ConicState",
    "ConicStructure",
    "DegenerateGradientWarning",
    "InaccurateSolutionWarning",
    "SolveInfo",
    "SolveOptions",
    "SolverError",
    "_native",
    "conic_forward",
    "conic_jvp",
    "conic_solve",
    "conic_vjp",
]
