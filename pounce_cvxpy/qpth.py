"""qpth's `QPFunction`, solved by POUNCE and differentiated through the core's KKT adjoint.

An OptNet/qpth script changes only its import line::

    from pounce_cvxpy.qpth import QPFunction        # was: from qpth.qp import QPFunction

    z = QPFunction(verbose=0)(Q, p, G, h, A, b)     # (B, nz)

Problem (qpth's form)::

    minimize 1/2 z'Qz + p'z   s.t.  G z <= h,  A z = b

Each argument is batched, (B, ...), or shared, without the batch dimension (broadcast over
the batch); an empty `A` and `b` (`torch.Tensor()`) mean no equality rows, an empty `G`
and `h` no inequality rows. The output is (B, nz) (B = 1 when nothing is batched), in the
inputs' common dtype (float32 in, float32 out) and on their device.

As qpth, gradients reach every argument. They are the gradients of the loss: a shared
argument's gradient is the SUM over the batch (qpth's own backward returns the batch
MEAN for a shared argument, 1/B of that). Q enters as its symmetric part (Q + Q')/2.

Everything numeric is the core's: the QP becomes a `pounce_kkt.ConicStructure` with dense
patterns (rows: A's as the zero cone, then G's as the nonneg cone), cached per shape, and
`pounce_kkt.conic_solve` solves it and differentiates it.
"""

from __future__ import annotations

import dataclasses
import enum
import weakref
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from pounce_kkt import ConicStructure, SolveOptions, conic_solve
from pounce_kkt.torch_threads import serial_torch
from pounce_kkt.user_warnings import warn_user
from pounce_kkt.validation import check_finite

__all__ = ["QPFunction", "QPSolvers", "qp_structure"]


class QPSolvers(enum.Enum):
    """qpth's solver choice; accepted for compatibility, the solve is always POUNCE's."""

    PDIPM_BATCHED = 1
    CVXPY = 2


# qpth's defaults; a different value of these is reported (once per QPFunction) as ignored.
_QPTH_DEFAULTS = {"verbose": 0, "notImprovedLim": 3, "maxIter": 20}
_IGNORED_WHY = {
    "verbose": "POUNCE's batch solve prints nothing",
    "notImprovedLim": "it is a stopping rule of qpth's own interior-point loop",
    "maxIter": "it counts qpth's iterations; pass options=SolveOptions(max_iter=...)",
    "solver": "the forward is always POUNCE's interior-point method",
}


@lru_cache(maxsize=64)
def qp_structure(nz: int, neq: int, nineq: int) -> ConicStructure:
    """The core's structure of a dense QP: P is nz x nz, the rows are [A; G] (dense)."""
    m = neq + nineq
    dense_cols = (np.arange(nz + 1, dtype=np.int64) * m, np.tile(np.arange(m), nz))
    full_p = (np.arange(nz + 1, dtype=np.int64) * nz, np.tile(np.arange(nz), nz))
    return ConicStructure(nz, m, *dense_cols, {"z": neq, "l": nineq}, *full_p)


def _csc_values(M: torch.Tensor) -> torch.Tensor:
    """(..., r, c) dense matrices as (..., r*c) values in CSC (column-major) order."""
    return M.transpose(-1, -2).reshape(*M.shape[:-2], -1)


def _checked(name: str, t: torch.Tensor, ndim: int, shape: tuple[int, ...]) -> bool:
    """Raise unless `t` is `shape` (shared) or (B, *shape) (batched); True if batched."""
    if tuple(t.shape[-len(shape):]) != shape or t.dim() not in (ndim - 1, ndim):
        raise ValueError(f"{name} must have shape {shape} or (B, {', '.join(map(str, shape))}); "
                         f"got {tuple(t.shape)}")
    check_finite(name, t.reshape(t.shape[0], -1) if t.dim() == ndim else t.reshape(-1))
    return t.dim() == ndim


def QPFunction(eps: float = 1e-12, verbose: int = 0, notImprovedLim: int = 3,  # noqa: N802
               maxIter: int = 20, solver: object = QPSolvers.PDIPM_BATCHED,  # noqa: N803
               check_Q_spd: bool = True, *, options: SolveOptions | None = None  # noqa: N803
               ) -> Callable[..., torch.Tensor]:
    """qpth's `QPFunction(...)`: returns `f(Q, p, G, h, A, b) -> z` (see the module doc).

    eps: an upper bound on POUNCE's tol (like SCS's eps in pounce_cvxpy.diffcp: a tighter
    value tightens the solve, a looser one keeps the accurate default). verbose,
    notImprovedLim, maxIter and solver are accepted and ignored (a non-default value warns
    once). check_Q_spd: as qpth, raise unless every Q is positive definite (POUNCE also
    solves positive semidefinite Q: pass False). options: the core's SolveOptions (tol,
    max_iter, backward, on_failure, ...).
    """
    given = {"verbose": verbose, "notImprovedLim": notImprovedLim, "maxIter": maxIter}
    ignored = [k for k, v in given.items() if v != _QPTH_DEFAULTS[k]]
    if getattr(solver, "name", solver) != QPSolvers.PDIPM_BATCHED.name:
        ignored.append("solver")
    if ignored:
        warn_user("pounce qpth.QPFunction ignores " + "; ".join(
            f"{k}={given.get(k, solver)!r} ({_IGNORED_WHY[k]})" for k in ignored))
    options = options or SolveOptions()
    if options.tol is None:
        cap = float(eps) if options.tol_cap is None else min(float(eps), options.tol_cap)
        options = dataclasses.replace(options, tol_cap=cap)

    checked_q = _CheckedQ() if check_Q_spd else None

    def qp_function(Q, p, G, h, A, b) -> torch.Tensor:  # noqa: N803 (qpth's names)
        return _solve(options, checked_q, Q, p, G, h, A, b)

    return qp_function


