"""Theseus' step under backward_mode unroll/truncated (pounce_theseus/unrolled.StepRule).

A budget too small to converge makes the layer the iteration it was configured as: with
``step_size`` and LevenbergMarquardt's ``damping``, PounceOptimizer returns the iterate
``th.LevenbergMarquardt`` returns and the same gradient to the starting values and the
data (Theseus' motion_planning_2d learns its starting trajectory through two damped
0.3-steps: docs/theseus-examples.md), that gradient equals central differences of the
layer's map in float64, and the map is the same with and without a gradient. Under
``implicit`` the steps are full interior-point ones (the solution does not depend on
them)."""

from __future__ import annotations

import warnings

import pytest
import theseus as th
import torch
from test_theseus_support import one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import central_each, exp_fit_layer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

B = 2
DT = torch.float64
A0 = [[0.1, 1.0], [0.3, 0.8]]
W = torch.tensor([[0.3, -1.2], [0.7, 0.4]], dtype=DT)


def _run(layer, a0, y, **kwargs):
    sol, info = layer.forward({"a": a0, "y": y}, optimizer_kwargs=kwargs)
    return sol["a"], info


def _grads(layer, **kwargs):
    a0 = torch.tensor(A0, dtype=DT, requires_grad=True)
    y = layer.objective.aux_vars["y"].tensor.detach().clone().requires_grad_(True)
    out, info = _run(layer, a0, y, **kwargs)
    (out * W).sum().backward()
    return out.detach(), info, a0.grad, y.grad, y.detach()


