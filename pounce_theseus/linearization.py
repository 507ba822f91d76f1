"""Theseus' own linearisation of a least-squares objective, on the NLP's Hessian pattern.

At a point ``delta`` of the tangent chart, every cost function's weighted error ``e_k`` and
analytic Jacobians come from Theseus' ``weighted_jacobians_error`` (one call per
vectorised schema; for a ``RobustCostFunction`` both rescaled by ``sqrt(rho'(|e|^2))``,
Theseus' iteratively-reweighted linearisation). Stacked they are ``A`` and ``-b`` of
``th.SparseLinearization``, and give:

- the gradient of ``f = sum_k 1/2 rho_k(|e_k|^2)`` (``1/2 |weighted error|^2``): ``A'(-b)``,
  exact (``d/dx 1/2 rho(|e|^2) = rho' J'e``);
- the Gauss-Newton Hessian ``A'A``, what LM+CHOLMOD factors each iteration, optionally
  with a robust loss' own curvature (:func:`robust_curvature_ratio`): for
  ``f_k = 1/2 rho(|e|^2)`` the exact Hessian is ``rho' (J'J + sum_i e_i hess e_i)
  + 2 rho'' (J'e)(J'e)'``, and the last, rank-one, term is added per cost function where
  its block stays positive semidefinite (``rho'' <= 0`` for Theseus' losses);
- per cost function, the exact Hessian of its term ``f_k`` in its own variables (``D``
  tangent coordinates, 12 for an SE3 edge): one gradient with graph and ``D`` seeded
  products through the vectorised cost function, a cost independent of the graph's
  colouring. A ``th.Between`` of two Lie-group variables (robust or not) takes ``D / 2``
  products through its second variable alone (:func:`_between_hessian`). For the
  polish's Newton steps (``exact_for(..., differenced=True)``) the same blocks come from
  central differences of Theseus' analytic gradient instead (:func:`_differenced_hessian`:
  one evaluation of the Jacobians at ``4 D + 1`` stacked points, no backward pass;
  ~1e-11 relative on SE2 graphs, ~1e-10 on SE3).

Blocks are scattered onto the pattern (:class:`~pounce_theseus.structure.HessianPattern`)
by index maps built once. Theseus' Jacobians are with respect to a perturbation ``eps`` at
the point (``x (+) eps``); chart coordinates enter through the right Jacobian of exp of
each Lie-group variable, ``J_delta = J_eps Jr(delta)`` and ``H_delta = Jr' H_eps Jr``. The
latter drops ``g_eps . d^2 eps / d delta^2``, which vanishes at ``delta = 0`` (so the
Hessian the backward forms at the solution is exact) and with the gradient.
"""

from __future__ import annotations

import numpy as np
import theseus as th
import torch

from .chart import EXP_GROUPS, bracket_matrix
from .compat import (
    cost_function_groups,
    differentiable_jacobians,
    error_metric,
    is_least_squares,
    linearized_cost,
    rows_of,
    weighted_jacobians_error,
)
from .hessian import BatchedVjp

__all__ = ["CostLinearization", "LinearizedPoint", "robust_curvature_ratio"]

# A cost function's exact block counts as positive semidefinite when its smallest
# eigenvalue is at least -PSD_RTOL times its largest in magnitude (rounding of a
# rank-deficient J'J block).
PSD_RTOL = 1e-9
# Step of the fourth-order central differences of :func:`_differenced_hessian` (tangent
# coordinates at the point). Largest error relative to the largest entry against the
# backward pass's blocks, robust SE2 / SE3 100-pose graphs: 2.5e-8 / 3e-8 at 1e-3,
# 2e-10 / 2e-10 at 3e-4, 3e-12 / 2e-10 at 1e-4 (SE3's rounding floor), 6e-12 / 2e-10 at
# 3e-5.
DIFFERENCE_STEP = 1e-4


def robust_curvature_ratio(ev, s: torch.Tensor) -> torch.Tensor | None:
    """``2 rho''(s) / rho'(s)`` of a ``th.RobustCostFunction`` (or
    ``th.GNCRobustCostFunction``) ``ev`` at squared norms ``s`` (rows, c), radius
    ``r = exp(log_loss_radius)`` (rows or 1, 1), in closed form for Theseus' losses
    (``rho`` as in ``theseus/core/robust_loss.py``, ``rho'`` its ``linearize``):

    - Welsch ``r - r exp(-s / r)``: ``-2 / r``;
    - Huber (``s`` up to ``r``, then ``2 sqrt(r s) - r``) and Hinge (0 up to ``r``, then
      ``sqrt(s) - sqrt(r)``): 0 up to ``r``, then ``-1 / s``;
    - Geman-McClure ``mu r s / (mu r + s)``: ``-4 / (mu r + s)``.

    None for any other cost function or loss (subclasses included: they may redefine
    ``rho``)."""
    kind = type(ev)
    if kind is not th.RobustCostFunction and kind is not th.GNCRobustCostFunction:
        return None
    loss = type(ev.loss)
    r = ev.log_loss_radius.tensor.exp().reshape(-1, 1)
    if loss is th.WelschLoss:
        return (-2.0 / r).expand_as(s)
    if loss is th.HuberLoss or loss is th.HingeLoss:
        return torch.where(s > r, -1.0 / s.clamp(min=torch.finfo(s.dtype).tiny), 0.0)
    if loss is th.GemanMcClureLoss and kind is th.GNCRobustCostFunction:
        mu = ev.gnc_control_val.tensor.reshape(-1, 1)
        return -4.0 / (mu * r + s)
    return None


