"""diffcp 1.1's API, solved by POUNCE and differentiated through the KKT adjoint.

A diffcp script changes only its import line::

    from pounce_cvxpy import diffcp          # was: import diffcp

    x, y, s, D, DT = diffcp.solve_and_derivative(A, b, c, cone_dict)
    dx, dy, ds = D(dA, db, dc)               # derivative (forward mode)
    dA, db, dc = DT(dx, dy, ds)              # adjoint; dA on A's sparsity pattern

Problem (SCS/diffcp form)::

    minimize 1/2 x'Px + c'x   s.t.  A x + s = b,  s in K;   dual y in K*,  Px + A'y + c = 0

Conventions, and where they differ from diffcp:

| diffcp                                   | here                                            |
|------------------------------------------|-------------------------------------------------|
| cone keys z (or f), l, q, s, ep, ed      | the same, plus p (power cones, differentiated   |
| (cvxpy/SCS add p, pnd, bu, bl, cs)       | too; a negative alpha is SCS's dual power cone);|
|                                          | ed and dual power cones are solved as POUNCE's  |
|                                          | primal cones on mapped rows (diffcp_data.py);   |
|                                          | empty entries of any key are accepted, a        |
|                                          | non-empty pnd, bu/bl or cs raises ValueError    |
| P only in the lpgd modes                 | P in every mode; SCS's convention: only the     |
|                                          | upper triangle is read (entries below the       |
|                                          | diagonal are ignored and get zero gradient)     |
| mode: dense/lsqr/lsmr/lpgd*              | accepted and checked, then ignored: D and DT    |
|                                          | are the exact KKT derivative in every mode (no  |
|                                          | LPGD smoothing; derivative_kwargs are ignored)  |
| solve_method: SCS/ECOS/Clarabel          | ignored: POUNCE solves it: its IPM, or for      |
|                                          | LP/QP the active set (SolveOptions.engine)      |
| kwargs to SCS/ECOS/Clarabel (eps,        | translated or ignored, one warning per call     |
| max_iters, tol_gap_abs, feastol, ...)    | naming the new keys, see solver_args.py; a      |
|                                          | tolerance caps our tol, never loosens it        |
| n_jobs_forward / n_jobs_backward         | ignored: a batch is one native call per shared  |
|                                          | sparsity structure, run on the native pool      |
| diffcp.utils.scs_data_from_cvxpy_problem| diffcp.utils here has it (and get_random_like); |
|                                          | a quadratic objective arrives as SOC rows, not  |
|                                          | as an SCS P that diffcp's version drops         |
| A's explicit zeros eliminated in place   | inputs are never modified; explicit zeros stay  |
|                                          | in A's pattern (and in dA)                      |
| SolverError for a failed solve           | SolverError, a subclass of diffcp.SolverError   |
|                                          | (when diffcp is installed) and of               |
|                                          | pounce_kkt.SolverError, naming item and status  |

Everything numeric goes through the shared core: pounce_kkt.conic_forward for the solve,
pounce_kkt.conic_jvp for D and pounce_kkt.conic_vjp for DT (docs/design.md, "The KKT
adjoint"). This module only translates layouts: SCS's upper-triangle P (and dP) to the full
symmetric pattern, sparse dA/dP to values on the solved problem's stored patterns (D
differentiates along those: a nonzero of dA outside A's pattern raises ValueError), and the
batch into one core call per shared structure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import pounce_kkt
from pounce_cvxpy import diffcp_utils as utils
from pounce_cvxpy.diffcp_data import ProgramData, group_by_structure
from pounce_cvxpy.solver_args import PounceArgs, resolve
from pounce_cvxpy.solver_interface import LayerSolverError
from pounce_kkt import ConicState, conic_forward, conic_jvp, conic_vjp
from pounce_kkt.accuracy import enforce_accuracy
from pounce_kkt.user_warnings import warn_user
from pounce_kkt.validation import scaling_hint

ZERO, POS, SOC, PSD, EXP, EXP_DUAL, POWER = "z", "l", "q", "s", "ep", "ed", "p"
MODES = ("dense", "lsqr", "lsmr", "lpgd", "lpgd_right", "lpgd_left")


# One error class for the whole package: a pounce_kkt.SolverError that is also a
# diffcp.SolverError (when diffcp is installed), so `except diffcp.SolverError` still works.
SolverError = LayerSolverError

__all__ = ["EXP", "EXP_DUAL", "MODES", "POS", "POWER", "PSD", "SOC", "ZERO", "SolverError",
           "solve_and_derivative", "solve_and_derivative_batch", "solve_only",
           "solve_only_batch", "utils"]


# ------------------------------------------------------------------------------ solving


@dataclass
class _Group:
    """Problems sharing one structure, solved by one core call; `items` are batch indices."""

    items: list[int]
    programs: list[ProgramData]
    state: ConicState
    x: np.ndarray  # (B, n)
    y: np.ndarray  # (B, m)
    s: np.ndarray  # (B, m)

    def vjp(self, gx: np.ndarray, gy: np.ndarray, gs: np.ndarray | None):
        """The core's (dP_full, dq, dA, db) as (B, .) float64 arrays (dP None without P)."""
        return self._core(conic_vjp, gx, gy, gs)

    def jvp(self, dP: np.ndarray | None, dq: np.ndarray, dA: np.ndarray, db: np.ndarray):
        """The core's (dx, dy, ds) as (B, .) float64 arrays (NaN rows for unsolved items)."""
        return self._core(conic_jvp, dP, dq, dA, db)

    def _core(self, fn: Callable, *args: Any) -> tuple:
        try:
            out = fn(self.state, *args)
        except RuntimeError as err:  # the core numbers items within this group
            raise RuntimeError(f"{err} [core batch item k is diffcp batch item items[k], "
                               f"items = {self.items}]") from err
        return tuple(None if t is None else t.numpy() for t in out)