@pytest.mark.parametrize("ellipsoidal", [False, True])
def test_unrolled_budget_is_levenberg_marquardts_map(ellipsoidal):
    """max_iterations=2, step_size=0.3, damping=0.1 (motion_planning_2d's setting): the
    returned iterate and the gradients to the start and the data equal LM's (Theseus'
    unroll through its own steps), and central differences of our map."""
    cfg = {"max_iterations": 2, "step_size": 0.3}
    kw = {"damping": 0.1, "ellipsoidal_damping": ellipsoidal, "backward_mode": "unroll"}
    ours = exp_fit_layer(PounceOptimizer, **cfg)
    lm = exp_fit_layer(th.LevenbergMarquardt, **cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, info, g_a0, g_y, y = _grads(ours, **kw)
    assert not any("replay" in str(c.message) or "'damping'" in str(c.message)
                   for c in caught)
    assert ours.optimizer.last_solve["iterations"].tolist() == [2, 2]
    assert all(s == th.NonlinearOptimizerStatus.MAX_ITERATIONS for s in info.status)
    out_lm, _, g_a0_lm, g_y_lm, _ = _grads(lm, **kw)
    # equal to ~5e-10 relative: the native KKT solve against LM's dense Cholesky
    torch.testing.assert_close(out, out_lm, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(g_a0, g_a0_lm, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(g_y, g_y_lm, rtol=1e-7, atol=1e-10)
    # the start matters after two damped steps: about 0.7^2 of it is kept
    assert g_a0.abs().max() > 1e-1
    a0 = torch.tensor(A0, dtype=DT)
    with torch.no_grad():  # the same map without a gradient
        fd_a0 = central_each(lambda t: (_run(ours, t, y, **kw)[0] * W).sum(), a0)
        fd_y = central_each(lambda t: (_run(ours, a0, t, **kw)[0] * W).sum(), y)
    torch.testing.assert_close(g_a0, fd_a0, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_y, fd_y, rtol=1e-6, atol=1e-7)


def test_truncated_replays_the_damped_last_step():
    """Truncated to the last of two damped steps: the data's gradient equals LM's
    truncated gradient (the last step from the detached first iterate)."""
    cfg = {"max_iterations": 2, "step_size": 0.5}
    kw = {"damping": 0.2, "backward_mode": "truncated", "backward_num_iterations": 1}
    out, _, g_a0, g_y, _ = _grads(exp_fit_layer(PounceOptimizer, **cfg), **kw)
    out_lm, _, _, g_y_lm, _ = _grads(exp_fit_layer(th.LevenbergMarquardt, **cfg), **kw)
    assert g_a0 is None or torch.all(g_a0 == 0)
    torch.testing.assert_close(out, out_lm, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(g_y, g_y_lm, rtol=1e-7, atol=1e-10)


def test_implicit_mode_takes_full_steps_and_ignores_damping():
    """backward_mode=implicit: the step rule is off (full interior-point steps reach the
    solution within the budget that LM's 0.3-steps do not), ``damping`` warns."""
    cfg = {"max_iterations": 10, "step_size": 0.3}
    layer = exp_fit_layer(PounceOptimizer, **cfg)
    a0 = torch.tensor(A0, dtype=DT)
    y = layer.objective.aux_vars["y"].tensor.clone()
    with pytest.warns(UserWarning, match="'damping'"), torch.no_grad():
        _, info = _run(layer, a0, y, damping=0.1, backward_mode="implicit")
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    with torch.no_grad():
        _, info = _run(layer, a0, y, damping=0.1, backward_mode="unroll")
    assert all(s == th.NonlinearOptimizerStatus.MAX_ITERATIONS for s in info.status)


def test_histories_hold_a_stopped_elements_final_values():
    """Damped steps converge linearly, so elements stop at different iterations; as in
    Theseus' loop, an element's history after its stop repeats its final error and
    values up to the batch's last iteration (Theseus' nonlinear tests read
    ``err_history[:, converged_iter.max()]`` as every element's final error)."""
    layer = exp_fit_layer(PounceOptimizer, max_iterations=40, step_size=0.6)
    a0 = torch.tensor([[0.7, 1.5], [-1.0, 0.2]], dtype=DT)
    y = layer.objective.aux_vars["y"].tensor.clone()
    with torch.no_grad():
        sol, info = layer.forward({"a": a0, "y": y}, optimizer_kwargs={
            "backward_mode": "unroll", "track_err_history": True,
            "track_state_history": True})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    its = info.converged_iter
    assert int(its.min()) < int(its.max())  # the elements stopped at different iterations
    end = int(its.max())
    final = layer.objective.error_metric()
    torch.testing.assert_close(info.err_history[:, end], final.to(info.err_history.dtype))
    hist = info.state_history["a"]
    torch.testing.assert_close(hist[..., end], sol["a"].to(hist.dtype))
    assert torch.isinf(info.err_history[:, end + 1:]).all()


def test_replay_jacobian_from_the_cost_functions_equals_autograds():
    """The replay takes the errors' Jacobian from the cost functions' own Jacobians when
    every variable is Vector-like (``unrolled._analytic_jacobian``): on a vectorised chain
    of Point2 variables (Differences, a nonlinear AutoDiff link with data) it equals the
    autograd Jacobian of the weighted errors, rows and columns in the same order, and so
    does its derivative with respect to the data."""
    from pounce_theseus.chart import TangentChart
    from pounce_theseus.compat import weighted_error
    from pounce_theseus.unrolled import _analytic_jacobian

    gen = torch.Generator().manual_seed(3)
    pts = [th.Point2(torch.randn(B, 2, generator=gen, dtype=DT), name=f"p{i}")
           for i in range(4)]
    data = th.Variable(torch.randn(B, 2, generator=gen, dtype=DT).requires_grad_(True),
                       name="data")
    obj = th.Objective(dtype=DT)
    w = th.ScaleCostWeight(torch.tensor(2.0, dtype=DT))
    for i in range(4):
        obj.add(th.Difference(pts[i], th.Point2(torch.zeros(B, 2, dtype=DT)), w,
                              name=f"prior{i}"))

    def link(optim_vars, aux_vars):
        a, b = optim_vars[0].tensor, optim_vars[1].tensor
        return torch.sin(a * b) + aux_vars[0].tensor * a ** 2

    for i in range(3):
        obj.add(th.AutoDiffCostFunction([pts[i], pts[i + 1]], link, 2, aux_vars=[data],
                                        cost_weight=w, name=f"link{i}"))
    th.TheseusLayer(PounceOptimizer(obj))  # vectorises the objective as the layer does
    obj.update({"data": data.tensor})
    chart = TangentChart(obj)
    delta = (0.1 * torch.randn(B, chart.dim, generator=gen, dtype=DT)).requires_grad_(True)
    with torch.enable_grad():
        chart.apply(delta)
        e, jac = _analytic_jacobian(obj, chart)
        e_ref = weighted_error(obj, chart.sources)
        rows = [torch.autograd.grad(e_ref[:, r].sum(), delta, create_graph=True)[0]
                for r in range(e_ref.shape[1])]
        jac_ref = torch.stack(rows, dim=1)
        torch.testing.assert_close(e, e_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(jac, jac_ref, rtol=1e-12, atol=1e-12)
        probe = torch.randn(jac.shape, generator=gen, dtype=DT)
        (g,) = torch.autograd.grad((jac * probe).sum(), data.tensor, retain_graph=True)
        (g_ref,) = torch.autograd.grad((jac_ref * probe).sum(), data.tensor)
    chart.restore()
    assert g.abs().max() > 1e-3
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
