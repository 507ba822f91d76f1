"""The Theseus objective as one NLP per batch element, evaluated for the whole batch at once.

Element ``b``'s variables are its tangent coordinates ``delta_b`` (``n`` of them, see
:class:`TangentChart`), its objective ``f_b`` Theseus' error metric (``1/2 |weighted
error|^2`` by default), its constraints the :class:`Constraint` rows and its bounds the
Vector bounds expressed on ``delta_b``. The elements share no variable. A native solve
covers one element or a block-diagonal group of them (element-major); :meth:`BatchNlp.serve`
answers the callbacks of every running solve from ONE vectorised evaluation of the
objective at the stacked point ``delta`` (B, n), cached so that objective, gradient,
constraints, Jacobian and Hessian at the same point share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pounce_kkt.nlp_kkt import INF

from .chart import TangentChart
from .compat import error_metric, error_row_blocks, is_least_squares, weighted_error
from .constraints import Bound, Constraint
from .hessian import (
    BatchedVjp,
    GaussNewtonHessian,
    HessianLayout,
    gauss_newton_values,
)
from .linearization import CostLinearization, LinearizedPoint
from .structure import GaussNewtonPattern, HessianPattern, JacobianPattern

__all__ = ["BatchNlp", "Evaluation", "ProblemStructure", "Request"]
# Largest per-element dimension whose dense Hessian block is checked for positive
# definiteness (a batched Cholesky of (B, n, n)).
HYBRID_MAX_DIM = 200
# Relative decrease of an element's objective per iterate above which its Hessian block
# stays Gauss-Newton (Fletcher and Xu's 0.2).
GN_PROGRESS = 0.2
# ... or its gradient's largest entry by at least this fraction of itself (Gauss-Newton
# converging linearly at rate 1/4 or better: on robust pose graphs it gains 8x per iterate,
# where the exact Hessian's inertia correction gains no more).
GN_GRADIENT_PROGRESS = 0.75
# Largest difference, relative to max(1, |g|_inf), between the linearisation's gradient and
# autograd's at the start for the linearisation to be used (SE2's closed forms differ from
# autograd's by ~1e-11 relative on pose graphs).
LINEARIZATION_RTOL = 1e-7
# A solve to Ipopt's tol takes autograd gradients where the linearisation's gradient
# differed from autograd's at the start by more than this fraction of tol (absolute).
LINEARIZATION_GRADIENT_TOL_FRACTION = 0.1
# In the polish (Gauss-Newton plus the robust rank-one curvature, past Theseus' test), an
# element whose gradient's largest entry fell by less than this factor over one iterate
# takes the exact Hessian blocks from its next iterate on: on robust pose graphs the polish
# gains 100-1000x per iterate, but an element with large residual curvature converges
# linearly (SE2 200 poses, B = 8: one element 2.6x per iterate, 15 iterates where Newton
# takes 3; docs/theseus-scale.md section 12).
POLISH_SLOW_RATE = 0.1


@dataclass
class Evaluation:
    """The objective (and constraints) evaluated at one point ``delta``, with the graph
    kept for the derivatives. ``least_squares``: the metric is Theseus' default
    ``f = 1/2 |e|^2``, so the gradient is taken as ``J' e_hat`` with ``e_hat`` a detached
    leaf copy of ``e`` (see :mod:`pounce_theseus.hessian`)."""

    delta: torch.Tensor  # (B, n), requires grad
    e: torch.Tensor  # (B, m_e) weighted errors
    f: torch.Tensor  # (B,) error metric
    c: torch.Tensor | None  # (B, m_c) constraint values
    vjp: BatchedVjp  # the problem's seeded-product engine
    least_squares: bool = False
    grad_f: torch.Tensor | None = None  # (B, n)
    grad_has_graph: bool = False  # grad_f keeps its graph (for Hessian products)
    e_hat: torch.Tensor | None = None  # the leaf grad_f = J' e_hat is taken at
    _products: tuple | None = field(default=None, repr=False)

    def objective_gradient(self, create_graph: bool = True) -> torch.Tensor:
        """grad of sum_b f_b w.r.t. delta, computed once; with ``create_graph`` its graph
        is kept, so the Hessian at the same point needs only the seeded products."""
        if self.grad_f is None or (create_graph and not self.grad_has_graph):
            with torch.enable_grad():
                if self.least_squares:
                    # J' e_hat as the gradient of the scalar e . e_hat (a scalar output:
                    # torch's first explicit grad_outputs costs a one-time ~1 s import)
                    self.e_hat = self.e.detach().requires_grad_(True)
                    out = (self.e * self.e_hat).sum()
                else:
                    out = self.f.sum()
                # an objective that does not depend on the variables has zero gradient
                g = torch.autograd.grad(
                    out, self.delta, retain_graph=True, create_graph=create_graph,
                    allow_unused=True,
                )[0] if out.requires_grad else None
            if g is None:
                g = torch.zeros_like(self.delta.detach())
            self.grad_f, self.grad_has_graph = g, create_graph
        return self.grad_f

    def residual_products(
        self, seeds: torch.Tensor, second_order: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Least squares only: ``(sum_r e_r (hess e_r) v_s, J v_s)`` stacked over the seeds
        (S, B, n) and (S, B, m_e), from one batched backward pass through the gradient's
        graph (the curvature term is None unless ``second_order``); cached per point."""
        cached = self._products
        if cached is not None and (cached[0] is not None or not second_order):
            return cached
        g = self.objective_gradient(create_graph=True)
        with torch.enable_grad():
            if second_order:
                sv, jv = self.vjp(g, (self.delta, self.e_hat), seeds)
            else:
                sv, (jv,) = None, self.vjp(g, (self.e_hat,), seeds)
        self._products = (sv, jv)
        return self._products


