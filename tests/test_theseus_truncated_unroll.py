"""Gradients of solves stopped on their iteration budget (pounce_theseus/unrolled.py).

With ``backward_mode`` unroll (Theseus' default) or truncated, an element that returns
unconverged is differentiated through the steps it took: the derivative of the layer's
own map (start, aux data) -> returned iterate, checked in float64 against central
differences of that map (the step lengths are locally constant, so the map is
differentiable there). Truncated replays the last ``backward_num_iterations`` steps from a
detached iterate, as Theseus' truncated mode does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp, ProblemStructure
from pounce_theseus.constraints import resolve_bounds
from pounce_theseus.hessian import make_hessian
from pounce_theseus.solve import SolveSettings, solve_batch
from testing_helpers.theseus_problems import central_each, exp_fit_layer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

B, N = 2, 8
DT = torch.float64


def _one() -> th.ScaleCostWeight:
    return th.ScaleCostWeight(torch.ones(1, 1, dtype=DT))


def _layer(max_iterations: int) -> th.TheseusLayer:
    """The exponential fit of testing_helpers (two Gauss-Newton steps do not solve it)."""
    return exp_fit_layer(PounceOptimizer, B, N, max_iterations=max_iterations)


A0 = [[0.1, 1.0], [0.3, 0.8]]


def _fit(layer, a0, y, **kwargs):
    sol, info = layer.forward({"a": a0, "y": y}, optimizer_kwargs=kwargs)
    return sol["a"], info


def _grads(layer, w, **kwargs):
    a0 = torch.tensor(A0, dtype=DT, requires_grad=True)
    y = layer.objective.aux_vars["y"].tensor.detach().clone().requires_grad_(True)
    out, info = _fit(layer, a0, y, **kwargs)
    (out * w).sum().backward()
    return out.detach(), info, a0.grad, y.grad, y.detach()


@pytest.mark.parametrize("mode", ["unroll", "truncated"])
def test_unconverged_gradient_is_the_derivative_of_the_layers_map(mode):
    """Two steps of a budget of 2: the gradient to the start and to the data equals
    central differences of start/data -> returned iterate (truncated over both steps is
    unroll, as in Theseus)."""
    layer = _layer(2)
    w = torch.tensor([[0.3, -1.2], [0.7, 0.4]], dtype=DT)
    kw = {"backward_mode": mode}
    if mode == "truncated":
        kw["backward_num_iterations"] = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, info, g_a0, g_y, y = _grads(layer, w, **kw)
    assert all(s == th.NonlinearOptimizerStatus.MAX_ITERATIONS for s in info.status)
    assert layer.optimizer.last_solve["iterations"].tolist() == [2, 2]
    assert not any("replay" in str(c.message) for c in caught)
    a0 = torch.tensor(A0, dtype=DT)
    with torch.no_grad():
        fd_a0 = central_each(lambda t: (_fit(layer, t, y)[0] * w).sum(), a0)
        fd_y = central_each(lambda t: (_fit(layer, a0, t)[0] * w).sum(), y)
    # the start still matters after two steps (a solution would not depend on it)
    assert g_a0.abs().max() > 1e-2
    torch.testing.assert_close(g_a0, fd_a0, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_y, fd_y, rtol=1e-6, atol=1e-7)


def test_truncated_differentiates_the_last_steps_from_a_detached_iterate():
    """Truncated to the last of two steps: no gradient reaches the start; the data's is
    the derivative of that one step taken from the (fixed) first iterate, which a fresh
    one-iteration solve from that iterate reproduces value for value."""
    layer = _layer(2)
    w = torch.tensor([[0.3, -1.2], [0.7, 0.4]], dtype=DT)
    out, _, g_a0, g_y, y = _grads(layer, w, backward_mode="truncated",
                                  backward_num_iterations=1)
    assert g_a0 is None or torch.all(g_a0 == 0)
    one = _layer(1)
    with torch.no_grad():
        x1, _ = _fit(one, torch.tensor(A0, dtype=DT), y)
        step, _ = _fit(one, x1, y)
        assert torch.allclose(step, out, rtol=0, atol=1e-12)  # the same last step
        fd_y = central_each(lambda t: (_fit(one, x1, t)[0] * w).sum(), y)
    torch.testing.assert_close(g_y, fd_y, rtol=1e-6, atol=1e-7)


def test_implicit_mode_keeps_the_implicit_step_at_the_iterate():
    """backward_mode=implicit: no gradient to the start (the implicit step at the
    returned iterate), one to the data."""
    layer = _layer(2)
    w = torch.ones(B, 2, dtype=DT)
    _, _, g_a0, g_y, _ = _grads(layer, w, backward_mode="implicit")
    assert g_a0 is None or torch.all(g_a0 == 0)
    assert g_y is not None and g_y.abs().max() > 1e-3


def test_converged_elements_keep_the_implicit_gradient_under_unroll():
    """Given the budget to converge, unroll's gradient is the implicit one (no
    dependence on the start), equal to central differences of the solution map."""
    layer = _layer(50)
    w = torch.tensor([[0.3, -1.2], [0.7, 0.4]], dtype=DT)
    _, info, g_a0, g_y, y = _grads(layer, w, backward_mode="unroll")
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    assert g_a0 is None or g_a0.abs().max() < 1e-8
    a0 = torch.tensor(A0, dtype=DT)
    with torch.no_grad():
        fd_y = central_each(lambda t: (_fit(layer, a0, t)[0] * w).sum(), y, eps=1e-5)
    torch.testing.assert_close(g_y, fd_y, rtol=1e-5, atol=1e-7)


def test_se2_start_and_data_gradients_through_the_steps():
    """An SE2 pose fitted to observed transforms of three points, one step of budget: the
    chart is x0 * exp(delta), so the start enters through the chart's base; gradients to
    the start's tangent parameters and to the observations match central differences."""
    x = th.SE2(name="x", dtype=DT)
    pts = th.Variable(torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.5]]], dtype=DT)
                      .expand(B, 3, 2).clone(), name="pts")
    obs = th.Variable(torch.zeros(B, 6, dtype=DT), name="obs")

    def err(optim_vars, aux_vars):
        p, pose = aux_vars[0].tensor, optim_vars[0]
        return torch.cat([pose.transform_from(p[:, k]).tensor for k in range(3)], 1) \
            - aux_vars[1].tensor

    obj = th.Objective(dtype=DT)
    obj.add(th.AutoDiffCostFunction([x], err, 6, aux_vars=[pts, obs], cost_weight=_one(),
                                    name="fit"))
    layer = th.TheseusLayer(PounceOptimizer(obj, max_iterations=1))
    gen = torch.Generator().manual_seed(1)
    xi0 = torch.randn(B, 3, generator=gen, dtype=DT)
    obs0 = 2 * torch.randn(B, 6, generator=gen, dtype=DT)
    w = torch.randn(B, 4, generator=gen, dtype=DT)

    def run(xi, ob):
        sol, info = layer.forward({"x": th.SE2.exp_map(xi).tensor, "obs": ob},
                                  optimizer_kwargs={"backward_mode": "unroll"})
        return (sol["x"] * w).sum(), info

    xi, ob = xi0.clone().requires_grad_(True), obs0.clone().requires_grad_(True)
    loss, info = run(xi, ob)
    assert all(s == th.NonlinearOptimizerStatus.MAX_ITERATIONS for s in info.status)
    loss.backward()
    with torch.no_grad():
        fd_xi = central_each(lambda t: run(t, obs0)[0], xi0)
        fd_obs = central_each(lambda t: run(xi0, t)[0], obs0)
    assert xi.grad.abs().max() > 1e-2
    torch.testing.assert_close(xi.grad, fd_xi, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ob.grad, fd_obs, rtol=1e-6, atol=1e-7)


def test_recorded_points_are_the_tracked_iterates_deltas_without_their_values():
    """``record_points`` (what unroll/truncated use) keeps each iterate's delta, the same
    as full tracking's, and records no error metric or optim var values."""
    runs = {}
    for track in (False, True):
        obj = _layer(3).optimizer.objective
        obj.update({"a": torch.tensor(A0, dtype=DT)})
        nlp = BatchNlp(ProblemStructure(obj, []), make_hessian("gauss-newton"),
                       resolve_bounds({}, obj, B))
        settings = SolveSettings(max_iterations=3, options={}, track_iterates=track,
                                 record_points=not track)
        with torch.no_grad():
            runs[track] = solve_batch(nlp, settings)
    rec, full = runs[False], runs[True]
    assert all(not its for its in rec.iterates)
    for b in range(B):
        assert sorted(rec.points[b]) == sorted(full.iterates[b]) == list(range(4))
        for k, (_, _, delta) in full.iterates[b].items():
            np.testing.assert_array_equal(rec.points[b][k], delta)
        assert not np.any(rec.points[b][0])
        np.testing.assert_array_equal(rec.points[b][3], rec.delta[b])