def _solve(programs: list[ProgramData], warm_starts: Sequence[Any] | None,
           kwargs: dict[str, Any]) -> list[_Group]:
    """Solve every program, one core call per shared structure; raise SolverError on failure.

    Every group is solved with on_failure="nan" so that one failed item is reported with the
    statuses of the whole batch and never disturbs the others; the caller's on_failure
    ("raise" unless raise_on_error=False was passed) is applied afterwards.
    """
    kwargs = dict(kwargs)
    kwargs.pop("derivative_kwargs", None)  # LPGD's tau/rho: the derivative here is exact
    args = resolve(PounceArgs(), kwargs)
    on_failure = args.on_failure
    # on_inaccurate is applied once over the whole batch, so it names diffcp's item indices.
    options = resolve(args, {"on_failure": "nan", "on_inaccurate": "ignore"}).solve_options()
    groups, statuses, residual = [], [""] * len(programs), np.full(len(programs), np.nan)
    for items in group_by_structure(programs):
        progs = [programs[i] for i in items]
        P = None if progs[0].P is None else np.stack([p.p_full_values() for p in progs])
        warm = _stack_warm([warm_starts[i] for i in items], progs) if warm_starts else None
        sol, state = conic_forward(
            progs[0].structure(), P, np.stack([p.c for p in progs]),
            np.stack([p.A.data for p in progs]), np.stack([p.b for p in progs]), options, warm)
        for i, st in zip(items, sol.status, strict=True):
            statuses[i] = st
        residual[items] = sol.residual.numpy()
        groups.append(_Group(items, progs, state, sol.x.numpy(), sol.y.numpy(), sol.s.numpy()))
    policy = args.solve_options().on_inaccurate
    enforce_accuracy(statuses, residual, policy)
    if "optimal_inaccurate" in statuses and policy == "warn":
        warn_user("Solved/Inaccurate.")  # diffcp's own warning text
    failed = [i for i, st in enumerate(statuses) if st not in pounce_kkt.SOLVED_STATUSES]
    if failed and on_failure == "raise":
        bad = programs[failed[0]]
        hint = scaling_hint({"A": bad.A.data, "b": bad.b, "c": bad.c,
                             "P": None if bad.P is None else bad.P.data}, failed[0])
        raise SolverError(failed[0], statuses[failed[0]], statuses, hint=hint)
    return groups


