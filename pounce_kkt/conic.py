"""Differentiable batched conic solves: native POUNCE forward, KKT-adjoint backward.

Problem (docs/design.md): minimize 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K, dual y.
Values travel batch-first, (B, nnz) on the patterns of a :class:`ConicStructure`; (nnz,)
unbatched inputs broadcast over the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pounce_kkt import kept_newton, staged_newton
from pounce_kkt.accuracy import (
    ON_INACCURATE,
    SolveInfo,
    enforce_accuracy,
    kkt_residuals,
    residual_column,
)
from pounce_kkt.active_set import limit_scaling
from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.dense_kkt import dense_kkt_vjp
from pounce_kkt.errors import SOLVED_STATUSES, DegenerateGradientWarning, SolverError
from pounce_kkt.refine import REFINE_OPTIMAL, KktSolve, native_steps, refine
from pounce_kkt.singular_kkt import exploded
from pounce_kkt.structure import ConicStructure
from pounce_kkt.torch_threads import serial_torch
from pounce_kkt.user_warnings import warn_user
from pounce_kkt.validation import (
    batch_size,
    check_finite,
    check_last_dim,
    check_real,
    scaling_hint,
)

BACKWARDS = ("auto", "dense", "sparse")
ENGINES = ("auto", "ipm", "active_set")
# Default tolerances (SolveOptions.tol=None), measured in docs/design.md "Default tolerance".
TOL_CONIC = 1e-8
TOL_QP = 1e-8
ON_FAILURE = ("raise", "nan")


@dataclass(frozen=True)
class SolveOptions:
    """Options of the forward solve and the backward.

    tol, max_iter, time_limit (seconds for the whole batch call, None = none): the native
    solve; items not started by then get status "time_limit". tol=None
    (the default) picks the tol per problem class (docs/design.md, "Default tolerance"):
    TOL_QP when every row is a zero or nonneg row, TOL_CONIC with any SOC, PSD, exp or power
    cone; both 1e-8, because solution refinement (``refine``) takes the solve from there to
    ~1e-15 and the active-set backward's gradients are then as accurate as from a 1e-12
    solve (measured per class in docs/design.md, "Default tolerance").
    backward: "dense" (Torch, differentiable again), "sparse" (native sparse LDL'),
    or "auto": dense when n + m <= dense_max_dim or when the backward itself is being
    differentiated (create_graph=True), sparse otherwise. The default dense_max_dim = 0 takes
    the native sparse adjoint whenever no double backward is asked for: it was 1.2-4.7x
    faster than the batched dense LU on every size measured, n + m = 10 to 50, B = 1 to
    1024, QPs, SOCPs, PSD and exp cones (docs/profile-layers.md).
    on_failure: "raise" raises SolverError for the first unsolved item; "nan" returns NaN
    for unsolved items (zero gradient) and leaves the others untouched.
    on_inaccurate: what an "optimal_inaccurate" item (solved short of tol; its solution and
    gradient are used) does: "warn" (an InaccurateSolutionWarning naming the items and their
    KKT residuals), "raise" (SolverError) or "ignore" (pounce_kkt/accuracy.py).
    tol_cap: an upper bound on the per-class tol (used only when tol is None). A foreign
    solver's tolerance (SCS's eps, Clarabel's tol_gap_*, ...) arrives here: a tighter one
    tightens the solve, a looser one (SCS's 1e-5 is a first-order method's setting) never
    loosens it below what accurate gradients need.
    refine: Newton refinement of the solved items (pounce_kkt/refine.py: skipped where the
    residual is already small; never returns a worse point); False returns POUNCE's point.
    engine: the forward's engine. With a SOC, PSD, exp or power cone, "auto" and
    "active_set" start each batch item from its previous answer on this structure, refined
    by Newton on the new values and taken when it meets the tol (pounce_kkt/kept_newton.py;
    the interior-point method solves the others); "ipm" always runs the interior-point
    method. Without a kept answer (the first call, "ipm", or an item its kept answer did not
    solve), with refine=True, no warm start and no time_limit, the interior-point method on
    curved cones first runs only a short stage whose point Newton steps finish, and the
    full solve takes the items they leave short of the tol (pounce_kkt/staged_newton.py).
    For problems with zero and nonneg rows only: "ipm"; "active_set": each batch
    item starts from its previous answer on this structure's native handle (its active rows
    kept, or moved to the new ones by a few primal-dual active-set steps, one KKT solve
    each, when the result is optimal; the backward reuses the last factor; else POUNCE's
    parametric active-set method through the item's session, warm from its previous solve);
    an item it does not solve to tol goes to the IPM; or "auto" (the default, n + m <= 400):
    the kept active rows for an item whose values moved by at most 2% since its previous
    solve on this structure, and for one that moved more unless its recent kept checks
    failed (a back-off: at most one check in 16 calls then); for an item with no previous
    answer (a first call, a new handle) the same steps from no rows, under the same
    back-off; at most 10 steps (and at most max_iter), each counted as an iteration; the
    session only when warm and near; the IPM otherwise (rust/core/src/options.rs, measured
    in docs/native-core.md).
    SolveInfo.engine names what answered each item.
    """

    tol: float | None = None
    max_iter: int = 200
    time_limit: float | None = None
    backward: str = "auto"
    dense_max_dim: int = 0
    on_failure: str = "raise"
    on_inaccurate: str = "warn"
    tol_cap: float | None = None
    refine: bool = True
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.tol is not None and not (self.tol > 0 and np.isfinite(self.tol)):
            raise ValueError(f"tol must be positive and finite (or None), got {self.tol}")
        if self.tol_cap is not None and not (self.tol_cap > 0 and np.isfinite(self.tol_cap)):
            raise ValueError(f"tol_cap must be positive and finite (or None), got {self.tol_cap}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.time_limit is not None and not self.time_limit >= 0:
            raise ValueError(f"time_limit must be >= 0 or None, got {self.time_limit}")
        if self.backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}, got {self.backward!r}")
        if self.on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {self.on_failure!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.on_inaccurate not in ON_INACCURATE:
            raise ValueError(f"on_inaccurate must be one of {ON_INACCURATE}, "
                             f"got {self.on_inaccurate!r}")

    def tol_for(self, cones: ConeDims) -> float:
        """The tol the native solve gets for a problem with these cones."""
        if self.tol is not None:
            return float(self.tol)
        curved = cones.q or cones.s or cones.ep or cones.p
        tol = TOL_CONIC if curved else TOL_QP
        return tol if self.tol_cap is None else min(tol, float(self.tol_cap))

    def backward_path(self, dim: int, create_graph: bool) -> str:
        """"dense" or "sparse" for a KKT system of order `dim` (= n + m)."""
        if self.backward != "auto":
            if self.backward == "sparse" and create_graph:
                raise RuntimeError("backward='sparse' cannot be differentiated again "
                                   "(create_graph=True); use backward='dense' or 'auto'")
            return self.backward
        if create_graph or dim <= self.dense_max_dim:
            return "dense"
        return "sparse"


@dataclass
class ConicSolution:
    """x (B, n), y (B, m), s (B, m) in the input dtype/device (unbatched in, unbatched out);
    status: list of B status strings; iterations (B,) int64; solve_time (B,) float64 seconds;
    residual (B,) float64: the relative KKT residual of "optimal_inaccurate" items, NaN for
    the others (pounce_kkt/accuracy.py); engine: B names of the engine that answered each
    item (SolveInfo.engine)."""

    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    status: list[str]
    iterations: torch.Tensor
    solve_time: torch.Tensor
    residual: torch.Tensor | None = None
    engine: list[str] | None = None

    @property
    def info(self) -> SolveInfo:
        """The per-item outcome (statuses, iterations, times, residuals) as a SolveInfo."""
        residual = self.residual
        if residual is None:
            residual = torch.full((len(self.status),), float("nan"), dtype=torch.float64)
        return SolveInfo(self.status, self.iterations, self.solve_time, residual, self.engine)


@dataclass
class ConicState:
    """What the backward needs, in float64 on the CPU, batch-first (B, ...)."""

    structure: ConicStructure
    options: SolveOptions
    P: torch.Tensor | None
    A: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    ok: torch.Tensor
    status: list[str]
    # Shapes/dtype/device of the caller's P, q, A, b, so gradients come back like them.
    like: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ inputs


def _prepare(structure: ConicStructure, P: Any, q: Any, A: Any, b: Any
             ) -> tuple[dict[str, torch.Tensor | None], int, bool, dict[str, Any]]:
    """Check values, broadcast to a common batch, cast to CPU float64 (differentiably)."""
    raw = {"P": P, "q": q, "A": A, "b": b}
    ts = {k: (None if v is None else torch.as_tensor(v)) for k, v in raw.items()}
    if structure.has_p and ts["P"] is None:
        raise ValueError("the structure has a P pattern: pass P values")
    if not structure.has_p and ts["P"] is not None:
        raise ValueError("P values given but the structure has no P pattern")
    sizes = {"P": structure.nnz_p, "q": structure.n, "A": structure.nnz_a, "b": structure.m}
    for k, t in ts.items():
        check_real(k, t)
        check_last_dim(k, t, sizes[k])
        if t is not None and not (t.is_floating_point()):
            ts[k] = t = t.to(torch.float64)
        check_finite(k, t)
    B = batch_size(ts)
    batched = B is not None
    B = B or 1
    like = {k: (None if t is None else (tuple(t.shape), t.dtype, t.device)) for k, t in ts.items()}
    out = {}
    for k, t in ts.items():
        if t is None:
            out[k] = None
            continue
        t = t.to(device="cpu", dtype=torch.float64)
        if t.dim() == 1:
            t = t.unsqueeze(0).expand(B, -1)
        elif t.shape[0] != B:
            t = t.expand(B, -1)
        if not t.requires_grad and not t.is_contiguous():
            # Once, in numpy (see validation.all_finite), rather than in every native call.
            t = torch.from_numpy(np.ascontiguousarray(t.numpy()))
        out[k] = t
    return out, B, batched, like


def _warm_arrays(warm_start: Any, B: int, n: int, m: int) -> tuple[Any, Any, Any]:
    if warm_start is None:
        return None, None, None
    if isinstance(warm_start, ConicSolution):
        parts = (warm_start.x, warm_start.y, warm_start.s)
    elif isinstance(warm_start, dict):
        parts = (warm_start.get("x"), warm_start.get("y"), warm_start.get("s"))
    else:
        parts = tuple(warm_start)
        if len(parts) != 3:
            raise ValueError("warm_start must be (x, y, s), a dict or a ConicSolution")
    if parts[0] is None or parts[1] is None:
        raise ValueError("warm_start needs x and y (s is optional)")
    out = []
    for name, v, k in zip(("warm x", "warm y", "warm s"), parts, (n, m, m), strict=True):
        if v is None:
            out.append(None)
            continue
        t = torch.as_tensor(v).detach()
        check_real(name, t)
        t = t.to("cpu", torch.float64)
        check_last_dim(name, t, k)
        t = t.expand(B, k) if t.dim() == 1 else t
        if t.shape[0] != B:
            raise ValueError(f"{name} has batch {t.shape[0]}, expected {B}")
        out.append(np.ascontiguousarray(t.numpy()))
    return tuple(out)


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t.detach().numpy())


# ------------------------------------------------------------------------------ forward


# The environment switches of the native backends, for comparisons (unset in normal use):
# read here, in one place, and passed to the native side, which reads no environment.
_BACKEND_ENV = (
    ("kkt_backend", "POUNCE_LAYERS_KKT_BACKEND", str),  # "dense" | "condensed" | "feral" | "auto"
    ("feral_scaling", "POUNCE_FERAL_SCALING", str),  # "auto" | "infnorm" | "mc64" | "none"
    ("feral_refine", "POUNCE_FERAL_REFINE", lambda v: v.lower() in ("1", "on", "true", "yes")),
    ("feral_min_par_flops", "POUNCE_FERAL_MIN_PAR_FLOPS", lambda v: int(float(v))),
    ("block_condense", "POUNCE_LAYERS_BLOCK_CONDENSE",
     lambda v: v.lower() in ("1", "on", "true", "yes")),
)


def native_backend_options() -> dict[str, Any] | None:
    """The backend overrides set in the environment, as the native `backend` dict (None when
    none is set): POUNCE_LAYERS_KKT_BACKEND forces the dense, condensed or feral KKT solver over
    the size/fill policy, POUNCE_FERAL_SCALING / POUNCE_FERAL_REFINE replace every engine's
    feral scaling / refinement pass, POUNCE_FERAL_MIN_PAR_FLOPS sets feral's threshold for
    threads (every native factorization runs serial), POUNCE_LAYERS_BLOCK_CONDENSE=off keeps
    the adjoint's K with cone blocks whole (rust/core/src/block_condensed.rs)."""
    out = {key: parse(os.environ[var]) for key, var, parse in _BACKEND_ENV
           if os.environ.get(var)}
    return out or None


def _native_solve(st: ConicStructure, options: SolveOptions, P: np.ndarray | None,
                  A: np.ndarray, q: np.ndarray, b: np.ndarray,
                  warm: tuple[Any, Any, Any] = (None, None, None),
                  stage_max_iter: int | None = None) -> dict[str, Any]:
    """The native batch solve of float64 C-contiguous (B, k) value arrays on the structure's
    native handle: the dict of x, y, s, status, iterations, solve_time (rust/py/src/problem.rs).
    stage_max_iter: the interior-point stage only, that many iterations at most
    (pounce_kkt/staged_newton.py)."""
    return st.native.solve(
        P, A, q, b, tol=options.tol_for(st.cones), max_iter=int(options.max_iter),
        time_limit=None if options.time_limit is None else float(options.time_limit),
        warm_x=warm[0], warm_y=warm[1], warm_s=warm[2], backend=native_backend_options(),
        engine=options.engine, stage_max_iter=stage_max_iter,
    )


def _native_adjoint(st: ConicStructure, P: np.ndarray | None, A: np.ndarray,
                    h_diag: np.ndarray | None, h_blocks: np.ndarray | None, x: np.ndarray,
                    y: np.ndarray, gx: np.ndarray, gy: np.ndarray, gs: np.ndarray,
                    ok: np.ndarray, s: np.ndarray | None = None) -> dict[str, Any]:
    """The native sparse KKT adjoint of float64 C-contiguous (B, k) arrays (ok: (B,) bool) on
    the structure's native handle: the dict of dP, dq, dA, db, solved
    (rust/core/src/kkt_adjoint.rs). h_diag = h_blocks = None with s given: H at the snapped
    pairs of (s, y), computed natively (rust/core/src/cone_snap.rs)."""
    return st.native.adjoint(P, A, h_diag, h_blocks, x, y, gx, gy, gs, ok,
                             backend=native_backend_options(), s=s)


def _solve_native(structure: ConicStructure, options: SolveOptions,
                  v: dict[str, torch.Tensor | None], warm: tuple[Any, Any, Any],
                  staged: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             list[str], torch.Tensor, torch.Tensor, list[str]]:
    """Native batch solve; applies on_failure. Returns x, y, s, ok, status, iters, times and
    the engine names. With curved cones, items may be answered from their kept answers
    (pounce_kkt/kept_newton.py), and the others by a short interior-point stage finished by
    Newton steps (pounce_kkt/staged_newton.py; `staged=False`: the full solve only)."""
    if kept_newton.applies(structure, options):
        return kept_newton.solve(structure, options, v, warm, _solve_native,
                                 lambda P, A: _refine_kkt_solve(structure, options, P, A))
    if staged and staged_newton.applies(structure, options, warm, v["q"].shape[0]):
        return staged_newton.solve(
            structure, options, v,
            lambda sub, k: _native_solve(structure, options, _np(sub["P"]), _np(sub["A"]),
                                         _np(sub["q"]), _np(sub["b"]), stage_max_iter=k),
            lambda sub: _solve_native(structure, options, sub, (None, None, None), False),
            lambda P, A: _refine_kkt_solve(structure, options, P, A))
    out = _native_solve(structure, options, _np(v["P"]), _np(v["A"]), _np(v["q"]), _np(v["b"]),
                        warm)
    status = list(out["status"])
    nonconvex = [i for i, st_ in enumerate(status) if st_ == "nonconvex"]
    if nonconvex:
        # Not a solver failure but a wrong input: raised whatever on_failure says.
        more = f" (items {nonconvex[:10]})" if len(nonconvex) > 1 else ""
        raise ValueError(
            f"P is not positive semidefinite at batch index {nonconvex[0]}{more}: the problem "
            "is not convex (status 'nonconvex'; P_eff = (P + P')/2 has an eigenvalue below "
            "-1e-9 * max|P_eff|)"
        )
    ok_np = np.fromiter((st_ in SOLVED_STATUSES for st_ in status), dtype=bool, count=len(status))
    ok = torch.from_numpy(ok_np)
    if options.on_failure == "raise" and not ok_np.all():
        first = int((~ok).nonzero()[0, 0])
        item = {k: None if t is None else t[first] for k, t in v.items()}
        raise SolverError(first, status[first], status, hint=scaling_hint(item, first))
    x, y, s = (np.array(out[k], dtype=np.float64) for k in ("x", "y", "s"))  # copies
    if not ok_np.all():
        for t in (x, y, s):
            t[~ok_np] = np.nan
    x, y, s = (torch.from_numpy(t) for t in (x, y, s))
    iters = torch.as_tensor(np.asarray(out["iterations"]), dtype=torch.int64)
    times = torch.as_tensor(np.asarray(out["solve_time"]), dtype=torch.float64)
    x, y, s, status = _refined(structure, options, v, x, y, s, ok, status)
    return x, y, s, ok, status, iters, times, list(out["engine"])


def _refined(structure: ConicStructure, options: SolveOptions,
             v: dict[str, torch.Tensor | None], x: torch.Tensor, y: torch.Tensor,
             s: torch.Tensor, ok: torch.Tensor, status: list[str]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """x, y, s after solution refinement (pounce_kkt/refine.py), by Newton steps through the
    backward's own KKT solve; an "optimal_inaccurate" item refined below REFINE_OPTIMAL is
    "optimal"."""
    if not options.refine:
        return x, y, s, status
    P, A = (None if v["P"] is None else v["P"].detach()), v["A"].detach()
    solve = _refine_kkt_solve(structure, options, P, A)
    try:
        r = refine(structure, P, v["q"].detach(), A, v["b"].detach(), x, y, s, ok, solve)
    except RuntimeError:  # a K the sparse path could not factor: keep the solve's point
        return x, y, s, status
    status = ["optimal" if st_ == "optimal_inaccurate" and bool(r.after[i] <= REFINE_OPTIMAL)
              else st_ for i, st_ in enumerate(status)]
    return r.x, r.y, r.s, status


def _refine_kkt_solve(structure: ConicStructure, options: SolveOptions,
                      P: torch.Tensor | None, A: torch.Tensor) -> KktSolve:
    """Refinement's KKT solve (pounce_kkt/refine.py `KktSolve`) on the values P, A, through
    the backward's path."""
    path = options.backward_path(structure.n + structure.m, create_graph=False)

    def solve(xc, yc, sc, rx, ry, items):
        # The KKT solve of the stepping items alone; the others get zeros.
        idx = items.nonzero().flatten()
        _, dq, _, db = _kkt_vjp(structure, path, None if P is None else P[idx], A[idx],
                                xc[idx], yc[idx], sc[idx], items[idx], rx[idx], ry[idx], None)
        return (xc.new_zeros(xc.shape).index_copy(0, idx, -dq),
                yc.new_zeros(yc.shape).index_copy(0, idx, db))

    if native_steps(path):
        # The whole refinement natively: the same steps through this same KKT solve.
        def steps(P_, A_, q, b, x, y, s, ok, **settings):
            return structure.native.newton_steps(P_, A_, q, b, x, y, s, ok,
                                                 backend=native_backend_options(), **settings)

        solve.native_steps = steps
    return solve


def _checked_info(structure: ConicStructure, options: SolveOptions,
                  v: dict[str, torch.Tensor | None], x: torch.Tensor, y: torch.Tensor,
                  s: torch.Tensor, status: list[str], iters: torch.Tensor, times: torch.Tensor
                  ) -> SolveInfo:
    """The solve's SolveInfo (residuals of its inaccurate items), options.on_inaccurate applied."""

    def residuals(items: list[int]) -> np.ndarray:
        return kkt_residuals(structure, _np(v["P"]), _np(v["q"]), _np(v["A"]), _np(v["b"]),
                             _np(x), _np(y), _np(s), items)

    info = SolveInfo(status, iters, times, residual_column(status, residuals))
    enforce_accuracy(info.status, info.residual, options.on_inaccurate)
    return info


def _restore(t: torch.Tensor, like: tuple | None, batched: bool) -> torch.Tensor:
    """A float64 CPU (B, k) result in the dtype/device of `like`, unbatched if the call was."""
    dtype = like[1] if like is not None else torch.float64
    device = like[2] if like is not None else torch.device("cpu")
    t = t.to(device=device, dtype=dtype)
    return t if batched else t[0]


def _owned(t: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """`t`, copied if it shares its tensor object or memory with the state's `saved`.

    The state and the solution never share a tensor: an adapter's autograd Function that
    returns the solution and keeps the state on its ctx (cvxpylayers does) would otherwise
    form the cycle output -> grad_fn -> ctx -> state -> output, which Python's gc cannot see
    through autograd nodes, so every step's graph would stay alive. It also keeps in-place
    edits of the solution out of the gradient.
    """
    if t is saved or (t.device == saved.device and t.untyped_storage().data_ptr()
                      == saved.untyped_storage().data_ptr()):
        return t.clone()
    return t


def _output_like(like: dict[str, Any]) -> tuple:
    """dtype/device for outputs: those of q (always given), the floating input."""
    return like["q"]


def conic_forward(structure: ConicStructure, P: Any, q: Any, A: Any, b: Any,
                  options: SolveOptions | None = None, warm_start: Any = None
                  ) -> tuple[ConicSolution, ConicState]:
    """Solve without recording a graph; returns the solution and the state for conic_vjp.

    For adapters whose own framework owns the autograd Function (cvxpylayers'
    `derivative_torch_batch`). Inputs as for :func:`conic_solve`.
    """
    options = options or SolveOptions()
    with torch.no_grad():
        v, B, batched, like = _prepare(structure, P, q, A, b)
        warm = _warm_arrays(warm_start, B, structure.n, structure.m)
        x, y, s, ok, status, iters, times, engine = _solve_native(structure, options, v, warm)
        info = _checked_info(structure, options, v, x, y, s, status, iters, times)
    out = _output_like(like)
    sol = ConicSolution(*(_owned(_restore(t, out, batched), t) for t in (x, y, s)),
                        status, iters, times, info.residual, engine)
    state = ConicState(structure, options, v["P"], v["A"], x, y, s, ok, status,
                       {**like, "batched": batched})
    return sol, state


# ------------------------------------------------------------------------------ backward


def _kkt_vjp(structure: ConicStructure, path: str, P: torch.Tensor | None, A: torch.Tensor,
             x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, ok: torch.Tensor,
             gx: torch.Tensor | None, gy: torch.Tensor | None, gs: torch.Tensor | None,
             singular: list[int] | None = None):
    """(dP, dq, dA, db), float64 (B, ...), by the dense Torch or the native sparse adjoint.

    Items whose K is singular (a non-unique solution) get the minimum-norm solution
    (pounce_kkt/singular_kkt.py) on either path; their indices go to `singular` if given.
    """
    if path == "dense":
        return dense_kkt_vjp(structure, P, A, x, y, s, ok, gx, gy, gs, singular=singular)
    grads = _sparse_kkt_vjp(structure, P, A, x, y, s, ok, gx, gy, gs)
    return _recheck_exploded(structure, grads, P, A, x, y, s, ok, (gx, gy, gs), singular)


def _recheck_exploded(structure: ConicStructure, grads: tuple, P: torch.Tensor | None,
                      A: torch.Tensor, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor,
                      ok: torch.Tensor, upstream: tuple, singular: list[int] | None) -> tuple:
    """The sparse path's gradients, with items that grew past GROWTH_LIMIT |g| solved again
    on the dense K, which detects a singular K and takes its minimum-norm solution there."""
    dP, dq, dA, db = grads
    B = x.shape[0]
    # In numpy (CPU float64 views of the native results and the upstream gradients).
    scale = np.zeros(B)
    for g in upstream:
        if g is not None and g.numel():  # (B, 0): an unconstrained problem's gy, gs
            g64 = g.detach().to(device="cpu", dtype=torch.float64).reshape(B, -1).numpy()
            scale = np.maximum(scale, np.abs(g64).max(1))
    big = exploded(np.concatenate([dq.numpy(), db.numpy()], axis=1), scale[:, None])
    big &= ok.numpy()
    if not big.any():
        return grads
    idx = torch.from_numpy(np.flatnonzero(big))
    sub = lambda t: None if t is None else t[idx]  # noqa: E731
    found: list[int] = []
    again = dense_kkt_vjp(structure, sub(P), A[idx], x[idx], y[idx], s[idx], ok[idx],
                          *(sub(g) for g in upstream), singular=found)
    for old, new in zip(grads, again, strict=True):
        if old is not None:
            old[idx] = new.to(old.dtype)
    if singular is not None:
        singular.extend(int(idx[k]) for k in found)
    return grads


def _warn_singular(items: list[int]) -> None:
    """Say which items got the minimum-norm gradient of a singular KKT system."""
    if items:
        items = sorted(set(items))
        warn_user(f"the KKT system of batch item(s) {items[:10]}"
                  + (f" and {len(items) - 10} more" if len(items) > 10 else "")
                  + " is singular: the solution is not unique (e.g. an LP optimal along an edge, "
                  "P singular on the optimal face, redundant active constraints), so its "
                  "derivative does not exist; their gradients are the minimum-norm solution "
                  "pinv(K) rhs of the adjoint system (pounce_kkt/singular_kkt.py)",
                  DegenerateGradientWarning)


def _sparse_kkt_vjp(structure, P, A, x, y, s, ok, gx, gy, gs):
    B, n, m = x.shape[0], structure.n, structure.m
    ok_np = np.ascontiguousarray(ok.numpy())
    every = bool(ok_np.all())  # then no item's values need zeroing
    okc = ok[:, None]
    with torch.no_grad():
        xs, ys, ss = (t if every else torch.where(okc, t, 0.0) for t in (x, y, s))
        g = [np.zeros((B, k)) if t is None
             else _np(t.detach().to(torch.float64) if every
                      else torch.where(okc, t.detach().to(torch.float64), 0.0))
             for t, k in ((gx, n), (gy, m), (gs, m))]
        if structure.cones.n_diag < m:
            # H at the snapped pairs, computed natively (active_set.limit_scaling's H).
            out = _native_adjoint(structure, _np(P), _np(A), None, None, _np(xs), _np(ys),
                                  *g, ok_np, s=_np(ss))
        else:
            h_diag, h_blocks = limit_scaling(ss, ys, structure.cones)
            out = _native_adjoint(structure, _np(P), _np(A), _np(h_diag), _np(h_blocks),
                                  _np(xs), _np(ys), *g, ok_np)
    unsolved = np.flatnonzero(ok_np & ~np.asarray(out["solved"], dtype=bool)).tolist()
    if unsolved:
        # Never hand back the zeros the native side leaves for such an item as a gradient.
        raise RuntimeError(f"the sparse KKT adjoint could not factor K for batch item "
                           f"{unsolved[0]} (items {unsolved[:10]}); try backward='dense'")
    dP = _from_np(out["dP"]) if P is not None else None
    return dP, _from_np(out["dq"]), _from_np(out["dA"]), _from_np(out["db"])


def _from_np(a: Any) -> torch.Tensor | None:
    """A native result array as a tensor sharing its memory (the array is not used again)."""
    return None if a is None else torch.from_numpy(np.asarray(a, np.float64))


def conic_vjp(state: ConicState, gx: Any = None, gy: Any = None, gs: Any = None
              ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dP, dq, dA, db) of <gx, x> + <gy, y> + <gs, s> at a conic_forward state.

    Upstream gradients are (B, n)/(B, m) (or unbatched, like the solution); None means zero.
    Results match the caller's P, q, A, b: same dtype, device and shape (inputs that were
    broadcast get the sum over the batch). Unsolved items contribute zero.
    """
    st = state.structure
    B = state.x.shape[0]

    def up(name, g, k):
        if g is None:
            return None
        name = f"upstream gradient {name}"
        t = torch.as_tensor(g).detach()
        check_real(name, t)
        t = t.to("cpu", torch.float64)
        check_last_dim(name, t, k)
        if t.dim() == 2 and t.shape[0] != B:
            raise ValueError(f"{name} has batch {t.shape[0]}, the solution has batch {B}")
        check_finite(name, t)
        return t.unsqueeze(0).expand(B, k) if t.dim() == 1 else t

    path = state.options.backward_path(st.n + st.m, create_graph=False)
    singular: list[int] = []
    with torch.no_grad():
        grads = _kkt_vjp(st, path, state.P, state.A, state.x, state.y, state.s, state.ok,
                         up("gx", gx, st.n), up("gy", gy, st.m), up("gs", gs, st.m), singular)
    _warn_singular(singular)
    return tuple(None if g is None else _reduce_like(g, state.like[k])
                 for g, k in zip(grads, ("P", "q", "A", "b"), strict=True))


def _reduce_like(g: torch.Tensor, like: tuple | None) -> torch.Tensor | None:
    if like is None:
        return None
    shape, dtype, device = like
    if len(shape) == 1:
        g = g.sum(0)
    elif shape[0] == 1 and g.shape[0] != 1:
        g = g.sum(0, keepdim=True)
    return g.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------ autograd


class _ConicSolveFunction(torch.autograd.Function):
    """x, y, s = solve(P, q, A, b) with the KKT-adjoint backward.

    Backward (docs/design.md): with K = [[P_eff, A'], [A, -H]] and H the cone scaling at
    (s, y), solve K [u; v] = [gx; gy - H gs]; then
        grad_q = -u,  grad_b = v,  grad_A[i,j] = -(y_i u_j + v_i x_j),
        grad_P[i,j] = -(u_i x_j + u_j x_i) / 2,
    zero for unsolved items. The dense path is written in Torch ops on the saved inputs
    and outputs, so it is itself differentiable (double backward).
    """

    @staticmethod
    def forward(ctx, structure, options, warm, info, P, q, A, b):
        v = {"P": P, "q": q, "A": A, "b": b}
        x, y, s, ok, status, iters, times, engine = _solve_native(structure, options, v, warm)
        info.update(status=status, iterations=iters, solve_time=times, ok=ok, engine=engine)
        ctx.structure, ctx.options, ctx.ok, ctx.has_p = structure, options, ok, P is not None
        ctx.save_for_backward(P if P is not None else torch.empty(0), A, x, y, s)
        return x, y, s

    @staticmethod
    def backward(ctx, gx, gy, gs):
        P, A, x, y, s = ctx.saved_tensors
        P = P if ctx.has_p else None
        st = ctx.structure
        path = ctx.options.backward_path(st.n + st.m, create_graph=torch.is_grad_enabled())
        singular: list[int] = []
        with serial_torch():
            dP, dq, dA, db = _kkt_vjp(st, path, P, A, x, y, s, ctx.ok, gx, gy, gs, singular)
        _warn_singular(singular)
        return None, None, None, None, dP, dq, dA, db


def conic_solve(structure: ConicStructure, P: Any, q: Any, A: Any, b: Any,
                options: SolveOptions | None = None, warm_start: Any = None) -> ConicSolution:
    """Solve a batch of conic programs, differentiably in the P, q, A, b values.

    P (B, nnzP) or None (structure without P), q (B, n), A (B, nnzA), b (B, m); any of them
    may be unbatched ((k,), broadcast). float32 in gives float32 out and any device in gives
    the same device out; the solve and the backward run in float64 on the CPU.
    warm_start: (x, y, s), a dict with those keys, or a previous ConicSolution.
    Raises SolverError for unsolved items unless options.on_failure == "nan".
    """
    options = options or SolveOptions()
    v, B, batched, like = _prepare(structure, P, q, A, b)
    warm = _warm_arrays(warm_start, B, structure.n, structure.m)
    info: dict[str, Any] = {}
    x, y, s = _ConicSolveFunction.apply(structure, options, warm, info,
                                        v["P"], v["q"], v["A"], v["b"])
    checked = _checked_info(structure, options, v, x, y, s, info["status"],
                            info["iterations"], info["solve_time"])
    out = _output_like(like)
    return ConicSolution(_restore(x, out, batched), _restore(y, out, batched),
                         _restore(s, out, batched), info["status"], info["iterations"],
                         info["solve_time"], checked.residual, info["engine"])


__all__ = ["ConicSolution", "ConicState", "SolveOptions", "conic_forward", "conic_solve",
           "conic_vjp"]