class ProblemStructure:
    """Per-element layout shared by every solve of one optimizer: the chart, the
    constraint rows and the Jacobian / Hessian patterns."""

    def __init__(self, objective, constraints: Sequence[Constraint]):
        self.chart = TangentChart(objective)
        self.constraints = list(constraints)
        offs = self.chart.offsets
        for con in self.constraints:
            for v in con.optim_vars:
                if v.name not in offs or objective.optim_vars[v.name] is not v:
                    raise ValueError(
                        f"Constraint {con.name!r}: variable {v.name!r} is not an optimisation "
                        "variable of the objective"
                    )
        groups = [[v.name for v in cf.optim_vars] for cf in objective.cost_functions.values()]
        groups += [[v.name for v in con.optim_vars] for con in self.constraints]
        self.hess = HessianPattern(offs, groups)
        self.con_rows: list[int] | None = None
        self.jac: JacobianPattern | None = None
        self._gn: GaussNewtonPattern | None | bool = None
        self._gn_vectorized: bool | None = None
        self.vjp = BatchedVjp()
        # Theseus' linearisation (None where it does not apply); ``linearization_checked``:
        # its gradient was compared with autograd's once (BatchNlp.finite_start)
        self.linearization = CostLinearization(self) if CostLinearization.applies(self) \
            else None
        self.linearization_checked = False
        # largest absolute difference between its gradient and autograd's at that check
        self.linearization_gradient_error = 0.0

    @property
    def n(self) -> int:
        return self.chart.dim

    def constraint_values(self) -> torch.Tensor | None:
        if not self.constraints:
            return None
        vals = [con() for con in self.constraints]
        if self.con_rows is None:
            self.con_rows = [v.shape[1] for v in vals]
            blocks, r0 = [], 0
            for con, k in zip(self.constraints, self.con_rows, strict=True):
                blocks.append((r0, k, [self.chart.offsets[v.name] for v in con.optim_vars]))
                r0 += k
            self.jac = JacobianPattern(self.n, blocks)
        return torch.cat(vals, dim=1)

    @property
    def m(self) -> int:
        return 0 if not self.constraints else sum(self.con_rows)

    def gauss_newton_pattern(self) -> GaussNewtonPattern | None:
        """J'J on the Hessian pattern from the rows' cost functions (in the order of
        Theseus' error vector, which a vectorised objective groups by schema); None when
        a cost function's variables are not known."""
        obj = self.chart.objective
        if self._gn_vectorized is not obj.vectorized:  # the error rows' order changes with it
            self._gn, self._gn_vectorized = None, obj.vectorized
        if self._gn is None:
            blocks = []
            offs = self.chart.offsets
            for rows, names in error_row_blocks(obj):
                if any(n not in offs for n in names):
                    self._gn = False
                    return None
                blocks.append((rows, [offs[n] for n in names]))
            self._gn = GaussNewtonPattern(self.hess, blocks)
        return self._gn or None


@dataclass
class Request:
    """One native callback of the solve covering elements ``rows``: ``kind`` is
    ``objective``, ``gradient``, ``constraints``, ``jacobian``, ``hessian`` or
    ``iteration`` (an iterate to record), at the point ``x`` (the rows' ``delta``,
    element-major)."""

    rows: np.ndarray
    kind: str
    x: np.ndarray
    obj_factor: float = 1.0
    lam: np.ndarray | None = None