def _stack_warm(warm: list[Any], programs: list[ProgramData]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Stacked (x, y, s) in the solver's rows if every item of the group has a warm start,
    else None."""
    if any(w is None for w in warm):
        return None
    as_arrays = [[np.asarray(v, dtype=np.float64) for v in w[:3]] for w in warm]
    return (np.stack([x for x, _, _ in as_arrays]),
            np.stack([p.dual_to_solver_rows(y) for p, (_, y, _) in zip(programs, as_arrays,
                                                                        strict=True)]),
            np.stack([p.to_solver_rows(s) for p, (_, _, s) in zip(programs, as_arrays,
                                                                   strict=True)]))


def _solution(groups: list[_Group], count: int) -> tuple[list, list, list]:
    xs, ys, ss = [None] * count, [None] * count, [None] * count
    for g in groups:
        for k, i in enumerate(g.items):
            prog = g.programs[k]
            xs[i], ys[i], ss[i] = g.x[k].copy(), prog.y_to_user(g.y[k].copy()), \
                prog.s_to_user(g.s[k].copy())
    return xs, ys, ss


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Unsupported mode {mode!r}; the supported modes are {MODES} "
                         "(all give the exact KKT derivative here)")


def _with_choices(kwargs: dict[str, Any], mode: str = "lsqr", solve_method: str | None = "SCS"
                  ) -> dict[str, Any]:
    """kwargs plus a non-default mode / solve_method, so the options warning reports them
    (both are accepted and ignored: the derivative is exact, the solver POUNCE)."""
    out = dict(kwargs)
    if mode != "lsqr":
        out["mode"] = mode
    if solve_method not in (None, "SCS"):
        out["solve_method"] = solve_method
    return out


def _programs(As, bs, cs, cone_dicts, Ps) -> list[ProgramData]:
    count = len(As)
    for name, seq in (("bs", bs), ("cs", cs), ("cone_dicts", cone_dicts)):
        if len(seq) != count:
            raise ValueError(f"{name} has {len(seq)} items but As has {count}")
    Ps = [None] * count if Ps is None else Ps
    if len(Ps) != count:
        raise ValueError(f"Ps has {len(Ps)} items but As has {count}")
    return [ProgramData.from_user(A, b, c, cd, P, index=i if count > 1 else None)
            for i, (A, b, c, cd, P) in enumerate(zip(As, bs, cs, cone_dicts, Ps, strict=True))]


# ------------------------------------------------------------------------------ derivatives


def _derivative(groups: list[_Group], count: int) -> Callable:
    """D_batch(dAs, dbs, dcs, dPs=None) -> dxs, dys, dss (see the module docstring)."""

    def D_batch(dAs, dbs, dcs, dPs=None, **_lpgd_kwargs):
        dxs, dys, dss = [None] * count, [None] * count, [None] * count
        for g in groups:
            where = [f" (batch item {i})" if count > 1 else "" for i in g.items]
            dirs = [g.programs[k].direction(g.state.structure, dAs[i], dbs[i], dcs[i],
                                            None if dPs is None else dPs[i], where[k])
                    for k, i in enumerate(g.items)]
            dP = None
            if g.programs[0].P is not None:
                dP = np.stack([d[0] for d in dirs])
            dx, dy, ds = g.jvp(dP, *(np.stack([d[j] for d in dirs]) for j in (1, 2, 3)))
            for k, i in enumerate(g.items):
                prog = g.programs[k]
                dxs[i], dys[i], dss[i] = dx[k].copy(), prog.y_to_user(dy[k].copy()), \
                    prog.s_to_user(ds[k].copy())
        return dxs, dys, dss

    return D_batch


def _adjoint(groups: list[_Group], count: int) -> Callable:
    """DT_batch(dxs, dys, dss, return_dP=False) -> dAs, dbs, dcs[, dPs]."""

    def DT_batch(dxs, dys, dss, return_dP=False, **_lpgd_kwargs):
        dAs, dbs, dcs, dPs = [None] * count, [None] * count, [None] * count, [None] * count
        for g in groups:
            if return_dP and g.programs[0].P is None:
                raise ValueError("return_dP=True needs the problem to have been given P")
            gx = np.stack([_vec(dxs[i], g.x.shape[1], "dx") for i in g.items])
            progs = g.programs
            gy = np.stack([p.to_solver_rows(_vec(dys[i], g.y.shape[1], "dy"))
                           for p, i in zip(progs, g.items, strict=True)])
            gs = np.stack([p.dual_to_solver_rows(_vec(dss[i], g.s.shape[1], "ds"))
                           for p, i in zip(progs, g.items, strict=True)])
            dP, dq, dA, db = g.vjp(gx, gy, gs)
            for k, i in enumerate(g.items):
                prog = g.programs[k]
                dAs[i], dbs[i], dcs[i] = prog.a_gradient(dA[k]), prog.y_to_user(db[k]), dq[k]
                if return_dP:
                    dPs[i] = prog.p_gradient(dP[k])
        return (dAs, dbs, dcs, dPs) if return_dP else (dAs, dbs, dcs)

    return DT_batch


def _vec(v: Any, size: int, name: str) -> np.ndarray:
    if v is None:
        return np.zeros(size)
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size != size:
        raise ValueError(f"{name} must have {size} entries, got {arr.size}")
    return arr


# ------------------------------------------------------------------------------ public API


def solve_and_derivative(A: Any, b: Any, c: Any, cone_dict: dict, warm_start: Any = None,
                         mode: str = "lsqr", solve_method: str | None = "SCS", P: Any = None,
                         **kwargs: Any):
    """Solve one cone program; return x, y, s, D, DT as diffcp does.

    D(dA, db, dc, dP=None) -> dx, dy, ds applies the derivative; DT(dx, dy, ds,
    return_dP=False) -> dA, db, dc[, dP] its adjoint, with dA (and dP) CSC on the pattern of
    A (of P). `mode` and `solve_method` are accepted and ignored (see the module docstring);
    kwargs are translated as in pounce_cvxpy/solver_args.py. Raises SolverError if the
    problem is not solved.
    """
    _check_mode(mode)
    programs = [ProgramData.from_user(A, b, c, cone_dict, P)]
    groups = _solve(programs, None if warm_start is None else [warm_start],
                    _with_choices(kwargs, mode, solve_method))
    (x,), (y,), (s,) = _solution(groups, 1)
    D_batch, DT_batch = _derivative(groups, 1), _adjoint(groups, 1)

    def D(dA, db, dc, dP=None, **lpgd_kwargs):
        """dx, dy, ds: the derivative of the solution applied to (dA, db, dc[, dP])."""
        dxs, dys, dss = D_batch([dA], [db], [dc], None if dP is None else [dP])
        return dxs[0], dys[0], dss[0]

    def DT(dx, dy, ds, return_dP=False, **lpgd_kwargs):
        """dA, db, dc[, dP]: the adjoint of the derivative applied to (dx, dy, ds)."""
        return tuple(v[0] for v in DT_batch([dx], [dy], [ds], return_dP=return_dP))

    return x, y, s, D, DT


def solve_and_derivative_batch(As: Sequence, bs: Sequence, cs: Sequence, cone_dicts: Sequence,
                               n_jobs_forward: int = -1, n_jobs_backward: int = -1,
                               mode: str = "lsqr", warm_starts: Sequence | None = None,
                               Ps: Sequence | None = None, **kwargs: Any):
    """Solve a batch; return lists xs, ys, ss and D_batch, DT_batch as diffcp does.

    D_batch(dAs, dbs, dcs, dPs=None) -> dxs, dys, dss; DT_batch(dxs, dys, dss,
    return_dP=False) -> dAs, dbs, dcs[, dPs]. Problems that share A's pattern, P's pattern
    and the cones are solved (and differentiated) in one native call; n_jobs_* are ignored.
    """
    _check_mode(mode)
    programs = _programs(As, bs, cs, cone_dicts, Ps)
    groups = _solve(programs, warm_starts, _with_choices(kwargs, mode))
    xs, ys, ss = _solution(groups, len(programs))
    return xs, ys, ss, _derivative(groups, len(programs)), _adjoint(groups, len(programs))


def solve_only(A: Any, b: Any, c: Any, cone_dict: dict, warm_start: Any = None,
               solve_method: str | None = "SCS", P: Any = None, **kwargs: Any):
    """Solve one cone program; return x, y, s (no derivative work is set up)."""
    programs = [ProgramData.from_user(A, b, c, cone_dict, P)]
    groups = _solve(programs, None if warm_start is None else [warm_start],
                    _with_choices(kwargs, solve_method=solve_method))
    (x,), (y,), (s,) = _solution(groups, 1)
    return x, y, s


def solve_only_batch(As: Sequence, bs: Sequence, cs: Sequence, cone_dicts: Sequence,
                     n_jobs_forward: int = -1, warm_starts: Sequence | None = None,
                     Ps: Sequence | None = None, **kwargs: Any):
    """Solve a batch; return lists xs, ys, ss."""
    programs = _programs(As, bs, cs, cone_dicts, Ps)
    return _solution(_solve(programs, warm_starts, kwargs), len(programs))
