"""How accurately each batch item was solved, and what to do when it was only "inaccurate".

POUNCE ends an item `optimal_inaccurate` when it stopped short of `tol` but close to a
solution (docs/design.md). Such an item's solution and gradient are used, so they must not
pass silently: `SolveOptions.on_inaccurate` (and the adapters' `on_inaccurate` option)
chooses

- "warn" (default): an `InaccurateSolutionWarning` at the caller's line naming the items and
  their relative KKT residuals;
- "raise": a `SolverError` naming the first such item, its status and residual;
- "ignore": nothing.

The residual of an item is the largest of the relative primal, dual and gap residuals of
the problem ``min 1/2 x'Px + q'x  s.t.  A x + s = b, s in K`` (docs/design.md)::

    primal = |A x + s - b|_inf     / (1 + max(|A x|_inf, |s|_inf, |b|_inf))
    dual   = |P x + q + A'y|_inf   / (1 + max(|P x|_inf, |q|_inf, |A'y|_inf))
    gap    = |x'Px + q'x + b'y|    / (1 + max(|1/2 x'Px + q'x|, |1/2 x'Px + b'y|))

(cone membership of s and y is not measured: POUNCE keeps its iterates inside the cones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pounce_kkt.errors import SOLVED_STATUSES, InaccurateSolutionWarning, SolverError
from pounce_kkt.refine import KktOperators, kkt_residual
from pounce_kkt.structure import ConicStructure
from pounce_kkt.user_warnings import warn_user

ON_INACCURATE = ("warn", "raise", "ignore")
INACCURATE = "optimal_inaccurate"


@dataclass(frozen=True)
class SolveInfo:
    """Per-item outcome of one batch solve.

    status: B status strings; iterations (B,) int64; solve_time (B,) float64 seconds;
    residual (B,) float64: the relative KKT residual (module docstring) of every item that
    ended "optimal_inaccurate", NaN for the others (an "optimal" item met `tol`);
    engine: B names of what produced each item's answer ("ipm", "active_set",
    "active_set_warm": warm from the item's previous solve, "none": not solved;
    `SolveOptions.engine`), None when not recorded.
    """

    status: list[str]
    iterations: torch.Tensor
    solve_time: torch.Tensor
    residual: torch.Tensor
    engine: list[str] | None = None

    @property
    def inaccurate(self) -> list[int]:
        """Indices of the items that ended "optimal_inaccurate"."""
        return [i for i, st in enumerate(self.status) if st == INACCURATE]

    @property
    def failed(self) -> list[int]:
        """Indices of the items that were not solved (no solution is used for them)."""
        return [i for i, st in enumerate(self.status) if st not in SOLVED_STATUSES]


def kkt_residuals(structure: ConicStructure, P: np.ndarray | None, q: np.ndarray,
                  A: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                  items: list[int]) -> np.ndarray:
    """Relative KKT residual (module docstring) of each of `items`; arrays are (B, .) float64.

    P holds the values of the full symmetric pattern; P_eff = (P + P')/2 as in the solve.
    The primal and dual terms are refine.kkt_residual's; the gap is added here.
    """
    idx = torch.as_tensor(items, dtype=torch.int64)

    def take(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.asarray(a, np.float64))[idx]

    Pi, qi, Ai, bi, xi, yi, si = map(take, (P, q, A, b, x, y, s))
    ops = KktOperators(structure, Pi, Ai)
    px = ops.p(xi)
    primal_dual = kkt_residual(ops, qi, bi, xi, yi, si, px=px)[0]
    xpx = (xi * px).sum(1)
    p_obj, d_obj = 0.5 * xpx + (qi * xi).sum(1), -0.5 * xpx - (bi * yi).sum(1)
    gap = (p_obj - d_obj).abs() / (1 + torch.maximum(p_obj.abs(), d_obj.abs()))
    return torch.maximum(primal_dual, gap).numpy()


def residual_column(status: list[str], compute) -> torch.Tensor:
    """(B,) residuals: `compute(items)` for the "optimal_inaccurate" items, NaN elsewhere."""
    res = np.full(len(status), np.nan)
    items = [i for i, st in enumerate(status) if st == INACCURATE]
    if items:
        res[items] = np.asarray(compute(items), dtype=np.float64)
    return torch.from_numpy(res)


def enforce_accuracy(status: list[str], residual: Any, policy: str) -> None:
    """Apply the on_inaccurate `policy` ("warn", "raise" or "ignore") to a batch.

    status: one string per item; residual: (B,) relative KKT residuals (read at the
    "optimal_inaccurate" items). The warning is attributed to the user's line
    (pounce_kkt.user_warnings).
    """
    if policy not in ON_INACCURATE:
        raise ValueError(f"on_inaccurate must be one of {ON_INACCURATE}, got {policy!r}")
    items = [i for i, st in enumerate(status) if st == INACCURATE]
    if not items or policy == "ignore":
        return
    res = np.asarray(residual, dtype=np.float64)
    listed = ", ".join(f"{i} (residual {res[i]:.1e})" for i in items[:10])
    more = f" and {len(items) - 10} more" if len(items) > 10 else ""
    detail = (f"status {INACCURATE!r}: POUNCE stopped short of tol for batch item(s) "
              f"{listed}{more}; their solutions and gradients may be off")
    if policy == "raise":
        raise SolverError(items[0], INACCURATE, status,
                          message=f"{detail}. on_inaccurate='warn' or 'ignore' uses them anyway")
    warn_user(f"{detail}. Per-item statuses are in the solution's status (core, diffcp API) "
              "or pounce_cvxpy.last_solve_info(layer); on_inaccurate='raise' makes this an "
              "error, 'ignore' silences it", InaccurateSolutionWarning)


__all__ = ["INACCURATE", "ON_INACCURATE", "SolveInfo", "enforce_accuracy", "kkt_residuals",
           "residual_column"]
