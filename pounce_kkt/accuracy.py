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
from pounce_kkt.structure import ConicStructure
from pounce_kkt.user_warnings import warn_user

ON_INACCURATE = ("warn", "raise", "ignore")
INACCURATE = "optimal_inaccurate"


@dataclass(frozen=True)
class SolveInfo:
    """Per-item outcome of one batch solve.

    status: B status strings; iterations (B,) int64; solve_time (B,) float64 seconds;
    residual (B,) float64: the relative KKT residual (module docstring) of every item that
    ended "optimal_inaccurate", NaN for the others (an "optimal" item met `tol`).
    """

    status: list[str]
    iterations: torch.Tensor
    solve_time: torch.Tensor
    residual: torch.Tensor

    @property
    def inaccurate(self) -> list[int]:
        """Indices of the items that ended "optimal_inaccurate"."""
        return [i for i, st in enumerate(self.status) if st == INACCURATE]

    @property
    def failed(self) -> list[int]:
        """Indices of the items that were not solved (no solution is used for them)."""
        return [i for i, st in enumerate(self.status) if st not in SOLVED_STATUSES]


def _matvec(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, v: np.ndarray,
            size: int) -> np.ndarray:
    """(M v) for one item's M with `values` at (rows, cols), M having `size` rows."""
    return np.bincount(rows, weights=values * v[cols], minlength=size)


def kkt_residuals(structure: ConicStructure, P: np.ndarray | None, q: np.ndarray,
                  A: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                  items: list[int]) -> np.ndarray:
    """Relative KKT residual (module docstring) of each of `items`; arrays are (B, .) float64.

    P holds the values of the full symmetric pattern; P_eff = (P + P')/2 as in the solve.
    """
    n, m = structure.n, structure.m
    ar, ac = structure.a_rows.numpy(), structure.a_cols.numpy()
    out = np.empty(len(items))
    for k, i in enumerate(items):
        xi, yi, si = x[i], y[i], s[i]
        ax = _matvec(A[i], ar, ac, xi, m)
        aty = _matvec(A[i], ac, ar, yi, n)
        px = np.zeros(n)
        if P is not None:
            pr, pc = structure.p_rows.numpy(), structure.p_cols.numpy()
            px = 0.5 * (_matvec(P[i], pr, pc, xi, n) + _matvec(P[i], pc, pr, xi, n))
        inf = lambda v: float(np.abs(v).max(initial=0.0))  # noqa: E731
        primal = inf(ax + si - b[i]) / (1 + max(inf(ax), inf(si), inf(b[i])))
        dual = inf(px + q[i] + aty) / (1 + max(inf(px), inf(q[i]), inf(aty)))
        xpx = float(xi @ px)
        p_obj, d_obj = 0.5 * xpx + float(q[i] @ xi), -0.5 * xpx - float(b[i] @ yi)
        gap = abs(p_obj - d_obj) / (1 + max(abs(p_obj), abs(d_obj)))
        out[k] = max(primal, dual, gap)
    return out


def residual_column(status: list[str], compute) -> torch.Tensor:
    """(B,) residuals: `compute(items)` for the "optimal_inaccurate" items, NaN elsewhere."""
    res = torch.full((len(status),), float("nan"), dtype=torch.float64)
    items = [i for i, st in enumerate(status) if st == INACCURATE]
    if items:
        res[items] = torch.from_numpy(np.asarray(compute(items), dtype=np.float64))
    return res


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
