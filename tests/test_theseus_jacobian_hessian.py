"""Exact Hessian blocks by one backward pass through Theseus' analytic Jacobians
(pounce_theseus/linearization.py ``_jacobian_hessian``): equal to the double backward of the
weighted error (the path taken for other cost functions) on robust (Welsch) SE2 and SE3
pose graphs, on and off the chart's base, and the outer gradient of the implicit backward
unchanged; the analytic path is refused where Theseus' Jacobians are not the error's
derivative."""

from __future__ import annotations

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus import linearization as lin_mod
from pounce_theseus.batch_nlp import ProblemStructure
from pounce_theseus.compat import differentiable_jacobians
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _blocks(obj, structure, delta, analytic: bool, monkeypatch) -> list[torch.Tensor]:
    """Every group's exact blocks at ``delta``; ``analytic`` False takes the double
    backward for every cost function."""
    if not analytic:
        monkeypatch.setattr(lin_mod, "differentiable_jacobians", lambda ev: False)
    try:
        pt = structure.linearization.at(delta)
        return [b.clone() for b in pt.exact_blocks()] + [pt.exact().clone()]
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("spread", [0.0, 0.05])
def test_analytic_blocks_equal_the_double_backward(dims, spread, monkeypatch):
    """At the inputs (the prior's error exactly zero) and at a spread-out point (every
    edge's and the prior's error nonzero, some Welsch edges concave), B = 3."""
    obj, inputs, _, _ = synthetic_pose_graph(12, 3, dims=dims)
    th.Vectorize(obj)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    assert all(differentiable_jacobians(ev) for _, ev in
               structure.linearization.at(structure.chart.zeros(3)).groups)
    x = np.random.default_rng(5).normal(size=(3, structure.n)) * spread
    delta = torch.as_tensor(x)
    got = _blocks(obj, structure, delta, True, monkeypatch)
    want = _blocks(obj, structure, delta, False, monkeypatch)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert (g - w).abs().max() <= 1e-10 * w.abs().max()
    # the second-order term is in them: they differ from Gauss-Newton's
    pt = structure.linearization.at(delta)
    assert (got[-1] - pt.gauss_newton()).abs().max() > 1e-6 * got[-1].abs().max()
    structure.chart.restore()


def test_analytic_blocks_for_some_elements(monkeypatch):
    """``exact_for`` (the slow elements' rows only) by the analytic path equals the double
    backward's on those elements and is zero on the others."""
    obj, inputs, _, _ = synthetic_pose_graph(10, 4, dims=2, seed=2)
    th.Vectorize(obj)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    delta = torch.as_tensor(np.random.default_rng(1).normal(size=(4, structure.n)) * 0.03)
    sel = np.array([1, 3])
    got = structure.linearization.at(delta).exact_for(sel)
    monkeypatch.setattr(lin_mod, "differentiable_jacobians", lambda ev: False)
    want = structure.linearization.at(delta).exact_for(sel)
    monkeypatch.undo()
    assert (got - want).abs().max() <= 1e-10 * want.abs().max()
    assert bool((got[[0, 2]] == 0).all()) and bool((got[sel] != 0).any())
    structure.chart.restore()


def _outer_gradient(dims: int, bsz: int) -> tuple[float, torch.Tensor]:
    obj, inputs, poses, gt = synthetic_pose_graph(20, bsz, dims=dims)
    group = th.SE3 if dims == 3 else th.SE2
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    layer = th.TheseusLayer(PounceOptimizer(obj))
    sol, info = layer.forward({**inputs, "log_loss_radius": radius},
                              optimizer_kwargs={"backward_mode": "implicit"})
    loss = sum(th.local(group(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True)).sum()
    (grad,) = torch.autograd.grad(loss, radius)
    return grad.item(), info.last_err


@pytest.mark.parametrize(("dims", "bsz"), [(2, 2), (3, 1)])
def test_outer_gradient_unchanged(dims, bsz, monkeypatch):
    """The implicit backward's gradient d loss / d log_loss_radius and the final errors
    with the analytic blocks equal the double backward's. The gradient (here a small
    difference of large terms: the graph's prior is weak) moves by 2e-5..1.5e-4 relative
    when the double backward's blocks are perturbed by random symmetric 1e-14 relative
    noise (measured); the analytic blocks move it by 1.2e-7 (SE2) and 1.9e-6 (SE3), so the
    bound is 1e-5, below rounding's own effect."""
    g, err = _outer_gradient(dims, bsz)
    monkeypatch.setattr(lin_mod, "differentiable_jacobians", lambda ev: False)
    g_ref, err_ref = _outer_gradient(dims, bsz)
    monkeypatch.undo()
    assert g != 0.0
    assert abs(g - g_ref) <= 1e-5 * abs(g_ref)
    assert torch.allclose(err, err_ref, rtol=1e-12, atol=0)


def test_refused_where_jacobians_are_not_the_derivative():
    """``th.Local`` under Theseus' ``fast_approx_local_jacobians`` (an identity Jacobian),
    a cost function of another kind, or a custom weight take the double backward."""
    x = th.SE3(name="x", dtype=torch.float64)
    target = th.SE3(name="t", dtype=torch.float64)
    w = th.ScaleCostWeight(torch.tensor(2.0, dtype=torch.float64))
    local = th.Local(x, target, w)
    assert differentiable_jacobians(local)
    assert differentiable_jacobians(th.RobustCostFunction(
        th.Between(x, target, th.SE3(dtype=torch.float64), w), th.WelschLoss,
        th.Vector(1, dtype=torch.float64)))
    th.set_global_params({"fast_approx_local_jacobians": True})
    try:
        assert not differentiable_jacobians(local)
    finally:
        th.set_global_params({"fast_approx_local_jacobians": False})
    assert differentiable_jacobians(local)
    v = th.Vector(2, name="v", dtype=torch.float64)
    assert not differentiable_jacobians(th.AutoDiffCostFunction(
        [v], lambda optim_vars, aux_vars: optim_vars[0].tensor ** 2, 2))

    class Weight(th.ScaleCostWeight):
        pass

    assert not differentiable_jacobians(th.Local(x, target, Weight(2.0)))
