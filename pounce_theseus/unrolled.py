"""The gradient of an unconverged solve through its last steps (Theseus' ``unroll`` and
``truncated`` backward modes).

An element whose solve stopped before converging (on its ``max_iterations`` budget, or a
stall) returns the iterate ``x_K`` of the interior-point iteration, not a solution, and
``x_K`` depends on where the solve started. Without constraints or bounds each step of
that iteration is a damped Newton step in the chart coordinates ``delta``
(``x = base (+) delta``, :class:`~pounce_theseus.chart.TangentChart`):

    ``delta_{k+1} = delta_k + alpha_k d_k``,  ``H_k d_k = -g_k``,

with ``g`` the error metric's gradient, ``H`` the Gauss-Newton Hessian ``J'J`` of the
weighted errors (what the solve uses when a gradient follows and ``tol`` is None) and
``alpha_k`` the line search's step length, a discrete choice (halvings), constant near
the point. :func:`attach_unrolled_gradient` replays those steps from the recorded iterates
with autograd: ``d_k`` recomputed at the replayed ``delta_k`` (through the aux data, cost
weights and, for ``unroll``, the chart's base, which is the layer's starting values),
``alpha_k`` read off the recorded step. The returned values stay the solve's; their
derivative is the replay's, the derivative of the layer's own map (start, inputs) ->
``x_K`` wherever the step lengths do not change. ``unroll`` replays every step of the
element's solve when it ran in one chart (a re-centred re-solve cuts the replay at its
chart's base, detached); ``truncated`` the last ``backward_num_iterations`` steps, from a
detached iterate, as Theseus' truncated mode does (all of them, from the start, when
that covers every step).

Theseus' step: the iterations of an element's first chart take the step Theseus'
optimizers take, ``delta_{k+1} = delta_k + step_size (H_k + D) ^-1 (-g_k)`` with the
optimizer's ``step_size`` and LevenbergMarquardt's ``damping`` (``D = damping I``, or
``damping diag(H_k) + damping_eps`` when ``ellipsoidal_damping``), as the Newton step of the
interior-point iteration (its line search on top, whose cut-backs the replay reads off as
above): :class:`StepRule`, served by :class:`TheseusStepNlp`. Solves under these two modes
take it with or without a gradient (an unconverged element's returned iterate and its
derivative depend on the path, a converged one's do not; the map must not change with
``torch.no_grad``); a re-centred re-solve (a stall's restart, the polish past Theseus'
test) takes full Newton steps.

A recorded step the replay does not reproduce to ``STEP_RTOL`` (the solve regularised
its Hessian, or took exact-Hessian steps because ``tol`` was given) is replayed as the
damped Gauss-Newton step closest to it; :func:`attach_unrolled_gradient` reports the
largest such mismatch so that the caller can warn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import theseus as th
import torch

from .batch_nlp import BatchNlp, ProblemStructure
from .chart import TangentChart
from .compat import (
    cost_function_groups,
    has_vector_retract,
    weighted_error,
    weighted_jacobians_error,
)

__all__ = [
    "REPLAY_MAX_ENTRIES", "STEP_RTOL", "StepRule", "TheseusStepNlp",
    "attach_unrolled_gradient", "replay_plan",
]

# Largest relative difference between a recorded step and the replayed one
# (|recorded - alpha d| / |recorded|) for the replay to count as the solve's own step.
STEP_RTOL = 1e-6
# Largest batch size x error rows x chart dimension replayed: the replay forms the dense
# Jacobian of the errors of the whole batch with its graph (2.5e7 float64 entries: 200 MB
# per copy); larger problems keep the implicit step at the iterate.
REPLAY_MAX_ENTRIES = 25_000_000


@dataclass(frozen=True)
class StepRule:
    """Theseus' step ``step_size * (H + D)^-1 (-g)`` (see the module docstring):
    ``D = damping I``, or ``damping diag(H) + damping_eps`` when ``ellipsoidal``
    (``theseus.optimizer.linear.DenseSolver._apply_damping``)."""

    step_size: float = 1.0
    damping: float = 0.0
    ellipsoidal: bool = False
    damping_eps: float = 1e-8

    @property
    def plain(self) -> bool:
        """The full, undamped Newton step."""
        return self.step_size == 1.0 and self.damping == 0.0

    def damped(self, h: torch.Tensor) -> torch.Tensor:
        """``H + D`` for dense Hessians ``h`` (..., n, n), with their graph."""
        if self.damping == 0.0:
            return h
        diag = h.diagonal(dim1=-2, dim2=-1)
        extra = (self.damping * diag + self.damping_eps if self.ellipsoidal
                 else torch.full_like(diag, self.damping))
        return h + torch.diag_embed(extra)

    def newton_matrix(self, values: np.ndarray, diag: np.ndarray, obj_factor: np.ndarray
                      ) -> np.ndarray:
        """The Newton matrix ``(H + D) / step_size`` from Hessian pattern values (k, nnz)
        of ``obj_factor * H`` (``diag``: the pattern's diagonal positions; ``obj_factor``
        (k,)), so that the interior-point iteration's full step is Theseus' step."""
        out = np.array(values, dtype=np.float64, copy=True)
        f = np.asarray(obj_factor, dtype=np.float64).reshape(-1, 1)
        if self.damping != 0.0:
            if self.ellipsoidal:
                out[:, diag] += self.damping * out[:, diag] + f * self.damping_eps
            else:
                out[:, diag] += f * self.damping
        return out / self.step_size


class TheseusStepNlp(BatchNlp):
    """:class:`~pounce_theseus.batch_nlp.BatchNlp` whose Hessian callbacks answer the
    Newton matrix of :class:`StepRule` for every element still in its first chart (a
    re-centred element takes full Newton steps)."""

    def __init__(self, structure: ProblemStructure, hessian, bounds: Sequence, rule: StepRule):
        super().__init__(structure, hessian, bounds)
        self.rule = rule
        self._diag = np.flatnonzero(structure.hess.rows == structure.hess.cols)
        self._first_chart = np.ones(self.batch_size, dtype=bool)

    def recentred(self, rows: np.ndarray, moved: np.ndarray | None = None) -> None:  # noqa: D102
        super().recentred(rows, moved)
        self._first_chart[rows] = False

    def _hessian_answer(self, rows: np.ndarray, values: np.ndarray, obj_factor: float
                        ) -> np.ndarray:  # noqa: D102 (BatchNlp's)
        first = self._first_chart[rows]
        if not first.any():
            return values
        values = values.reshape(rows.size, -1).copy()
        factor = np.full(int(first.sum()), float(obj_factor))
        values[first] = self.rule.newton_matrix(values[first], self._diag, factor)
        return values.reshape(-1)


def replay_plan(points: dict[int, np.ndarray], returned: np.ndarray, steps: int | None
                ) -> tuple[list[np.ndarray], bool] | None:
    """The recorded chart points to replay for one element: ``points`` maps an iteration to
    its ``delta`` (:attr:`~pounce_theseus.solve.BatchResult.points`). Returns
    ``(deltas, from_start)`` with ``deltas`` the points ``delta_r .. delta_K``
    (``delta_K`` the returned one) of the element's last chart, and ``from_start`` whether
    ``delta_r`` is the element's first iterate (iteration 0, the chart's base is the
    layer's starting values, which then carry their graph). None when the returned point
    is not a recorded iterate or the record has a gap."""
    keys = sorted(points)
    ends = [k for k in keys if np.array_equal(points[k], returned)]
    if not ends:
        return None
    end = ends[-1]
    zero = [k for k in keys if k <= end and not np.any(points[k])]
    if not zero:
        return None
    first = zero[-1]  # the last chart's base (a re-solve records delta = 0 first)
    if steps is not None:
        first = max(first, end - steps)
    wanted = list(range(first, end + 1))
    if any(k not in points for k in wanted):
        return None
    return ([np.asarray(points[k], dtype=np.float64) for k in wanted], first == 0,
            zero[-1] == 0)


def attach_unrolled_gradient(objective, start: list[torch.Tensor], base: list[torch.Tensor],
                             plans: dict[int, tuple[list[np.ndarray], bool, bool]],
                             rule: StepRule | None = None) -> float:
    """Give the optim vars of the elements in ``plans`` (row -> :func:`replay_plan`) the
    replay's derivative, keeping their values (see the module docstring); ``rule``: the
    damping of the first chart's steps (None: none).

    ``start``: the optim vars' tensors as the layer received them (with their graph);
    ``base``: the last chart's base values (detached); a plan from the element's first
    iterate takes the base from ``start`` instead. Returns the largest
    relative mismatch between a recorded step and its replay (0.0 when none)."""
    if not plans:
        return 0.0
    vars_ = list(objective.optim_vars.values())
    bsz = objective.batch_size
    rows = sorted(plans)
    chart = TangentChart(objective)
    written = [v.tensor for v in vars_]  # the values to return (the implicit step's graph)
    dtype, device = chart.base[0].dtype, chart.base[0].device
    with_start = torch.zeros(bsz, dtype=torch.bool)
    for b in rows:
        with_start[b] = plans[b][1]
    mixed = []
    for s, bs in zip(start, base, strict=True):
        s = s.to(dtype).expand(bsz, *s.shape[1:])
        bs = bs.to(dtype=dtype, device=device)
        mask = with_start.view(-1, *([1] * (bs.ndim - 1))).to(device)
        mixed.append(torch.where(mask, s, bs.detach()))
    chart.base = mixed
    n_steps = {b: len(plans[b][0]) - 1 for b in rows}
    total = max(n_steps.values())
    delta = torch.zeros(bsz, chart.dim, dtype=dtype, device=device)
    for b in rows:  # each row's replay starts at its first point, ends aligned at ``total``
        delta[b] = torch.as_tensor(plans[b][0][0], dtype=dtype)
    rows_t = torch.as_tensor(rows)
    damped = [b for b in rows if plans[b][2]] if rule is not None else []
    worst = 0.0
    try:
        with torch.enable_grad():
            delta = delta.requires_grad_(True)
            for t in range(total):
                active = [b for b in rows if t >= total - n_steps[b]]
                d = _gauss_newton_direction(objective, chart, delta, rows_t, rule, damped)
                alpha = torch.zeros(bsz, dtype=dtype, device=device)
                for b in active:
                    j = t - (total - n_steps[b])
                    rec = torch.as_tensor(plans[b][0][j + 1] - plans[b][0][j], dtype=dtype)
                    db = d[b].detach()
                    a = float((rec @ db) / (db @ db)) if float(db @ db) > 0 else 0.0
                    miss = float((rec - a * db).norm() / rec.norm().clamp_min(1e-300))
                    worst = max(worst, miss if float(rec.norm()) > 0 else 0.0)
                    alpha[b] = a
                on = torch.zeros(bsz, 1, dtype=torch.bool, device=device)
                on[active] = True
                delta = torch.where(on, delta + alpha.unsqueeze(1) * d, delta)
            chart.apply(delta)
            replayed = [v.tensor for v in vars_]
    finally:
        for v, w in zip(vars_, written, strict=True):
            v.update(w)
    on = torch.zeros(bsz, dtype=torch.bool, device=device)
    on[rows] = True
    for v, w, r in zip(vars_, written, replayed, strict=True):
        mask = on.view(-1, *([1] * (w.ndim - 1)))
        v.update(torch.where(mask, w.detach() + (r - r.detach()), w))
    return worst


def _gauss_newton_direction(objective, chart: TangentChart, delta: torch.Tensor,
                            rows: torch.Tensor, rule: StepRule | None = None,
                            damped: Sequence[int] = ()) -> torch.Tensor:
    """``-(J'J + D)^-1 J'e`` (B, n) at ``delta`` for ``rows`` (zero elsewhere), with its
    graph: ``e`` the weighted errors, ``J`` their Jacobian in ``delta`` (one batched
    backward pass per error row, with graph), ``D`` the damping of ``rule`` for the rows
    in ``damped``, zero for the others."""
    chart.apply(delta)
    analytic = _analytic_jacobian(objective, chart)
    if analytic is not None:
        e, jac = analytic[0], analytic[1][rows]
    else:
        e = weighted_error(objective, chart.sources)
        m = e.shape[1]
        seeds = torch.eye(m, dtype=e.dtype, device=e.device).unsqueeze(1).expand(m, *e.shape)
        try:
            (jt,) = torch.autograd.grad(e, delta, seeds, retain_graph=True,
                                        create_graph=True, is_grads_batched=True,
                                        allow_unused=True)
        except (RuntimeError, NotImplementedError):  # no vmap rule: one pass per row
            jt = torch.stack([_or_zeros(torch.autograd.grad(
                e, delta, s, retain_graph=True, create_graph=True, allow_unused=True)[0],
                delta) for s in seeds])
        jt = _or_zeros(jt, delta.expand(m, *delta.shape))
        jac = jt.permute(1, 0, 2)[rows]  # (R, m, n)
    er = e[rows].unsqueeze(2)
    h = jac.transpose(1, 2) @ jac
    if rule is not None and damped:
        on = torch.as_tensor([int(b) in set(damped) for b in rows.tolist()])
        h = torch.where(on.view(-1, 1, 1).to(h.device), rule.damped(h), h)
    g = jac.transpose(1, 2) @ er
    d = torch.zeros_like(delta)
    d = d.index_put((rows,), -torch.linalg.solve(h, g).squeeze(2))
    return d


def _analytic_jacobian(objective, chart: TangentChart
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The weighted errors (B, m) and their dense Jacobian (B, m, n) in the chart's
    coordinates at the chart's current point, with their graph, from the cost functions'
    own Jacobians (Theseus' ``weighted_jacobians_error``, what its unrolled Gauss-Newton
    steps differentiate), rows in :func:`~pounce_theseus.compat.weighted_error`'s order.
    None unless every optim var retracts as a Vector (chart coordinates are then Theseus'
    perturbations), no cost function is robust and each names its variables once; the
    caller then differentiates the errors by autograd."""
    if not all(has_vector_retract(v) for v in chart.vars):
        return None
    bsz, n = objective.batch_size, chart.dim
    errs, jacs = [], []
    for cost_fns, ev in cost_function_groups(objective, chart.sources):
        names = [[v.name for v in cf.optim_vars] for cf in cost_fns]
        if isinstance(ev, th.RobustCostFunction) or any(len(set(x)) != len(x) for x in names):
            return None
        k = len(cost_fns)
        js, err = weighted_jacobians_error(ev)
        dim = err.shape[-1]
        err = err.expand(k * bsz, dim)
        errs.append(err.reshape(k, bsz, dim).transpose(0, 1).reshape(bsz, k * dim))
        if not js:
            jacs.append(err.new_zeros(bsz, k * dim, n))
            continue
        jac = torch.cat([j.expand(k * bsz, dim, j.shape[-1]) for j in js], dim=2)
        cols = torch.as_tensor(np.stack([
            np.concatenate([np.arange(chart.offsets[x].start, chart.offsets[x].stop)
                            for x in row]) for row in names]), device=err.device)
        index = cols.view(k, 1, 1, -1).expand(k, bsz, dim, cols.shape[1])
        dense = err.new_zeros(k, bsz, dim, n).scatter(3, index, jac.reshape(k, bsz, dim, -1))
        jacs.append(dense.transpose(0, 1).reshape(bsz, k * dim, n))
    if not errs:
        return None
    return torch.cat(errs, dim=1), torch.cat(jacs, dim=1)


def _or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g