def _solve(options: SolveOptions, checked_q: _CheckedQ | None,  # noqa: N803
           Q, p, G, h, A, b) -> torch.Tensor:  # noqa: N803
    ts = [torch.as_tensor(t) for t in (Q, p, G, h, A, b)]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    Q, p, G, h, A, b = (t.to(dtype) for t in ts)
    nz = p.shape[-1]
    neq = A.shape[-2] if A.numel() else 0
    nineq = G.shape[-2] if G.numel() else 0
    if neq + nineq == 0:
        raise ValueError("QPFunction needs at least one constraint row (G, h or A, b)")
    batched = {"Q": _checked("Q", Q, 3, (nz, nz)), "p": _checked("p", p, 2, (nz,))}
    rows = []
    for name_M, M, name_v, v, k in (("A", A, "b", b, neq), ("G", G, "h", h, nineq)):
        if k:
            batched[name_M] = _checked(name_M, M, 3, (k, nz))
            batched[name_v] = _checked(name_v, v, 2, (k,))
            rows.append((M, v))
        elif v.numel():
            raise ValueError(f"{name_v} has {v.numel()} entries but {name_M} is empty")
    sizes = {k: t.shape[0] for k, t in zip("QpGhAb", (Q, p, G, h, A, b), strict=True)
             if batched.get(k)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes disagree: {sizes}")
    B = next(iter(sizes.values()), None)

    def stacked(parts: list[torch.Tensor], shared_dim: int) -> torch.Tensor:
        if len(parts) == 1:  # conic_solve broadcasts a shared block itself
            return parts[0]
        if B is None or all(t.dim() == shared_dim for t in parts):
            return torch.cat(parts, dim=-2 if shared_dim == 2 else -1)
        parts = [t.expand(B, *t.shape) if t.dim() == shared_dim else t for t in parts]
        return torch.cat(parts, dim=-2 if shared_dim == 2 else -1)

    with serial_torch():
        rows_M = stacked([M for M, _ in rows], 2)
        rows_v = stacked([v for _, v in rows], 1)
        if checked_q is not None:
            checked_q.check(Q)
        # Q's row-major values are the CSC values of Q' on the full pattern; the core solves
        # with P_eff = (P + P')/2, Q's symmetric part either way, and its gradient on the
        # full pattern is symmetric, so it is Q's too (no symmetrised copy of Q is formed).
        sol = conic_solve(qp_structure(nz, neq, nineq), Q.reshape(*Q.shape[:-2], nz * nz), p,
                          _csc_values(rows_M), rows_v, options)
    return sol.x if sol.x.dim() == 2 else sol.x.unsqueeze(0)


class _CheckedQ:
    """qpth's positive-definiteness check of Q, done again only for a new or modified Q.

    Keeps a weak reference to the last Q that passed and its version counter (bumped by
    every in-place change), so the same tensor, unchanged, is not factored again on the
    next call (a fixed Q of an OptNet layer); any other Q is checked.
    """

    def __init__(self) -> None:
        self._ref: weakref.ref | None = None
        self._version = -1

    def check(self, Q: torch.Tensor) -> None:  # noqa: N803
        try:
            version = Q._version
        except RuntimeError:  # an inference tensor has no version counter: always check
            version = None
        if version is not None and self._ref is not None and self._ref() is Q \
                and self._version == version:
            return
        _check_positive_definite(Q)
        if version is not None:
            self._ref, self._version = weakref.ref(Q), version


def _check_positive_definite(Q: torch.Tensor) -> None:
    """qpth's check: every Q (symmetric part) positive definite; names the batch item."""
    with torch.no_grad():
        Qb = Q.detach().to(torch.float64)
        Qb = Qb.unsqueeze(0) if Qb.dim() == 2 else Qb
        _, info = torch.linalg.cholesky_ex(0.5 * (Qb + Qb.transpose(-1, -2)))
    bad = info.nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"Q is not positive definite at batch index {bad[0]}"
                         + (f" (items {bad[:10]})" if len(bad) > 1 else "")
                         + "; POUNCE solves positive semidefinite Q: pass check_Q_spd=False")