def _block_scatter(cols: np.ndarray, n: int, hess_key: np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For blocks (K, D, D) over the columns ``cols`` (K, D): the flat entries on or below
    the diagonal (``keep``) and their pattern positions (``pos``)."""
    d = cols.shape[1]
    gi = cols[:, :, None].repeat(d, axis=2)
    gj = cols[:, None, :].repeat(d, axis=1)
    keep = (gi >= gj).reshape(-1)
    key = (gj * n + gi).reshape(-1)[keep]
    return torch.as_tensor(np.flatnonzero(keep)), torch.as_tensor(np.searchsorted(hess_key, key))


class _GroupLayout:
    """Index maps of one group of cost functions (a vectorised schema): their tangent
    columns, where their Lie-group variables' tangent maps sit, and where their ``D x D``
    blocks land on the Hessian pattern."""

    def __init__(self, cost_fns: list, chart, hess_key: np.ndarray, bsz: int):
        offs = chart.offsets
        first = cost_fns[0]
        self.k = len(cost_fns)
        self.dofs = [v.dof() for v in first.optim_vars]
        self.d = sum(self.dofs)
        cols = np.stack([
            np.concatenate([np.arange(offs[v.name].start, offs[v.name].stop)
                            for v in cf.optim_vars]) if self.dofs else np.zeros(0, np.int64)
            for cf in cost_fns
        ]).astype(np.int64)  # (K, D)
        self.cols = torch.as_tensor(cols.reshape(-1))
        where = {}
        for g, ks in enumerate(chart.groups):
            for pos, k in enumerate(ks):
                where[chart.vars[k].name] = (g, pos)
        # per slot: None (Vector-like) or (group, rows into the group's maps (K * B))
        self.slot_maps: list[tuple[int, torch.Tensor] | None] = []
        for s in range(len(self.dofs)):
            found = [where.get(list(cf.optim_vars)[s].name) for cf in cost_fns]
            if found[0] is None:
                self.slot_maps.append(None)
                continue
            pos = torch.as_tensor([f[1] for f in found])
            rows = (pos[:, None] * bsz + torch.arange(bsz)).reshape(-1)
            self.slot_maps.append((found[0][0], rows))
        self.keep, self.pos = _block_scatter(cols, chart.dim, hess_key)
        # the same scatter on the flat blocks (K * B * D * D, cost-function-major) into
        # the flat values (B * nnz): source and target of each kept entry, element-major
        dd = self.d * self.d
        keep, pos = self.keep.numpy(), self.pos.numpy()
        b = np.arange(bsz)[:, None]
        self.flat_src = torch.as_tensor(((keep // dd) * bsz + b) * dd + keep % dd).reshape(-1)
        self.flat_dst = torch.as_tensor(b * len(hess_key) + pos).reshape(-1)
        self.slot_cols = np.cumsum([0, *self.dofs])


class CostLinearization:
    """Theseus' linearisation of one objective on one problem's pattern (see the module
    docstring): layouts built on first use, a :class:`LinearizedPoint` per point."""

    def __init__(self, structure):
        self.chart = structure.chart
        self.hess = structure.hess
        h = structure.hess
        self._hess_key = h.cols.astype(np.int64) * structure.n + h.rows.astype(np.int64)
        self._layouts: dict[tuple, list[_GroupLayout]] = {}
        self.vjp = BatchedVjp()
        # per retract group: its columns (member-major) and its diagonal blocks' scatter
        self.group_cols = self.chart.group_columns()
        self.group_scatter = [
            _block_scatter(c.numpy().reshape(len(ks), -1), structure.n, self._hess_key)
            for c, ks in zip(self.group_cols, self.chart.groups, strict=True)
        ]

    @staticmethod
    def applies(structure) -> bool:
        """An unconstrained least-squares objective over Vector-like and exp-chart
        Lie-group variables, each cost function's variables distinct."""
        chart = structure.chart
        obj = chart.objective
        if structure.constraints or not chart.has_tangent_maps or not is_least_squares(obj):
            return False
        return all(len({v.name for v in cf.optim_vars}) == len(list(cf.optim_vars))
                   for cf in obj.cost_functions.values())

    def layouts(self, groups: list) -> list[_GroupLayout]:
        obj = self.chart.objective
        key = (obj.vectorized, obj.batch_size, tuple(len(c) for c, _ in groups))
        if key not in self._layouts:
            self._layouts[key] = [_GroupLayout(cfs, self.chart, self._hess_key, obj.batch_size)
                                  for cfs, _ in groups]
        return self._layouts[key]

    def at(self, delta: torch.Tensor, robust_errors: bool = False,
           carried: LinearizedPoint | None = None, jacobians: bool = False
           ) -> LinearizedPoint:
        """The linearisation at ``delta`` (B, n); sets the optim vars there.
        ``robust_errors``: keep each robust cost function's inner weighted error from the
        linearisation, for ``gauss_newton(robust_curvature=True)``. ``carried``: a
        linearisation at the same points taken in the chart before it was re-centred (see
        :class:`LinearizedPoint`). ``jacobians``: the gradient will be asked, so the error
        metric comes from the Jacobians' evaluation (one evaluation of the errors)."""
        return LinearizedPoint(self, delta, robust_errors, carried, jacobians)


class LinearizedPoint:
    """Objective, gradient and Hessian blocks at one point, each computed once, on
    first request (the optim vars are set back to this point when another was set in
    between). Built with ``carried``, a linearisation at the same points in the chart
    before it was re-centred there, it takes that one's error metric, gradient with
    respect to perturbations at the points and weighted Jacobians (none of which depends
    on the chart) instead of evaluating them again."""

    def __init__(self, lin: CostLinearization, delta: torch.Tensor,
                 robust_errors: bool = False, carried: LinearizedPoint | None = None,
                 jacobians: bool = False):
        self.lin, self.delta = lin, delta.detach()
        self.robust_errors = robust_errors
        self.bsz, self.n = delta.shape
        self.at_base = not bool(self.delta.any())
        self._activate(force=True)
        self._grad = self._grad_eps = self._gn_blocks = self._exact = self._f = None
        self._gn: dict[bool, torch.Tensor] = {}
        # per call of gauss_newton(robust_curvature=True): the share of robust blocks kept
        self.robust_kept: float | None = None
        self._jacobians: list[torch.Tensor | None] = []
        # per group, a robust cost function's inner weighted error (robust_errors) or None
        self._inner_errors: list[torch.Tensor | None] = []
        if carried is not None and carried._f is not None:
            self._f = carried._f
        elif jacobians and (carried is None or carried._grad_eps is None):
            self._linearize(metric=True)
        # (a carried linearisation's point is in the chart before the re-centring: what it
        # has not evaluated is evaluated here, at this point)
        if carried is not None and carried._grad_eps is not None:
            self._grad_eps, self._jacobians = carried._grad_eps, carried._jacobians
            self._inner_errors = (carried._inner_errors if carried.robust_errors
                                  else self._robust_inner_errors())
            self._chart_gradient()

    @property
    def f(self) -> torch.Tensor:
        """The error metric (B,) at the point (from the Jacobians' evaluation when the
        linearisation was built for its gradient, else evaluated on first request)."""
        if self._f is None:
            self._activate()
            with torch.no_grad():
                self._f = self._metric([ev.weighted_error() for _, ev in self.groups])
        return self._f

    def _metric(self, errs: list[torch.Tensor]) -> torch.Tensor:
        """The objective's error metric (B,) from each group's weighted errors."""
        parts = [e.expand(len(c) * self.bsz, -1).reshape(len(c), self.bsz, -1)
                 .transpose(0, 1).reshape(self.bsz, -1)
                 for (c, _), e in zip(self.groups, errs, strict=True)]
        return error_metric(self.lin.chart.objective, torch.cat(parts, dim=1))

    def _robust_inner_errors(self) -> list[torch.Tensor | None]:
        """Per group, a robust cost function's inner weighted error (with
        ``robust_errors``) or None; the optim vars at this point."""
        with torch.no_grad():
            return [ev.cost_function.weighted_error() if self.robust_errors
                    and isinstance(ev, th.RobustCostFunction) else None
                    for _, ev in self.groups]

    def _activate(self, force: bool = False) -> None:
        chart = self.lin.chart
        if not force and getattr(chart, "_linearized_at", None) is self:
            return
        if self.at_base:
            # base (+) 0 is the base (bitwise, SE2/SE3 x exp(0) = x) and the tangent maps
            # are the identity: no retract
            chart.restore()
            chart.sources = {}
            self.maps = []
        else:
            self.maps = chart.apply_with_maps(self.delta)
        self.groups = cost_function_groups(chart.objective, chart.sources)
        self.layouts = self.lin.layouts(self.groups)
        chart._linearized_at = self

    def _slot_maps(self, lay: _GroupLayout) -> list[torch.Tensor | None] | None:
        """Per slot, the tangent maps (K * B, dof, dof) of its variables (None: identity,
        a Vector-like slot); None at the chart's base or when every slot is Vector-like."""
        if self.at_base or all(m is None for m in lay.slot_maps):
            return None
        return [None if m is None else self.maps[m[0]][m[1]] for m in lay.slot_maps]

    def _linearize(self, metric: bool = False) -> None:
        """Gradient and weighted Jacobians (per group (K * B, rows, D)) from the analytic
        Jacobians (with ``metric``, the error metric ``f`` from the same evaluation)."""
        self._activate()
        b = self.bsz
        grad = self.delta.new_zeros(b, self.n)
        jacobians, inner, errs = [], [], []
        keep_inner = self.robust_errors
        with torch.no_grad():
            for (_, ev), lay in zip(self.groups, self.layouts, strict=True):
                rows = lay.k * b
                if lay.d == 0:
                    jacobians.append(None)
                    errs.append(ev.weighted_error() if metric else None)
                    inner.append(ev.cost_function.weighted_error() if keep_inner
                                 and isinstance(ev, th.RobustCostFunction) else None)
                    continue
                jacs, err, weighted, inner_err = linearized_cost(ev)
                errs.append(weighted)
                inner.append(inner_err if keep_inner else None)
                jac = torch.cat([j.expand(rows, -1, -1) for j in jacs], dim=2)
                g = (jac * err.expand(rows, -1).unsqueeze(-1)).sum(1)
                grad.index_add_(1, lay.cols, _element_major(g, lay.k, b))
                jacobians.append(jac)
            if metric:
                self._f = self._metric(errs)
        self._grad_eps, self._jacobians, self._inner_errors = grad, jacobians, inner
        self._chart_gradient()

    def _chart_gradient(self) -> None:
        """The gradient in chart coordinates from the one with respect to perturbations at
        the point: ``Jr' g`` per member."""
        grad = self._grad_eps
        if self.at_base:
            self._grad = grad
            return
        self._grad = grad.clone()
        for cols, jr, ks in zip(self.lin.group_cols, self.maps, self.lin.chart.groups,
                                strict=True):
            g = self._members(grad, cols, len(ks))
            gd = (jr.transpose(1, 2) @ g.unsqueeze(-1)).squeeze(-1)
            self._grad[:, cols] = _element_major(gd, gd.shape[0] // self.bsz, self.bsz)

    def _gauss_newton_blocks(self) -> list[torch.Tensor]:
        """Per group, each cost function's J'J (K * B, D, D) at the point."""
        if self._gn_blocks is None:
            if self._grad is None:
                self._linearize()
            self._gn_blocks = [
                self.delta.new_zeros(lay.k * self.bsz, 0, 0) if j is None
                else j.transpose(1, 2) @ j
                for j, lay in zip(self._jacobians, self.layouts, strict=True)]
        return self._gn_blocks

    def _members(self, values: torch.Tensor, cols: torch.Tensor, k: int) -> torch.Tensor:
        """(B, n) -> the pieces (k * B, dof) of a retract group of k members, member-major."""
        return values[:, cols].view(self.bsz, k, -1).transpose(0, 1).reshape(k * self.bsz, -1)

    def _chart_curvature(self, elements: torch.Tensor | None = None
                         ) -> torch.Tensor | None:
        """Pattern values of the chart's curvature term (None at the base); with
        ``elements`` (batch indices) evaluated for those elements only (zero elsewhere)."""
        if self.at_base or not self.maps:
            return None
        if self._grad is None:
            self._linearize()
        grads = [self._members(self._grad_eps, cols, len(ks))
                 for cols, ks in zip(self.lin.group_cols, self.lin.chart.groups, strict=True)]
        rows = None if elements is None else [
            _member_rows(len(ks), self.bsz, elements) for ks in self.lin.chart.groups]
        hs = self.lin.chart.exp_curvature(self.delta, grads, self.lin.vjp, rows)
        vals = self.delta.new_zeros(self.bsz, self.lin.hess.nnz)
        for g, (h, (keep, pos), ks) in enumerate(zip(hs, self.lin.group_scatter,
                                                     self.lin.chart.groups, strict=True)):
            if rows is not None:
                h = h.new_zeros(len(ks) * self.bsz, *h.shape[1:]).index_copy_(0, rows[g], h)
            vals.index_add_(1, pos, _element_major(h, len(ks), self.bsz)[:, keep])
        return vals

    def gradient(self) -> torch.Tensor:
        """grad_delta f (B, n)."""
        if self._grad is None:
            self._linearize()
        return self._grad

    def gauss_newton(self, robust_curvature: bool = False) -> torch.Tensor:
        """Pattern values (B, nnz) of Theseus' A'A in chart coordinates; with
        ``robust_curvature``, plus each robust cost function's ``2 rho'' (J'e)(J'e)'``
        where its block stays positive semidefinite (module docstring)."""
        if robust_curvature not in self._gn:
            if self._grad is None:
                self._linearize()
            vals = self.delta.new_zeros(self.bsz, self.lin.hess.nnz)
            kept = total = 0
            for g, ((_, ev), j, lay) in enumerate(zip(self.groups, self._jacobians,
                                                      self.layouts, strict=True)):
                if j is None:
                    continue
                maps = self._slot_maps(lay)
                if maps is not None:  # J in chart coordinates: J_eps T, T blockdiag
                    c = lay.slot_cols
                    j = torch.cat([j[:, :, c[i]:c[i + 1]] if t is None
                                   else j[:, :, c[i]:c[i + 1]] @ t
                                   for i, t in enumerate(maps)], dim=2)
                h = j.transpose(1, 2) @ j
                if robust_curvature:
                    h, ok = self._with_robust_curvature(ev, g, j, h)
                    if ok is not None:
                        kept, total = kept + int(ok.sum()), total + ok.numel()
                _scatter_flat(vals, h, lay)
            self._gn[robust_curvature] = vals
            if robust_curvature:
                self.robust_kept = kept / total if total else None
        return self._gn[robust_curvature]

    def _with_robust_curvature(self, ev, group: int, j: torch.Tensor, h: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``h = j'j`` (rows, D, D) of a group plus ``2 rho'' (J'e)(J'e)'`` per cost
        function where the sum stays positive semidefinite (smallest eigenvalue at least
        ``-PSD_RTOL`` times the larger of its largest magnitude and ``h``'s largest
        diagonal entry; and which did); ``h`` and None
        where ``ev``'s loss has no closed-form ``rho''``. ``j`` is Theseus' rescaled
        Jacobian ``sqrt(rho') J`` (per error entry with ``flatten_dims``, where each entry
        is robustified alone: ``sum_i 2 rho''_i e_i^2 J_i'J_i``)."""
        if not isinstance(ev, th.RobustCostFunction):
            return h, None
        e = self._inner_errors[group]
        if e is None:  # not kept (robust_errors unset): the optim vars set back here
            self._activate()
            with torch.no_grad():
                e = ev.cost_function.weighted_error()
        with torch.no_grad():
            e = e.expand(j.shape[0], -1)
            if ev.flatten_dims:
                ratio = robust_curvature_ratio(ev, e * e)
                if ratio is None:
                    return h, None
                term = (j * (ratio * e * e).unsqueeze(-1)).transpose(1, 2) @ j
            else:
                ratio = robust_curvature_ratio(ev, (e * e).sum(1, keepdim=True))
                if ratio is None:
                    return h, None
                w = (j * e.unsqueeze(-1)).sum(1)  # sqrt(rho') J'e
                term = ratio.reshape(-1, 1, 1) * w.unsqueeze(2) * w.unsqueeze(1)
            hn = h + term
            # h + term = j' (I + diag(ratio e^2)) j, or j' (I + ratio e e') j unflattened:
            # positive semidefinite where that middle matrix is (1 + ratio e_i^2 >= 0, or
            # 1 + ratio |e|^2 >= 0); the other blocks are checked by their eigenvalues
            # (relative to J'J too: a block the term cancels (a Huber or Hinge loss past
            # its radius, flattened: f linear in |e_i|) is zero up to rounding)
            if ev.flatten_dims:
                ok = (1.0 + ratio * e * e >= 0).all(1)
            else:
                ok = (1.0 + ratio.reshape(-1) * (e * e).sum(1)) >= 0
            check = (~ok).nonzero().squeeze(1)
            if check.numel():
                lam = torch.linalg.eigvalsh(hn[check])
                scale = torch.maximum(lam.abs().amax(1),
                                      h[check].diagonal(dim1=1, dim2=2).amax(1))
                ok[check] = lam[:, 0] >= -PSD_RTOL * scale
        return torch.where(ok[:, None, None], hn, h), ok

    def exact_blocks(self) -> list[torch.Tensor]:
        """Per group, each cost function's exact Hessian block (K * B, D, D) in chart
        coordinates (module docstring)."""
        if self._exact is None:
            self._activate()
            self._exact = [self._group_hessian(ev, lay)
                           for (_, ev), lay in zip(self.groups, self.layouts, strict=True)]
        return self._exact

    def _group_hessian(self, ev, lay: _GroupLayout, rows: int | None = None,
                       differenced: bool = False) -> torch.Tensor:
        """Each cost function's exact block (rows, D, D) of the group ``ev``, ``rows`` its
        variables' rows (all: ``K * B``); ``differenced``: by central differences of
        Theseus' analytic gradient where it is differentiable (:func:`_differenced_hessian`)."""
        rows = lay.k * self.bsz if rows is None else rows
        if lay.d == 0:
            return self.delta.new_zeros(rows, 0, 0)
        pair = _between_pair(ev)
        if pair is not None:
            return _between_hessian(ev, pair, rows, self.lin.vjp, differenced)
        slots = list(ev.optim_vars)
        if differentiable_jacobians(ev):
            if differenced:
                h, _ = _differenced_hessian(ev, list(range(len(slots))), rows)
            else:
                h, _ = _jacobian_hessian(ev, list(range(len(slots))), rows, self.lin.vjp)
            if h is not None:
                return h
        saved = [v.tensor for v in slots]
        try:
            with torch.enable_grad():
                eps = [self.delta.new_zeros(rows, dof).requires_grad_(True) for dof in lay.dofs]
                for v, t, e in zip(slots, saved, eps, strict=True):
                    base = v.copy()
                    base.update(t.expand(rows, *t.shape[1:]))
                    v.update(base.retract(e).tensor)
                we = ev.weighted_error().expand(rows, -1)
                fk = 0.5 * (we * we).sum()
                grads = torch.autograd.grad(fk, eps, create_graph=True, allow_unused=True)
                g = torch.cat([torch.zeros_like(e) if x is None else x
                               for x, e in zip(grads, eps, strict=True)], dim=1)
                seeds = torch.eye(lay.d, dtype=g.dtype).unsqueeze(1).expand(lay.d, rows, lay.d)
                h = torch.cat(self.lin.vjp(g, tuple(eps), seeds), dim=2)  # (D, rows, D)
        finally:
            for v, t in zip(slots, saved, strict=True):
                v.update(t)
        h = h.detach().transpose(0, 1)
        return 0.5 * (h + h.transpose(1, 2))

    def exact(self) -> torch.Tensor:
        """Pattern values (B, nnz) of hess f in chart coordinates."""
        return _plus(self._scatter(self.exact_blocks()), self._chart_curvature())

    def exact_for(self, elements: np.ndarray, chart_curvature: bool = True,
                  differenced: bool = False) -> torch.Tensor:
        """Pattern values (B, nnz) of hess f in chart coordinates for the batch elements
        ``elements`` (indices), zero for the others: each group's blocks and the chart's
        curvature evaluated on those elements' rows only (``compat.rows_of``). Without
        ``chart_curvature`` the chart's term is left out: it is linear in the gradient, so a
        Newton iteration without it still converges quadratically (the polish's exact
        blocks, ``BatchNlp``); at the chart's base it is zero. ``differenced``: the blocks
        by central differences of Theseus' analytic gradient (:func:`_differenced_hessian`,
        ~1e-11 relative: for Newton steps, not for the implicit gradient) unless the exact
        ones are already computed."""
        if self._exact is not None or (len(elements) == self.bsz and not differenced):
            if chart_curvature:
                return self.exact()
            return self._scatter(self.exact_blocks())
        self._activate()
        sel = torch.as_tensor(np.asarray(elements, dtype=np.int64))
        blocks = []
        for (_, ev), lay in zip(self.groups, self.layouts, strict=True):
            if lay.d == 0 or len(elements) == self.bsz:
                blocks.append(self._group_hessian(ev, lay, differenced=differenced))
                continue
            h = self.delta.new_zeros(lay.k * self.bsz, lay.d, lay.d)
            idx = _member_rows(lay.k, self.bsz, sel)
            with rows_of(ev, idx, lay.k * self.bsz):
                h.index_copy_(0, idx, self._group_hessian(ev, lay, rows=idx.numel(),
                                                          differenced=differenced))
            blocks.append(h)
        return _plus(self._scatter(blocks), self._chart_curvature(sel) if chart_curvature
                     else None)

    def convex(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pattern values (B, nnz) of the sum over cost functions of the exact block where
        it is positive semidefinite and the Gauss-Newton block elsewhere (so the sum is
        positive semidefinite), and per element whether any block was replaced."""
        gn_blocks = self._gauss_newton_blocks()
        out, replaced = [], torch.zeros(self.bsz, dtype=torch.bool)
        for h, g, lay in zip(self.exact_blocks(), gn_blocks, self.layouts, strict=True):
            if lay.d == 0:
                out.append(h)
                continue
            lam = torch.linalg.eigvalsh(h)
            bad = lam[:, 0] < -PSD_RTOL * lam.abs().amax(1)
            out.append(torch.where(bad[:, None, None], g, h))
            replaced |= bad.view(lay.k, self.bsz).any(0)
        return _plus(self._scatter(out), self._chart_curvature()), replaced

    def _scatter(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """Pattern values of blocks given at the point (per group (K * B, D, D)), mapped
        to chart coordinates (``T' H T``, T blockdiag over the slots)."""
        vals = self.delta.new_zeros(self.bsz, self.lin.hess.nnz)
        for h, lay in zip(blocks, self.layouts, strict=True):
            if lay.d:
                maps = self._slot_maps(lay)
                if maps is not None:
                    c = lay.slot_cols
                    h = torch.cat([h[:, :, c[i]:c[i + 1]] if t is None
                                   else h[:, :, c[i]:c[i + 1]] @ t
                                   for i, t in enumerate(maps)], dim=2)
                    h = torch.cat([h[:, c[i]:c[i + 1]] if t is None
                                   else t.transpose(1, 2) @ h[:, c[i]:c[i + 1]]
                                   for i, t in enumerate(maps)], dim=1)
                _scatter_flat(vals, h, lay)
        return vals


def _scatter_flat(vals: torch.Tensor, blocks: torch.Tensor, lay: _GroupLayout) -> None:
    """Add the kept entries of ``blocks`` (K * B, D, D) to the pattern values (B, nnz)."""
    vals.view(-1).index_add_(0, lay.flat_dst, blocks.reshape(-1)[lay.flat_src])


def _between_pair(ev) -> tuple | None:
    """``(v0, v1)`` when ``ev`` (a cost function or a vectorised one, possibly inside a
    ``th.RobustCostFunction``) is a ``th.Between`` whose two optimisation variables, in
    that order, are of one group of ``EXP_GROUPS``; else None."""
    cf = ev.cost_function if isinstance(ev, th.RobustCostFunction) else ev
    if not isinstance(cf, th.Between) or type(cf.v0) not in EXP_GROUPS:
        return None
    slots = list(ev.optim_vars)
    if len(slots) != 2 or slots[0] is not cf.v0 or slots[1] is not cf.v1:
        return None
    return cf.v0, cf.v1


def _perturbed(var, rows: int, eps: torch.Tensor) -> None:
    """Set ``var`` to its point (broadcast to ``rows``) retracted by ``eps`` (rows, dof)."""
    base = var.copy()
    base.update(var.tensor.expand(rows, *var.tensor.shape[1:]))
    var.update(base.retract(eps).tensor)


def _jacobian_hessian(ev, slots: list[int], rows: int, vjp: BatchedVjp
                      ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The exact Hessian (rows, D, D) of ``f_k = 1/2 |weighted error|^2`` in the
    perturbations ``eps`` of ``ev``'s optim vars ``slots`` (``X exp(eps)``; the others held
    at their points) at ``eps = 0``, and the gradient ``g`` (rows, D) there, from ONE seeded
    backward pass through Theseus' analytic Jacobians (``ev`` passes
    :func:`~pounce_theseus.compat.differentiable_jacobians`); None for the Hessian where it
    came out non-finite.

    Theseus' ``J'e`` at ``X exp(eps)`` is the gradient in a perturbation ``tau`` there
    (``X exp(eps) exp(tau)``; for a robust cost ``rho' J'e`` (+ Theseus' 1e-20), whose
    derivative carries the ``2 rho''`` term); the gradient in ``eps`` is ``Jr(eps)' J'e``
    with ``Jr(eps) = I - 1/2 ad(eps) + O(eps^2)``, whose derivative adds ``M / 2`` (``M``
    the bracket matrix of ``J'e``, antisymmetric) to ``d(J'e)/d eps`` at ``eps = 0``. The
    exact Hessian is symmetric, so it is the symmetric part of ``d(J'e)/d eps``."""
    cvars = list(ev.optim_vars)
    saved = [v.tensor for v in cvars]
    try:
        with torch.enable_grad():
            eps = []
            for i in slots:
                e = saved[i].new_zeros(rows, cvars[i].dof()).requires_grad_(True)
                _perturbed(cvars[i], rows, e)
                eps.append(e)
            jacs, err = weighted_jacobians_error(ev)
            jac = torch.cat([jacs[i].expand(rows, -1, -1) for i in slots], dim=2)
            g = (jac * err.expand(rows, -1).unsqueeze(-1)).sum(1)  # (rows, D)
            d = g.shape[1]
            seeds = torch.eye(d, dtype=g.dtype).unsqueeze(1).expand(d, rows, d)
            h = torch.cat(vjp(g, tuple(eps), seeds), dim=2)  # (D, rows, D)
    finally:
        for v, t in zip(cvars, saved, strict=True):
            v.update(t)
    h = h.detach().transpose(0, 1)
    h = 0.5 * (h + h.transpose(1, 2))
    return (h if bool(torch.isfinite(h).all()) else None), g.detach()


def _differenced_hessian(ev, slots: list[int], rows: int, step: float = DIFFERENCE_STEP
                         ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """:func:`_jacobian_hessian`'s Hessian and gradient by central differences instead of a
    backward pass: Theseus' ``J'e`` (the gradient in a perturbation at ``X exp(eps)``) at
    ``eps = 0`` and ``eps = +-h e_k, +-2h e_k`` (``h = step``) for each of the ``D``
    coordinates of the slots ``slots``, from ONE evaluation of the Jacobians on the
    ``4 D + 1`` points stacked (``ev``'s variables tiled, ``compat.rows_of``). The
    fourth-order central difference ``(8 (g(h) - g(-h)) - (g(2h) - g(-2h))) / 12h`` is
    ``d(J'e)/d eps`` to O(h^4); its symmetric part the exact Hessian (see
    :func:`_jacobian_hessian`). None for the Hessian where it came out non-finite."""
    cvars = list(ev.optim_vars)
    dofs = [cvars[i].dof() for i in slots]
    d = sum(dofs)
    points = 4 * d + 1
    with torch.no_grad(), rows_of(ev, torch.arange(rows).repeat(points), rows):
        saved = [v.tensor for v in cvars]
        eye = torch.eye(d, dtype=saved[0].dtype, device=saved[0].device)
        # (points * rows, D), point-major: 0, +h e_k, -h e_k, +2h e_k, -2h e_k
        eps = torch.cat([eye.new_zeros(1, d), step * eye, -step * eye, 2 * step * eye,
                         -2 * step * eye]).repeat_interleave(rows, 0)
        try:
            c = 0
            for i, dof in zip(slots, dofs, strict=True):
                _perturbed(cvars[i], points * rows, eps[:, c:c + dof])
                c += dof
            jacs, err = weighted_jacobians_error(ev)
            jac = torch.cat([jacs[i].expand(points * rows, -1, -1) for i in slots], dim=2)
            g = (jac * err.expand(points * rows, -1).unsqueeze(-1)).sum(1).view(points, rows, d)
        finally:
            for v, t in zip(cvars, saved, strict=True):
                v.update(t)
    h = ((8.0 * (g[1:d + 1] - g[d + 1:2 * d + 1]) - (g[2 * d + 1:3 * d + 1] - g[3 * d + 1:]))
         / (12.0 * step)).permute(1, 2, 0)  # (rows, D, D)
    h = 0.5 * (h + h.transpose(1, 2))
    return (h if bool(torch.isfinite(h).all()) else None), g[0]


def _between_hessian(ev, pair: tuple, rows: int, vjp: BatchedVjp,
                     differenced: bool = False) -> torch.Tensor:
    """Exact Hessian blocks (rows, 2 d, 2 d) of ``f_k = 1/2 |weighted error|^2`` of a
    ``Between`` (``e = log(Z^-1 X0^-1 X1)``, robust or not) in the perturbations
    ``(a, b)`` of ``X0 exp(a)``, ``X1 exp(b)``, from d seeded products in ``b`` alone
    (through Theseus' analytic Jacobians, :func:`_jacobian_hessian`, where they are
    differentiable; else a double backward of the error).

    With ``D = X0^-1 X1`` and ``A = -Ad(D^-1)``, ``Z^-1 (X0 exp(a))^-1 X1 exp(b)`` equals
    ``Z^-1 D exp(A a) exp(b) = Z^-1 D exp(c)`` with ``c = A a + b + 1/2 [A a, b] + O(3)``
    (Baker-Campbell-Hausdorff), so ``f_k(a, b) = psi(c)`` with ``psi(c) = f_k(0, c)`` and,
    for ``H = hess psi`` and ``g = grad psi`` at 0 and ``M`` the bracket's matrix of ``g``
    (:func:`~pounce_theseus.chart.bracket_matrix`):
    ``H_aa = A' H A``, ``H_ab = A' (H + M / 2)``, ``H_bb = H``. ``differenced``: ``H`` and
    ``g`` by :func:`_differenced_hessian` where the Jacobians are differentiable."""
    v0, v1 = pair
    h = None
    if differentiable_jacobians(ev):
        h, g = (_differenced_hessian(ev, [1], rows) if differenced
                else _jacobian_hessian(ev, [1], rows, vjp))
    if h is None:
        h, g = _between_hessian_autograd(ev, v1, rows, vjp)
    with torch.no_grad():
        first, second = v0.copy(), v1.copy()
        first.update(v0.tensor.expand(rows, *v0.tensor.shape[1:]))
        second.update(v1.tensor.expand(rows, *v1.tensor.shape[1:]))
        a = -first.between(second).inverse().adjoint()
    at = a.transpose(1, 2)
    h_ab = at @ (h + 0.5 * bracket_matrix(type(v1), g))
    return torch.cat([torch.cat([at @ h @ a, h_ab], 2),
                      torch.cat([h_ab.transpose(1, 2), h], 2)], 1)


def _between_hessian_autograd(ev, v1, rows: int, vjp: BatchedVjp
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``H = hess psi`` and ``g = grad psi`` of :func:`_between_hessian` by a double
    backward of the weighted error in the perturbation of ``v1``."""
    t1 = v1.tensor
    d = v1.dof()
    try:
        with torch.enable_grad():
            eps = t1.new_zeros(rows, d).requires_grad_(True)
            _perturbed(v1, rows, eps)
            we = ev.weighted_error().expand(rows, -1)
            (g,) = torch.autograd.grad(0.5 * (we * we).sum(), eps, create_graph=True)
            seeds = torch.eye(d, dtype=g.dtype).unsqueeze(1).expand(d, rows, d)
            h = vjp.one(g, eps, seeds).detach().transpose(0, 1)
    finally:
        v1.update(t1)
    return 0.5 * (h + h.transpose(1, 2)), g.detach()


def _member_rows(k: int, bsz: int, elements: torch.Tensor) -> torch.Tensor:
    """The rows of the batch elements ``elements`` in a (k * B, ...) member-major stack."""
    return (torch.arange(k)[:, None] * bsz + elements[None, :]).reshape(-1)


def _plus(values: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    return values if extra is None else values + extra


def _element_major(t: torch.Tensor, k: int, bsz: int) -> torch.Tensor:
    """(K * B, ...) cost-function-major to (B, K * prod(...))."""
    return t.reshape(k, bsz, -1).transpose(0, 1).reshape(bsz, -1)
