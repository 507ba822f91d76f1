"""Three cheaper hand-overs inside a forward, none changing a number:

- the chart sets its retract-group variables' tensors without ``Variable.update``'s checks
  (``compat.set_tensor``), counting the update as Theseus does; a variable class that
  overrides ``update`` still gets its own;
- the first phase keeps the robust cost functions' inner errors with its Jacobians, so the
  polish's first point, carried across the re-centring, does not evaluate them again
  (``LinearizedPoint._robust_inner_errors``): solutions, iterations, errors and gradients
  bitwise those of evaluating them again;
- a linearisation at the chart's base sets the base values instead of retracting by zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401
from theseus.core.variable import Variable

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp
from pounce_theseus.chart import TangentChart
from pounce_theseus.compat import cost_function_groups
from pounce_theseus.linearization import LinearizedPoint
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


class _CountedSE2(th.SE2):
    """An SE2 whose class overrides ``update`` (here only passing it on)."""

    def update(self, data, batch_ignore_mask=None):
        super().update(data, batch_ignore_mask)


def test_chart_sets_tensors_without_update_checks(monkeypatch):
    obj, inputs, _, _ = synthetic_pose_graph(10, 3, dims=2, seed=4)
    obj.update(inputs)
    odd = _CountedSE2(tensor=inputs["VERTEX_SE2__1__batch"].clone(), name="odd")
    obj.add(th.Difference(odd, th.SE2(tensor=inputs["VERTEX_SE2__2__batch"].clone()),
                          th.ScaleCostWeight(torch.tensor(1.0, dtype=torch.float64))))
    chart = TangentChart(obj)
    delta = 1e-2 * torch.ones(3, chart.dim, dtype=torch.float64)
    counts = {v.name: v._num_updates for v in chart.vars}
    calls = []
    update = Variable.update
    mine = {id(v) for v in chart.vars}
    monkeypatch.setattr(Variable, "update", lambda self, *a, **k: (
        id(self) in mine and calls.append(self.name)) or update(self, *a, **k))
    chart.apply(delta)
    applied = {v.name: v.tensor.clone() for v in chart.vars}
    chart.apply_with_maps(delta)
    chart.restore()
    monkeypatch.undo()
    assert calls == ["odd"] * 3  # its own update, three times; no other variable's
    assert all(v._num_updates == counts[v.name] + 3 for v in chart.vars)
    for v in chart.vars:  # the values Theseus' retract gives, and the base back
        want = v.copy()
        want.update(chart.base[chart.vars.index(v)])
        assert torch.equal(applied[v.name], want.retract(delta[:, chart.offsets[v.name]]).tensor)
        assert torch.equal(v.tensor, chart.base[chart.vars.index(v)])


def _polished(monkeypatch, recompute: bool):
    calls = []
    inner = LinearizedPoint._robust_inner_errors

    def spy(self):
        calls.append(1)
        return inner(self)

    monkeypatch.setattr(LinearizedPoint, "_robust_inner_errors", spy)
    if recompute:  # the robust inner errors kept only in the polish, as before
        linearized = BatchNlp.linearized

        def old(self, delta, gradient=False):
            keep, self.gauss_newton_only = self.gauss_newton_only, self.robust_curvature
            try:
                return linearized(self, delta, gradient)
            finally:
                self.gauss_newton_only = keep

        monkeypatch.setattr(BatchNlp, "linearized", old)
    obj, inputs, poses, gt = synthetic_pose_graph(30, 3, dims=3, seed=2)
    opt = PounceOptimizer(obj)
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    sol, info = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                             optimizer_kwargs={"backward_mode": "implicit"})
    loss = sum(th.local(th.SE3(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True))
    (grad,) = torch.autograd.grad(loss.sum(), radius)
    monkeypatch.undo()
    x = torch.cat([t.detach().reshape(3, -1) for t in sol.values()], dim=1)
    return x, opt.last_solve["iterations"], info.last_err, grad, len(calls)


def test_polish_carries_the_inner_errors(monkeypatch):
    x, it, err, g, calls = _polished(monkeypatch, recompute=False)
    x0, it0, err0, g0, calls0 = _polished(monkeypatch, recompute=True)
    assert calls == 0 and calls0 >= 1
    assert torch.equal(x, x0)
    assert np.array_equal(it, it0)
    assert torch.equal(err, err0)
    assert torch.equal(g, g0)


def _retracting_activate(self, force=False):
    """``LinearizedPoint._activate`` as it was: every point through the retract."""
    chart = self.lin.chart
    if not force and getattr(chart, "_linearized_at", None) is self:
        return
    self.maps = chart.apply_with_maps(self.delta)
    self.groups = cost_function_groups(chart.objective, chart.sources)
    self.layouts = self.lin.layouts(self.groups)
    chart._linearized_at = self


@pytest.mark.parametrize("dims", [2, 3])
def test_linearization_at_the_base_skips_the_retract(monkeypatch, dims):
    """At ``delta = 0`` the linearisation sets the chart's base values (``x exp(0)`` is
    ``x`` bitwise) without a retract: error metric, gradient, Gauss-Newton values with the
    robust term and exact Hessian bitwise those through the retract."""
    obj, inputs, _, _ = synthetic_pose_graph(12, 3, dims=dims, seed=4)
    opt = PounceOptimizer(obj)
    with torch.no_grad():
        th.TheseusLayer(opt).forward(inputs)
    structure = opt._structure
    structure.chart.recenter()
    lin = structure.linearization
    zero = torch.zeros(3, structure.n, dtype=torch.float64)
    calls = []
    apply = TangentChart.apply_with_maps
    monkeypatch.setattr(TangentChart, "apply_with_maps",
                        lambda self, d: calls.append(1) or apply(self, d))
    fast = lin.at(zero, robust_errors=True)
    got = (fast.f, fast.gradient(), fast.gauss_newton(True), fast.exact())
    assert not calls
    monkeypatch.setattr(LinearizedPoint, "_activate", _retracting_activate)
    slow = lin.at(zero, robust_errors=True)
    want = (slow.f, slow.gradient(), slow.gauss_newton(True), slow.exact())
    monkeypatch.undo()
    assert calls
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
