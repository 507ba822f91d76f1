"""``compat.linearized_cost``: a cost function's weighted Jacobians and error, its
``weighted_error()`` and a robust one's inner weighted error from one evaluation of the
Jacobians equal what Theseus' own methods return, for plain, robust (flattened or not, GNC)
and vectorised cost functions; and the error metric a linearisation takes from it equals
the one from ``weighted_error()``."""

from __future__ import annotations

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus.batch_nlp import ProblemStructure
from pounce_theseus.compat import (
    accurate_se2_log_jacobian,
    cost_function_groups,
    linearized_cost,
    weighted_jacobians_error,
)
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS

F64 = dict(dtype=torch.float64)


def _cost(kind: str, flatten: bool, seed: int = 0):
    """A Between of two random SE2 poses (B = 3), plain, robust or GNC-robust."""
    g = torch.Generator().manual_seed(seed)
    x0 = th.SE2(tensor=th.SE2.rand(3, generator=g, **F64).tensor, name="x0")
    x1 = th.SE2(tensor=th.SE2.rand(3, generator=g, **F64).tensor, name="x1")
    meas = th.SE2(tensor=th.SE2.rand(3, generator=g, **F64).tensor, name="m")
    w = th.DiagonalCostWeight(th.Variable(0.5 + torch.rand(3, 3, generator=g, **F64),
                                          name="w"))
    cf = th.Between(x0, x1, meas, w, name="b")
    log_radius = th.Variable(torch.full((1, 1), -1.0, **F64), name="log_radius")
    if kind == "huber":
        return th.RobustCostFunction(cf, th.HuberLoss, log_radius, flatten_dims=flatten)
    if kind == "welsch":
        return th.RobustCostFunction(cf, th.WelschLoss, log_radius, flatten_dims=flatten)
    if kind == "gnc":
        mu = th.Variable(torch.full((1, 1), 1.5, **F64), name="mu")
        return th.GNCRobustCostFunction(cf, th.GemanMcClureLoss, log_radius, mu,
                                        flatten_dims=flatten)
    return cf


@pytest.mark.parametrize("kind", ["plain", "huber", "welsch", "gnc"])
@pytest.mark.parametrize("flatten", [False, True])
def test_linearized_cost_equals_theseus_methods(kind, flatten):
    cf = _cost(kind, flatten)
    jacs, err, weighted, inner = linearized_cost(cf)
    ref_jacs, ref_err = weighted_jacobians_error(cf)
    assert len(jacs) == len(ref_jacs) == 2
    for j, r in zip(jacs, ref_jacs, strict=True):
        assert torch.allclose(j, r, rtol=1e-14, atol=1e-15)
    assert torch.allclose(err, ref_err, rtol=1e-14, atol=1e-15)
    assert torch.allclose(weighted, cf.weighted_error(), rtol=1e-14, atol=1e-15)
    if kind == "plain":
        assert inner is None
    else:
        assert torch.allclose(inner, cf.cost_function.weighted_error(), rtol=1e-14,
                              atol=1e-15)
        assert not torch.allclose(weighted, inner)  # the robust metric is not the inner one


def test_vectorised_groups_and_linearisation_metric():
    """The vectorised schemas of a robust SE2 pose graph (B = 2), and the error metric of a
    linearisation taken with the Jacobians against the one from ``weighted_error()``, at a
    point off the chart's base."""
    obj, inputs, _, _ = synthetic_pose_graph(20, 2, dims=2, seed=3)
    th.TheseusLayer(th.GaussNewton(obj, max_iterations=1))  # vectorises the objective
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    groups = cost_function_groups(obj, None)
    assert any(isinstance(ev, th.RobustCostFunction) for _, ev in groups)
    for _, ev in groups:
        jacs, err, weighted, _ = linearized_cost(ev)
        ref_jacs, ref_err = weighted_jacobians_error(ev)
        for j, r in zip(jacs, ref_jacs, strict=True):
            assert torch.allclose(j, r, rtol=1e-14, atol=1e-15)
        assert torch.allclose(err, ref_err, rtol=1e-14, atol=1e-15)
        assert torch.allclose(weighted, ev.weighted_error(), rtol=1e-14, atol=1e-15)
    delta = 1e-2 * torch.randn(2, structure.n, generator=torch.Generator().manual_seed(0),
                               **F64)
    lin = structure.linearization
    with_jac = lin.at(delta, robust_errors=True, jacobians=True)
    plain = lin.at(delta, robust_errors=True)
    assert torch.allclose(with_jac.f, plain.f, rtol=1e-14, atol=0)
    assert torch.allclose(with_jac.gradient(), plain.gradient(), rtol=1e-13, atol=1e-13)
    assert torch.allclose(with_jac.gauss_newton(True), plain.gauss_newton(True), rtol=1e-13,
                          atol=1e-13)


@pytest.mark.parametrize("group", ["SO2", "SE2", "SO3", "SE3", "Vector"])
@pytest.mark.parametrize("robust", [False, True])
def test_local_jacobians_without_the_target_jacobian(monkeypatch, group, robust):
    """A ``th.Local`` (the pose graphs' prior; robust: through ``linearized_cost``):
    ``weighted_jacobians_error`` equals Theseus' bitwise without forming the Jacobian in the
    target (``LieGroup._local_impl`` is not called for a Lie group; a Vector, whose
    ``local`` is its own, goes through Theseus)."""
    g = torch.Generator().manual_seed(3)
    cls = getattr(th, group)
    if group == "Vector":
        var, target = (th.Vector(tensor=torch.randn(3, 4, generator=g, **F64), name=n)
                       for n in ("v", "t"))
    else:
        var, target = (cls(tensor=cls.rand(3, generator=g, **F64).tensor, name=n)
                       for n in ("v", "t"))
    w = th.DiagonalCostWeight(th.Variable(0.5 + torch.rand(3, var.dof(), generator=g, **F64),
                                          name="w"))
    cf = th.Local(var, target, w, name="prior")
    if robust:
        log_radius = th.Variable(torch.full((1, 1), -1.0, **F64), name="log_radius")
        cf = th.RobustCostFunction(cf, th.WelschLoss, log_radius)
    with accurate_se2_log_jacobian():  # as compat takes SE2's log-map Jacobian
        want_jacs, want_err = cf.weighted_jacobians_error()
    calls = []
    local = th.LieGroup._local_impl
    monkeypatch.setattr(th.LieGroup, "_local_impl",
                        lambda self, *a, **k: calls.append(1) or local(self, *a, **k))
    # a robust one's inner Jacobians come through linearized_cost
    jacs, err = linearized_cost(cf)[:2] if robust else weighted_jacobians_error(cf)
    if group != "Vector":
        assert not calls
    assert torch.equal(err, want_err)
    assert len(jacs) == len(want_jacs) == 1
    assert torch.equal(jacs[0], want_jacs[0])