class BatchNlp:
    """The NLPs of all batch elements, evaluated together (see the module docstring)."""

    def __init__(self, structure: ProblemStructure, hessian, bounds: Sequence[Bound]):
        self.s = structure
        self.chart = structure.chart
        self.th_objective = structure.chart.objective
        self.hessian_strategy = hessian
        self.batch_size = self.th_objective.batch_size
        self.n = structure.n
        self.bounds = bounds
        self._cache_key: bytes | None = None
        self._cache: Evaluation | None = None
        ref = self.chart.base[0]
        self.dtype, self.device = ref.dtype, ref.device
        self._seeds = self.s.hess.seed_tensor(self.batch_size, ref)
        self._layout: HessianLayout | None = None
        self.least_squares = is_least_squares(self.th_objective)
        if self.s.constraints and self.s.con_rows is None:
            with torch.no_grad():  # the constraints' row counts, from one evaluation
                self.chart.apply(self.chart.zeros(self.batch_size))
                self.s.constraint_values()
                self.chart.restore()
        self.m = self.s.m
        # Unconstrained, unbounded solves of moderate size choose each element's Hessian
        # block (see _hybrid_values); with constraints or bounds only the reduced
        # Hessian needs to be positive definite, so the full one is left alone; J'J is
        # the Gauss-Newton Hessian only of Theseus' default 1/2 |e|^2 metric.
        self.lin = structure.linearization if self.m == 0 else None
        self._lin_point: tuple[bytes, LinearizedPoint] | None = None
        # (point, linearisation): the last linearisation, taken at that point (B, n, as
        # bytes) before the chart was re-centred there (see recentred)
        self._carried: tuple[bytes, LinearizedPoint] | None = None
        self._hybrid = bool(
            getattr(hessian, "least_squares_hybrid", False)
            and self.m == 0 and not bounds and self.least_squares
            and (self.lin is not None or self.n <= HYBRID_MAX_DIM)
        )
        self._bounds_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._point = np.zeros((self.batch_size, self.n))
        # hybrid rule, per element: the objective at, and the point of, its last new iterate
        self._f_prev = torch.full((self.batch_size,), float("nan"), dtype=self.dtype)
        self._g_prev = torch.full((self.batch_size,), float("nan"), dtype=self.dtype)
        self._hess_at = torch.full((self.batch_size, self.n), float("nan"), dtype=self.dtype)
        self._use_gn = torch.ones(self.batch_size, dtype=torch.bool)
        # Gauss-Newton for every element (see gauss_newton_only)
        self.gauss_newton_only = False
        # ... plus the robust losses' rank-one curvature (LinearizedPoint.gauss_newton), set
        # by solve_batch for the polish past Theseus' test
        self.robust_curvature = False
        # Gradients by autograd through the objective even where Theseus' linearisation
        # applies (its Hessians still come from the linearisation): set by solve_batch for
        # solves that end at Ipopt's tol when the linearisation's gradient is not that
        # accurate (see linearization_inaccurate); Theseus' error-change test needs no such
        # accuracy.
        self.autograd_gradient = False
        # the solves' tol (set by solve_batch; see _hessian_ahead)
        self.tol = 0.0
        # the polish's per-element switch to exact blocks (see _polish_hessian): the
        # gradient's largest entry served at each element's current point and at its last
        # polish Hessian, and whether it takes exact blocks
        self._polish_grad = np.full(self.batch_size, np.nan)
        self._polish_grad_at_hess = np.full(self.batch_size, np.nan)
        self._polish_exact = np.zeros(self.batch_size, dtype=bool)
        # per solve (its rows as bytes): (point as bytes, objective, gradient, Hessian
        # values or None) computed by the last round at that point (see answer_ahead)
        self._ahead: dict[bytes, tuple] = {}
        # per solve: the point at which it settled (see settled)
        self._settled: dict[bytes, bytes] = {}

    # ----- layout -------------------------------------------------------------------
    def variable_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on ``delta`` (B, n) around the chart's base; +-INF where absent."""
        if self._bounds_cache is None:
            lo = torch.full((self.batch_size, self.n), -INF, dtype=torch.float64)
            hi = torch.full((self.batch_size, self.n), INF, dtype=torch.float64)
            base = dict(zip((v.name for v in self.chart.vars), self.chart.base, strict=True))
            for bnd in self.bounds:
                sl = self.chart.offsets[bnd.var.name]
                x0 = base[bnd.var.name].reshape(self.batch_size, -1).double()
                lo[:, sl] = (bnd.lower.detach().double() - x0).clamp(min=-INF)
                hi[:, sl] = (bnd.upper.detach().double() - x0).clamp(max=INF)
            self._bounds_cache = (lo.cpu().numpy(), hi.cpu().numpy())
        return self._bounds_cache

    def constraint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Constraint limits (B, m); +-INF where absent."""
        if self.m == 0:
            return np.zeros((self.batch_size, 0)), np.zeros((self.batch_size, 0))
        los, his = [], []
        for con, k in zip(self.s.constraints, self.s.con_rows, strict=True):
            lo, hi = con.limits(self.batch_size, k, self.chart.base[0])
            los.append(lo.detach())
            his.append(hi.detach())
        lo = torch.cat(los, dim=1).double().clamp(min=-INF)
        hi = torch.cat(his, dim=1).double().clamp(max=INF)
        return lo.cpu().numpy(), hi.cpu().numpy()

    def start(self) -> np.ndarray:
        """The starting point (B, n): delta = 0 moved into the bounds."""
        xl, xu = self.variable_bounds()
        return np.clip(np.zeros((self.batch_size, self.n)), xl, xu)

    def recentred(self, rows: np.ndarray, moved: np.ndarray | None = None) -> None:
        """The chart's base moved for ``rows``: bounds are re-read, their hybrid rule
        starts afresh. ``moved`` (B, n): the deltas it moved by; where the last
        linearisation was taken at them (the rows' last points), the new chart's first
        linearisation takes its values (``LinearizedPoint``'s ``carried``)."""
        carried = None
        if (moved is not None and self._lin_point is not None
                and np.array_equal(self._point[rows], moved[rows])
                and self._lin_point[0] == np.ascontiguousarray(self._point).tobytes()):
            carried = self._lin_point[1]
        self._bounds_cache = None
        self._cache_key = self._cache = None
        self._lin_point = None
        self.drop_answers_ahead()
        self._f_prev[rows] = float("nan")
        self._g_prev[rows] = float("nan")
        self._hess_at[rows] = float("nan")
        self._point[rows] = 0.0
        self._polish_grad[rows] = self._polish_grad_at_hess[rows] = np.nan
        self._polish_exact[rows] = False
        self._carried = None if carried is None else (
            np.ascontiguousarray(self._point).tobytes(), carried)

    def finite_start(self) -> np.ndarray:
        """Per element: objective, errors, gradient and constraints are finite at the
        starting point. The first time on a structure with Theseus' linearisation, its
        gradient there is compared with autograd's (a cost function whose ``jacobians``
        or robust loss' ``linearize`` is not the derivative fails the comparison), and the
        linearisation is dropped when they differ by more than ``LINEARIZATION_RTOL``."""
        if self.lin is not None:
            ok = self._check_linearization()
            if self.lin is not None:
                return ok
        ev = self.evaluate(self.start())
        with torch.no_grad():
            ok = torch.isfinite(ev.f.detach()) & torch.isfinite(ev.e.detach()).all(dim=1)
            grad = ev.objective_gradient()
            ok &= torch.isfinite(grad.detach()).all(dim=1)
            if ev.c is not None:
                ok &= torch.isfinite(ev.c.detach()).all(dim=1)
        self.chart.restore()
        return ok.cpu().numpy()

    def _check_linearization(self) -> np.ndarray:
        pt = self.linearized(self.start(), gradient=True)
        ok = torch.isfinite(pt.f) & torch.isfinite(pt.gradient()).all(dim=1)
        if not self.s.linearization_checked:
            ev = self.evaluate(self.start())
            want = ev.objective_gradient(create_graph=False).detach()
            got = pt.gradient()
            good = ok & torch.isfinite(want).all(dim=1)
            if bool(good.any()):
                err = (got[good] - want[good]).abs().amax(1)
                self.s.linearization_gradient_error = float(err.max())
                if bool((err > LINEARIZATION_RTOL * want[good].abs().amax(1).clamp(min=1)).any()):
                    self.s.linearization = self.lin = None
                self.s.linearization_checked = True
        self.chart.restore()
        # kept for the solve's first point (the same delta); autograd's evaluation moved
        # the optim vars, so they are set to it again when next needed
        self.chart._linearized_at = None
        if self.lin is None:
            self._lin_point = None
        return ok.cpu().numpy()

    def linearization_inaccurate(self, tol: float) -> bool:
        """Theseus' linearisation gives the gradient less accurately than ``tol`` needs:
        at the start its gradient differed from autograd's by more than
        ``LINEARIZATION_GRADIENT_TOL_FRACTION * tol`` (absolute). Robust pose graphs at
        their starting point (``testing_helpers.theseus_problems.synthetic_pose_graph``,
        40-400 poses): SE3 4e-13 to 7e-12; SE2 ~5e-12 with its log-map Jacobian taken
        accurately (``compat.accurate_se2_log_jacobian``; Theseus' own: 1e-7 to 7e-5)."""
        return (self.lin is not None
                and self.s.linearization_gradient_error
                > LINEARIZATION_GRADIENT_TOL_FRACTION * tol)

    # ----- evaluation ---------------------------------------------------------------
    def linearized(self, delta: np.ndarray, gradient: bool = False) -> LinearizedPoint:
        """Theseus' linearisation at ``delta`` (B, n), cached for the last point
        (``gradient``: its gradient will be asked, see ``CostLinearization.at``)."""
        key = np.ascontiguousarray(delta).tobytes()
        if self._lin_point is None or self._lin_point[0] != key:
            d = torch.tensor(delta, dtype=self.dtype, device=self.device)
            carried = self._carried[1] if self._carried and self._carried[0] == key else None
            self._carried = None
            # the robust cost functions' inner errors are kept in the first phase too (they
            # come with its Jacobians): the polish's first point carries them
            self._lin_point = (key, self.lin.at(d, robust_errors=self.gauss_newton_only,
                                                carried=carried, jacobians=gradient))
        return self._lin_point[1]

    def evaluate(self, delta: np.ndarray) -> Evaluation:
        """The objective and constraints at ``delta`` (B, n), with their graph."""
        key = np.ascontiguousarray(delta).tobytes()
        if key == self._cache_key and self._cache is not None:
            return self._cache
        d = torch.tensor(delta, dtype=self.dtype, device=self.device).requires_grad_(True)
        with torch.enable_grad():
            self.chart.apply(d)
            e = weighted_error(self.th_objective, self.chart.sources)
            f = error_metric(self.th_objective, e)
            c = self.s.constraint_values()
        ev = Evaluation(d, e, f, c, self.s.vjp, self.least_squares)
        self._cache_key, self._cache = key, ev
        return ev

    def serve(self, requests: Sequence[Request]) -> list:
        """Answer callbacks of several solves (disjoint rows) from one evaluation at the
        stacked point; rows no request names keep their last point. On Theseus'
        linearisation every objective or gradient round also computes what the solves ask
        next at an accepted point (see :meth:`answer_ahead`)."""
        n = self.n
        for r in requests:
            self._point[r.rows] = np.asarray(r.x, dtype=np.float64).reshape(len(r.rows), n)
        kinds = {r.kind for r in requests}
        hess_requests = [r for r in requests if r.kind == "hessian"]
        grad = jac = hess = None
        if self.lin is not None:
            ahead = not self.autograd_gradient and bool(kinds & {"objective", "gradient"})
            pt = self.linearized(self._point, gradient="gradient" in kinds or ahead)
            f = _numpy(pt.f)
            if "gradient" in kinds or ahead:
                # Theseus' Jacobians first, while the optim vars are at this point (the
                # Hessian round reuses them; the autograd pass below moves the vars)
                grad = pt.gradient()
                if self.autograd_gradient:
                    grad = self._autograd_gradient()
                grad = _numpy(grad)
                if self.robust_curvature and "gradient" in kinds:
                    rows = np.concatenate([r.rows for r in requests if r.kind == "gradient"])
                    self._polish_grad[rows] = np.abs(grad[rows]).max(axis=1)
            if hess_requests:
                hess = _numpy(self._linearized_hessian(pt, hess_requests))
            if ahead:
                self._keep_ahead(requests, f, grad, *self._hessian_ahead(pt, grad, requests))
        else:
            ev = self.evaluate(self._point)
            f = _numpy(ev.f)
            if "gradient" in kinds:
                grad = _numpy(ev.objective_gradient())
            if "jacobian" in kinds:
                jac = _numpy(self.s.jac.gather(self.dense_jacobian(ev)))
            if hess_requests:
                hess = _numpy(self._requested_hessian(ev, hess_requests))
        out = []
        for r in requests:
            if r.kind == "objective":
                out.append(float(f[r.rows].sum()))
            elif r.kind == "gradient":
                out.append(grad[r.rows].reshape(-1))
            elif r.kind == "constraints":
                out.append(_numpy(self.evaluate(self._point).c)[r.rows].reshape(-1))
            elif r.kind == "jacobian":
                out.append(jac[r.rows].reshape(-1))
            elif r.kind == "hessian":
                out.append(self._hessian_answer(r.rows, hess[r.rows].reshape(-1), r.obj_factor))
            elif r.kind == "iteration":
                out.append(self._iterate(r.rows, f))
            else:
                raise ValueError(f"unknown callback kind {r.kind!r}")
        return out

    def _keep_ahead(self, requests: Sequence[Request], f: np.ndarray, grad: np.ndarray,
                    hess: torch.Tensor | None, exact: np.ndarray) -> None:
        hess = None if hess is None else _numpy(hess)
        for r in requests:
            self._ahead[r.rows.tobytes()] = (
                np.ascontiguousarray(r.x).tobytes(), float(f[r.rows].sum()),
                grad[r.rows].reshape(-1),
                None if hess is None else hess[r.rows].reshape(-1), exact[r.rows])

    def _hessian_ahead(self, pt: LinearizedPoint, grad: np.ndarray,
                       requests: Sequence[Request]) -> tuple[torch.Tensor | None, np.ndarray]:
        """The Hessian values (obj_factor 1) that a Hessian callback at ``pt`` gets, and per
        element whether they are exact blocks; None where the answer depends on what was
        asked before it (the hybrid rule) or would be the exact Hessian of every element.
        In the polish, the elements of ``requests`` that the switch of :meth:`_polish_slow`
        puts on exact blocks at this point get them, unless their gradient is already
        within ``tol`` (the solve stops there, see :meth:`settled`); where every asking
        element's is, all get Gauss-Newton without the robust term."""
        exact = np.zeros(self.batch_size, dtype=bool)
        if isinstance(self.hessian_strategy, GaussNewtonHessian):
            return pt.gauss_newton(), exact
        if not (self._hybrid and self.gauss_newton_only):
            return None, exact
        if not self.robust_curvature:
            return pt.gauss_newton(), exact
        rows = np.concatenate([r.rows for r in requests if r.kind != "hessian"])
        g = np.abs(grad[rows]).max(axis=1)
        if not (g > self.tol).any():
            # every solve asking here has its (unscaled, so also its scaled) gradient within
            # tol: it stops at this point, and the Hessian it still asks shapes no step
            return pt.gauss_newton(), exact
        values = pt.gauss_newton(True)
        exact[rows] = (self._polish_exact[rows]
                       | _slow(g, self._polish_grad_at_hess[rows])) & (g > self.tol)
        if exact.any():
            mask = torch.as_tensor(exact, device=self.device).unsqueeze(1)
            values = torch.where(mask, pt.exact_for(np.flatnonzero(exact), chart_curvature=False,
                                                    differenced=True), values)
        return values, exact

    def answer_ahead(self, req: Request):
        """The answer to ``req`` computed in advance by the round that served its rows last,
        at the same point (the gradient and Hessian of an objective round, which the solve
        asks for next once it accepts the point), or None. Called on the solve's own thread
        while no round is being served. In the polish, a Hessian is answered ahead when the
        switch to exact blocks (:meth:`_polish_slow`) agrees with what was computed, or
        when the solve settled at the point (:meth:`settled`)."""
        got = self._ahead.get(req.rows.tobytes())
        if got is None or got[0] != np.ascontiguousarray(req.x).tobytes():
            return None
        _, f, grad, hess, exact = got
        if req.kind == "objective":
            return f
        if req.kind == "gradient":
            if self.robust_curvature:
                self._polish_grad[req.rows] = np.abs(grad.reshape(len(req.rows), -1)).max(axis=1)
            return grad.copy()
        if req.kind == "hessian" and hess is not None:
            if self.robust_curvature:
                self._polish_slow(req.rows)
                if (not np.array_equal(self._polish_exact[req.rows], exact)
                        and self._settled.get(req.rows.tobytes()) != got[0]):
                    return None
            values = req.obj_factor * hess
            return self._hessian_answer(req.rows, values, req.obj_factor)
        return None

    def drop_answers_ahead(self) -> None:
        """Forget the answers computed in advance (the chart or the solve settings moved)."""
        self._ahead.clear()
        self._settled.clear()

    def settled(self, rows: np.ndarray, x: np.ndarray) -> None:
        """The solve of ``rows`` reported an iterate ``x`` whose primal and dual
        infeasibilities are within its ``tol``: it stops there at its convergence test, and
        the Hessian it still asks at ``x`` (Ipopt evaluates it at every iterate before
        that test) shapes no step, so in the polish its elements get the Gauss-Newton
        one there instead of exact blocks (:meth:`answer_ahead`)."""
        self._settled[rows.tobytes()] = np.ascontiguousarray(x).tobytes()

    def _hessian_answer(self, rows: np.ndarray, values: np.ndarray, obj_factor: float
                        ) -> np.ndarray:
        """A Hessian callback's answer (element-major values) from this problem's Hessian
        values times ``obj_factor``."""
        return values

    def _autograd_gradient(self) -> torch.Tensor:
        """The objective's gradient at the current point by autograd through its errors.
        Theseus' analytic Jacobians can be less accurate (e.g. SE2's log-map Jacobian,
        taken accurately by ``compat.accurate_se2_log_jacobian``; Theseus' own put the
        gradient of robust SE2 pose graphs 1e-7 to 1e-6 off at the solution, above
        ``tol = 1e-8``, where solves wandered until their iteration limit,
        docs/theseus-scale.md)."""
        g = self.evaluate(self._point).objective_gradient(create_graph=False).detach()
        self.chart._linearized_at = None  # the optim vars moved: the linearisation re-sets them
        return g

    def _iterate(self, rows: np.ndarray, f: np.ndarray) -> tuple:
        """The error metric and the optim vars' values of ``rows`` at the current point."""
        values = {v.name: v.tensor.detach()[torch.as_tensor(rows)].clone()
                  for v in self.th_objective.optim_vars.values()}
        return f[rows].copy(), values

    def _requested_hessian(self, ev: Evaluation, requests: Sequence[Request]) -> torch.Tensor:
        factor = torch.zeros(self.batch_size, 1, dtype=self.dtype, device=self.device)
        lam = None
        if self.m:
            lam = torch.zeros(self.batch_size, self.m, dtype=self.dtype, device=self.device)
        rows = np.concatenate([r.rows for r in requests])
        for r in requests:
            factor[r.rows] = r.obj_factor
            if lam is not None and r.lam is not None:
                lam[r.rows] = torch.as_tensor(r.lam, dtype=self.dtype).view(len(r.rows), self.m)
        return self.hessian_values(ev, factor, lam, rows)

    # ----- shared by the backward -------------------------------------------------
    def dense_jacobian(self, ev: Evaluation) -> torch.Tensor:
        """Constraint Jacobians (B, m, n) w.r.t. the tangent coordinates."""
        eye = torch.eye(self.m, dtype=self.dtype, device=self.device)
        seeds = eye.unsqueeze(1).expand(self.m, self.batch_size, self.m)
        with torch.enable_grad():
            rows = ev.vjp.one(ev.c, ev.delta, seeds)  # (m, B, n)
        return rows.transpose(0, 1)

    def hessian_values(
        self, ev: Evaluation, obj_factor: float | torch.Tensor, lam: torch.Tensor | None,
        rows: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Lower-pattern values (B, nnz) of obj_factor * H_f + sum lam_i hess c_i;
        ``obj_factor`` a float or per element (B, 1). ``rows``: the elements whose solves
        asked (their hybrid rule advances; None: the plain strategy for all)."""
        if self._hybrid and rows is not None:
            return self._hybrid_values(ev, obj_factor, rows)
        return self.hessian_strategy.values(ev, self.layout(), obj_factor, lam).detach()

    def layout(self) -> HessianLayout:
        """Seeds and patterns for the Hessian strategies (built on first use)."""
        if self._layout is None:
            self._layout = HessianLayout(
                self._seeds, self.s.hess, self.s.gauss_newton_pattern()
            )
        return self._layout

    def _linearized_hessian(self, pt: LinearizedPoint, requests: Sequence[Request]
                            ) -> torch.Tensor:
        """The Hessian callbacks' values from Theseus' linearisation: ``obj_factor``
        times A'A (``hessian="gauss-newton"``), the exact Hessian, or in a forward solve of
        ``hessian="exact"`` the hybrid rule of :meth:`_hybrid_values` with exact blocks
        where each cost function's block is positive semidefinite (``LinearizedPoint.convex``;
        no dense check); Gauss-Newton only while ``gauss_newton_only`` is set (a solve run
        to Theseus' test and then to ``tol``, see ``SolveSettings.polish``: per cost
        function the exact blocks cost D seeded products through Theseus' Lie-group
        functions, 1.2 s on an 800-pose SE3 graph, against 0.2 s for a Gauss-Newton
        iterate that gains 8x)."""
        factor = torch.zeros(self.batch_size, 1, dtype=self.dtype, device=self.device)
        for r in requests:
            factor[r.rows] = r.obj_factor
        if isinstance(self.hessian_strategy, GaussNewtonHessian):
            return factor * pt.gauss_newton()
        if not self._hybrid:
            return factor * pt.exact()
        rows = np.concatenate([r.rows for r in requests])
        if self.gauss_newton_only:
            if self.robust_curvature and self._polish_slow(rows):
                exact = torch.as_tensor(self._polish_exact, device=self.device).unsqueeze(1)
                exact_values = pt.exact_for(np.flatnonzero(self._polish_exact),
                                            chart_curvature=False, differenced=True)
                return factor * torch.where(exact, exact_values, pt.gauss_newton(True))
            return factor * pt.gauss_newton(self.robust_curvature)
        use_gn = self._hybrid_rule(pt.f, pt.gradient(), pt.delta, rows)
        if bool(use_gn[torch.as_tensor(rows)].all()):
            return factor * pt.gauss_newton()
        convex, _ = pt.convex()
        return factor * torch.where(use_gn.unsqueeze(1), pt.gauss_newton(), convex)

    def _polish_slow(self, rows: np.ndarray) -> bool:
        """Whether any of the elements ``rows`` (asking for a polish Hessian at a point whose
        gradient was served) takes exact blocks: its gradient's largest entry fell by less
        than ``POLISH_SLOW_RATE`` of itself since its last polish Hessian (then it keeps
        them for the rest of the polish). A Hessian asked again at the same point does not
        count as an iterate."""
        g = self._polish_grad[rows]
        self._polish_exact[rows] |= _slow(g, self._polish_grad_at_hess[rows])
        self._polish_grad_at_hess[rows] = g
        return bool(self._polish_exact[rows].any())

    def _hybrid_rule(self, f: torch.Tensor, g: torch.Tensor, d: torch.Tensor,
                     rows: np.ndarray) -> torch.Tensor:
        """Per element, whether its next Hessian block is Gauss-Newton by the progress
        part of the hybrid rule (see :meth:`_hybrid_values`): the objective fell by at
        least ``GN_PROGRESS`` of itself or the gradient's largest entry by at least
        ``GN_GRADIENT_PROGRESS`` of itself over the last iterate. Advances the rule for
        the elements ``rows`` at a new iterate."""
        r = torch.as_tensor(rows)
        new = r[~(d[r] == self._hess_at[r]).all(dim=1)]  # a new iterate of these elements
        if new.numel():
            prev, g_prev = self._f_prev[new], self._g_prev[new]
            g_now = g[new].abs().amax(dim=1)
            self._use_gn[new] = (torch.isnan(prev) | ((prev - f[new]) >= GN_PROGRESS * prev.abs())
                                 | ((g_prev - g_now) >= GN_GRADIENT_PROGRESS * g_prev))
            self._f_prev[new], self._g_prev[new] = f[new], g_now
            self._hess_at[new] = d[new]
        return self._use_gn.clone()

    def _hybrid_values(self, ev: Evaluation, obj_factor, rows: np.ndarray) -> torch.Tensor:
        """Per element, the Gauss-Newton block ``obj_factor * J'J`` or the exact one
        (Fletcher and Xu's hybrid rule for least squares): Gauss-Newton at the first
        iterate and while the element's objective still falls by at least
        ``GN_PROGRESS`` of itself per iterate or its gradient by ``GN_GRADIENT_PROGRESS``
        (a small-residual regime where it converges fast and stays positive semidefinite),
        the exact block once progress slows (the residual curvature then matters:
        quadratic instead of linear convergence), and Gauss-Newton again where the exact
        block is not positive definite. Per element: an indefinite block of one element
        must not shift another's Hessian. At a minimiser with nonzero residuals progress
        stalls and the exact block is positive definite, so the last iterations are exact
        Newton ones; with zero residuals the two blocks coincide in the limit. Both blocks
        come from the same seeded products (exact = J'J plus the residual curvature)."""
        r = torch.as_tensor(rows)
        use_gn = self._hybrid_rule(ev.f.detach(), ev.objective_gradient().detach(),
                                   ev.delta.detach(), rows)
        exact_needed = not bool(use_gn[r].all())
        layout = self.layout()
        sv, jv = ev.residual_products(layout.seeds, second_order=exact_needed)
        gn = gauss_newton_values(ev, layout, jv)
        if not exact_needed:
            return (obj_factor * gn).detach()
        values = obj_factor * (layout.hess.gather(sv) + gn)
        _, info = torch.linalg.cholesky_ex(layout.hess.dense(values))
        use_gn |= info != 0
        if bool(use_gn[r].any()):
            values = torch.where(use_gn.unsqueeze(1), obj_factor * gn, values)
        return values.detach()


def _slow(g: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The polish's switch to exact blocks (:meth:`BatchNlp._polish_slow`): the gradient's
    largest entry ``g`` at a new iterate fell by less than ``POLISH_SLOW_RATE`` of ``prev``,
    its value at the last polish Hessian (a Hessian asked again at the same point is not a
    new iterate)."""
    return (g != prev) & np.isfinite(prev) & (g > POLISH_SLOW_RATE * prev)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()
