"""The whole batch as ONE block-diagonal NLP in tangent coordinates.

Variables: ``x = delta[idx].ravel()`` for the batch elements ``idx`` being solved
(element-major, ``n`` tangent coordinates each, see :class:`TangentChart`). Objective:
``sum_b f_b`` with ``f_b`` Theseus' error metric (1/2 |weighted error|^2). Constraints:
the :class:`Constraint` rows of every element, element-major. Bounds: Vector bounds
expressed on ``delta``. Each callback costs one vectorised evaluation of the objective
(plus backward passes); the last evaluation is cached so objective, gradient, constraints
and Jacobian at the same point share it.

This object is what the native solver (``nlp_solve``) calls back into.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from theseus.core.objective import error_squared_norm_fn

from .chart import TangentChart
from .constraints import Bound, Constraint
from .hessian import (
    BatchedVjp,
    HessianLayout,
    gauss_newton_values,
)
from .structure import GaussNewtonPattern, HessianPattern, JacobianPattern

__all__ = ["BatchNlp", "Evaluation", "ProblemStructure"]

INF = 1e20
# Largest per-element dimension whose dense Hessian block is checked for positive
# definiteness (a batched Cholesky of (B, n, n)).
HYBRID_MAX_DIM = 200
# Relative decrease of an element's objective per iterate above which its Hessian block
# stays Gauss-Newton (Fletcher and Xu's 0.2).
GN_PROGRESS = 0.2


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
                    self.e_hat = self.e.detach().requires_grad_(True)
                    out, seed = self.e, self.e_hat
                else:
                    out, seed = self.f.sum(), None
                (g,) = torch.autograd.grad(
                    out, self.delta, seed, retain_graph=True, create_graph=create_graph
                )
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
            for item in self.chart.objective._get_error_iter():
                cf = getattr(item, "cost_fn", item)  # a vectorisation wrapper or the cf
                names = [v.name for v in cf.optim_vars]
                if any(n not in offs for n in names):
                    self._gn = False
                    return None
                blocks.append((item.dim(), [offs[n] for n in names]))
            self._gn = GaussNewtonPattern(self.hess, blocks)
        return self._gn or None


class BatchNlp:
    """Callbacks of the block-diagonal NLP over the batch elements ``idx``."""

    def __init__(
        self,
        structure: ProblemStructure,
        hessian,
        idx: np.ndarray,
        bounds: Sequence[Bound],
        on_iteration: Callable[[int, np.ndarray | None, bool], bool] | None = None,
    ):
        self.s = structure
        self.chart = structure.chart
        self.th_objective = structure.chart.objective
        self.hessian_strategy = hessian
        self.idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        self.k = int(self.idx.numel())
        # the whole batch in order: rows need no gathering or scattering
        self._whole = bool(torch.equal(self.idx, torch.arange(self.k))) and (
            self.k == structure.chart.objective.batch_size
        )
        self.batch_size = self.th_objective.batch_size
        self.bounds = bounds
        self.on_iteration = on_iteration
        self.restoration_iterations = 0
        self._cache_key: bytes | None = None
        self._cache: Evaluation | None = None
        ref = self.chart.base[0]
        self.dtype, self.device = ref.dtype, ref.device
        self._seeds = self.s.hess.seed_tensor(self.batch_size, ref)
        self._layout: HessianLayout | None = None
        self._least_squares = self.th_objective._error_metric_fn is error_squared_norm_fn
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
        self._hybrid = bool(
            getattr(hessian, "least_squares_hybrid", False)
            and self.m == 0 and not bounds and self.s.n <= HYBRID_MAX_DIM
            and self._least_squares
        )
        self._bounds_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._last_hessian: tuple | None = None
        self._f_prev: torch.Tensor | None = None
        self._hybrid_key: bytes | None = None
        self._use_gn: torch.Tensor | None = None
        self._replaced_blocks = False

    # ----- layout -------------------------------------------------------------------
    def to_delta(self, x: np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor(x, dtype=self.dtype, device=self.device).view(self.k, -1)
        if self._whole:
            return rows.clone()
        d = self.chart.zeros(self.batch_size)
        d[self.idx] = rows
        return d

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """The rows of the elements being solved."""
        return t if self._whole else t[self.idx]

    def from_rows(self, t: torch.Tensor) -> np.ndarray:
        return self._rows(t.detach()).reshape(-1).cpu().numpy().astype(np.float64)

    def variable_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self._bounds_cache is None:
            self._bounds_cache = self._variable_bounds()
        return self._bounds_cache

    def start(self) -> np.ndarray:
        """The starting point: delta = 0 moved into the bounds."""
        xl, xu = self.variable_bounds()
        return np.clip(np.zeros(self.k * self.s.n), xl, xu)

    def finite_start(self) -> np.ndarray:
        """Per element of ``idx``: objective, errors, gradient and constraints are finite
        at the starting point (the evaluation stays cached for the solve)."""
        ev = self.evaluate(self.start())
        with torch.no_grad():
            ok = torch.isfinite(ev.f.detach()) & torch.isfinite(ev.e.detach()).all(dim=1)
            grad = ev.objective_gradient()
            ok &= torch.isfinite(grad.detach()).all(dim=1)
            if ev.c is not None:
                ok &= torch.isfinite(ev.c.detach()).all(dim=1)
        self.chart.restore()
        return ok[self.idx].cpu().numpy()

    def _variable_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = torch.full((self.batch_size, self.s.n), -INF, dtype=torch.float64)
        hi = torch.full((self.batch_size, self.s.n), INF, dtype=torch.float64)
        base = dict(zip((v.name for v in self.chart.vars), self.chart.base, strict=True))
        for bnd in self.bounds:
            sl = self.chart.offsets[bnd.var.name]
            x0 = base[bnd.var.name].reshape(self.batch_size, -1).double()
            lo[:, sl] = (bnd.lower.detach().double() - x0).clamp(min=-INF)
            hi[:, sl] = (bnd.upper.detach().double() - x0).clamp(max=INF)
        return self.from_rows(lo), self.from_rows(hi)

    def constraint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.m == 0:
            return np.zeros(0), np.zeros(0)
        los, his = [], []
        for con, k in zip(self.s.constraints, self.s.con_rows, strict=True):
            lo, hi = con.limits(self.batch_size, k, self.chart.base[0])
            los.append(lo.detach())
            his.append(hi.detach())
        lo = torch.cat(los, dim=1).double().clamp(min=-INF)
        hi = torch.cat(his, dim=1).double().clamp(max=INF)
        return self.from_rows(lo), self.from_rows(hi)

    def jacobian_structure(self) -> tuple[np.ndarray, np.ndarray]:
        if self.m == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self.s.jac.batch_indices(self.k)

    def hessian_structure(self) -> tuple[np.ndarray, np.ndarray]:
        return self.s.hess.batch_indices(self.k)

    # ----- evaluation ---------------------------------------------------------------
    def evaluate(self, x: np.ndarray) -> Evaluation:
        key = np.ascontiguousarray(x).tobytes()
        if key == self._cache_key and self._cache is not None:
            return self._cache
        delta = self.to_delta(x).requires_grad_(True)
        with torch.enable_grad():
            self.chart.apply(delta)
            e = self.th_objective.error()
            f = self.th_objective._error_metric_fn(e).reshape(-1)
            c = self.s.constraint_values()
        ev = Evaluation(delta, e, f, c, self.s.vjp, self._least_squares)
        self._cache_key, self._cache = key, ev
        return self._cache

    def objective_value(self, x: np.ndarray) -> float:
        ev = self.evaluate(x)
        return float(self._rows(ev.f.detach()).sum())

    # Native callbacks (names fixed by rust/src/nlp/tnlp_bridge.rs).
    def objective(self, x: np.ndarray) -> float:  # noqa: D102
        return self.objective_value(x)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        ev = self.evaluate(x)
        return self.from_rows(ev.objective_gradient())

    def constraints(self, x: np.ndarray) -> np.ndarray:
        ev = self.evaluate(x)
        return self.from_rows(ev.c)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        ev = self.evaluate(x)
        return self.from_rows(self.s.jac.gather(self.dense_jacobian(ev)))

    def hessian(self, x: np.ndarray, obj_factor: float, lam: np.ndarray) -> np.ndarray:
        ev = self.evaluate(x)
        self._replaced_blocks = False
        values = self.hessian_values(ev, obj_factor, lam)
        self._last_hessian = (self._cache_key, obj_factor, values, self._replaced_blocks)
        return self.from_rows(values)

    def objective_hessian_at(self, x: np.ndarray) -> torch.Tensor | None:
        """The exact objective Hessian's pattern values (B, nnz) at ``x`` when the last
        Hessian callback was at exactly ``x`` with the exact strategy, without
        constraints (no multiplier terms), with a nonzero objective factor and no block
        replaced; else None."""
        if self._last_hessian is None or self.m or self.hessian_strategy.name != "exact":
            return None
        key, obj_factor, values, replaced = self._last_hessian
        if key != np.ascontiguousarray(x).tobytes() or replaced or obj_factor == 0.0:
            return None
        return values / obj_factor

    def iteration(self, it, obj, inf_pr, inf_du, mu, restoration, x) -> bool:
        self.restoration_iterations += int(bool(restoration))
        if self.on_iteration is None:
            return True
        return bool(self.on_iteration(int(it), x, bool(restoration)))

    # ----- shared by the backward -------------------------------------------------
    def dense_jacobian(self, ev: Evaluation) -> torch.Tensor:
        """Constraint Jacobians (B, m, n) w.r.t. the tangent coordinates."""
        eye = torch.eye(self.m, dtype=self.dtype, device=self.device)
        seeds = eye.unsqueeze(1).expand(self.m, self.batch_size, self.m)
        with torch.enable_grad():
            rows = ev.vjp.one(ev.c, ev.delta, seeds)  # (m, B, n)
        return rows.transpose(0, 1)

    def hessian_values(
        self, ev: Evaluation, obj_factor: float, lam: np.ndarray | torch.Tensor | None
    ) -> torch.Tensor:
        """Lower-pattern values (B, nnz) of obj_factor * H_f + sum lam_i hess c_i."""
        lam_t = None
        if self.m > 0 and lam is not None:
            if isinstance(lam, np.ndarray):
                full = torch.zeros(self.batch_size, self.m, dtype=self.dtype, device=self.device)
                full[self.idx] = torch.as_tensor(lam, dtype=self.dtype).view(self.k, self.m)
                lam_t = full
            else:
                lam_t = lam
        if self._hybrid:
            return self._hybrid_values(ev, obj_factor)
        return self.hessian_strategy.values(ev, self.layout(), obj_factor, lam_t).detach()

    def layout(self) -> HessianLayout:
        """Seeds and patterns for the Hessian strategies (built on first use)."""
        if self._layout is None:
            self._layout = HessianLayout(
                self._seeds, self.s.hess, self.s.gauss_newton_pattern()
            )
        return self._layout

    def _hybrid_values(self, ev: Evaluation, obj_factor: float) -> torch.Tensor:
        """Per element, the Gauss-Newton block ``obj_factor * J'J`` or the exact one
        (Fletcher and Xu's hybrid rule for least squares): Gauss-Newton at the first
        iterate and while the element's objective still falls by at least
        ``GN_PROGRESS`` of itself per iterate (a small-residual regime where it converges
        fast and stays positive semidefinite), the exact block once progress slows (the
        residual curvature then matters: quadratic instead of linear convergence), and
        Gauss-Newton again where the exact block is not positive definite. Per element,
        because the interior-point method's remedies are global: one element's
        indefinite block would shift the Hessian of the whole batch (inertia correction)
        and one element's poor step shortens every element's (one line search). At a
        minimiser with nonzero residuals progress stalls and the exact block is positive
        definite, so the last iterations are exact Newton ones; with zero residuals the
        two blocks coincide in the limit. Either way the solve stops at the same KKT
        tolerance. Both blocks come from the same seeded products (exact = J'J plus the
        residual curvature)."""
        f = ev.f.detach()
        if self._hybrid_key != self._cache_key:  # a new iterate: update the rule
            use_gn = self._gauss_newton_rule(f)
            self._f_prev, self._hybrid_key, self._use_gn = f.clone(), self._cache_key, use_gn
        use_gn = self._use_gn.clone()
        exact_needed = not bool(self._rows(use_gn).all())
        layout = self.layout()
        sv, jv = ev.residual_products(layout.seeds, second_order=exact_needed)
        gn = gauss_newton_values(ev, layout, jv)
        if not exact_needed:
            self._replaced_blocks = True
            return (obj_factor * gn).detach()
        values = obj_factor * (layout.hess.gather(sv) + gn)
        _, info = torch.linalg.cholesky_ex(layout.hess.dense(values))
        use_gn |= info != 0
        if bool(self._rows(use_gn).any()):
            values = torch.where(use_gn.unsqueeze(1), obj_factor * gn, values)
            self._replaced_blocks = True
        return values.detach()

    def _gauss_newton_rule(self, f: torch.Tensor) -> torch.Tensor:
        """Elements whose next Hessian block is Gauss-Newton by the progress rule."""
        prev = self._f_prev
        if prev is None:
            return torch.ones_like(f, dtype=torch.bool)
        return (prev - f) >= GN_PROGRESS * prev.abs()
