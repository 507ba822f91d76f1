"""What Theseus users rely on: a gradient whenever the layer returns, an iteration budget,
elements that do not hold each other back, honest statuses, and Theseus' constructor."""

from __future__ import annotations

import warnings

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import Constraint, PounceOptimizer
from testing_helpers.theseus_problems import (
    curve_fit,
    pose_graph,
    solve_with,
    synthetic_pose_graph,
)

pytestmark = THESEUS_MARKS
S = th.NonlinearOptimizerStatus


def _newton_step_gradient(a, b, x, y, w):
    """d/dy of one Newton step on 1/2 |w (a exp(b x) - y)|^2 taken from the fixed point
    (a, b) with the Hessian held constant (the implicit step at that point), per element,
    for d(sum of the new b)/dy: an independent dense computation."""
    grads = []
    for k in range(a.shape[0]):
        p = torch.stack([a[k, 0], b[k, 0]])

        def f(p, yk, k=k):
            return 0.5 * ((w[k] * (p[0] * torch.exp(p[1] * x[k]) - yk)) ** 2).sum()

        hess = torch.autograd.functional.hessian(lambda q, k=k: f(q, y[k]), p)
        yk = y[k].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(p.requires_grad_(True), yk), p, create_graph=True)
        step = -torch.linalg.solve(hess.detach(), g)
        (gy,) = torch.autograd.grad(step[1], yk)
        grads.append(gy)
    return torch.stack(grads)


def test_unconverged_solve_has_the_implicit_step_gradient():
    """Stopped by its iteration limit, with backward_mode=implicit the layer gives the
    implicit step at the last iterate (one Newton step with the Hessian held), checked
    densely (unroll and truncated: tests/test_theseus_truncated_unroll.py)."""
    bsz = 3
    obj, inputs = curve_fit(bsz)
    y = inputs["y"].clone().requires_grad_(True)
    opt = PounceOptimizer(obj, max_iterations=2)
    sol, info = solve_with(opt, {**inputs, "y": y}, backward_mode="implicit")
    assert all(s == S.MAX_ITERATIONS for s in info.status)
    assert (opt.last_solve["iterations"] <= 2).all()
    sol["b"].sum().backward()
    want = _newton_step_gradient(sol["a"].detach(), sol["b"].detach(), inputs["x"],
                                 inputs["y"], inputs["w"])
    assert torch.isfinite(y.grad).all() and y.grad.abs().max() > 1e-3
    assert torch.allclose(y.grad, want, rtol=1e-9, atol=1e-12)


def _hard_second_element():
    """A B=2 pose graph whose element 1 starts far off (large rotations of every pose)."""
    obj, inputs = pose_graph(2, n_poses=12)
    g = torch.Generator().manual_seed(3)
    for i in range(12):
        pose = th.SE2(tensor=inputs[f"pose_{i}"][1:2])
        jitter = torch.randn(1, 3, generator=g, dtype=torch.float64) * torch.tensor(
            [[0.4, 0.4, 0.8]], dtype=torch.float64)
        inputs[f"pose_{i}"][1:2] = pose.compose(th.SE2(x_y_theta=jitter)).tensor
    return obj, inputs


def test_a_hard_element_does_not_hold_back_the_others():
    """Element 0 takes the iterations it takes alone and reaches the same point, whatever
    element 1 does; a joint solve (one line search) makes element 0 wait for element 1."""
    obj, inputs = _hard_second_element()
    opt = PounceOptimizer(obj, batch_solve="elementwise")
    with torch.no_grad():
        sol, info = solve_with(opt, inputs)
        iters = opt.last_solve["iterations"]
        alone_obj, _ = pose_graph(1, n_poses=12)
        alone = PounceOptimizer(alone_obj)
        sol1, _ = solve_with(alone, {k: v[:1] for k, v in inputs.items()})
        joint_obj, _ = pose_graph(2, n_poses=12)
        joint = PounceOptimizer(joint_obj, batch_solve="joint")
        solve_with(joint, inputs)
    assert iters[0] == alone.last_solve["iterations"][0]
    assert iters[1] > iters[0]  # the element is hard
    assert joint.last_solve["iterations"][0] > iters[0]  # held back in a joint solve
    for k in sol1:
        assert torch.allclose(sol[k][:1], sol1[k], rtol=0, atol=1e-10), k


@pytest.mark.parametrize("batch_solve", ["elementwise", "joint"])
def test_max_iterations_bounds_every_element(batch_solve):
    obj, inputs = _hard_second_element()
    opt = PounceOptimizer(obj, max_iterations=3, batch_solve=batch_solve)
    with torch.no_grad():
        _, info = solve_with(opt, inputs)
    assert (opt.last_solve["iterations"] <= 3).all()
    assert info.status[1] == S.MAX_ITERATIONS


def test_a_solve_stopped_by_max_iterations_is_not_run_again():
    """POUNCE re-runs a solve that ends at ``max_iter`` under the other barrier-parameter
    strategy; an unconstrained, unbounded solve has no barrier term, so that re-run would
    repeat the same iterates. Counted: the Hessians the native solves ask for."""
    from pounce_theseus.batch_nlp import BatchNlp

    obj, inputs = _hard_second_element()
    opt = PounceOptimizer(obj, max_iterations=3, tol=1e-14, batch_solve="elementwise")
    asked = [0, 0]
    serve = BatchNlp.serve

    def counting(self, requests):
        for r in requests:
            if r.kind == "hessian":
                for b in r.rows:
                    asked[int(b)] += 1
        return serve(self, requests)

    BatchNlp.serve = counting
    try:
        with torch.no_grad():
            _, info = solve_with(opt, inputs)
    finally:
        BatchNlp.serve = serve
    assert opt.last_solve["iterations"][1] == 3
    assert info.status[1] == S.MAX_ITERATIONS
    # one Hessian per iteration (no re-run: 6 without mu_strategy_fallback=no)
    assert asked[1] == 3


def test_infeasible_element_is_not_converged_and_others_are():
    """|p|^2 <= r^2 with r^2 < 0 for element 1 only: element 1 ends unconverged (local
    infeasibility), element 0 converges as it does alone; the layer still returns a
    gradient."""
    obj, inputs = curve_fit(2)
    r2 = th.Variable(torch.tensor([[4.0], [-1.0]], dtype=torch.float64), name="r2")
    cap = Constraint(lambda ov, av: ov[0].tensor ** 2 + ov[1].tensor ** 2 - av[0].tensor,
                     [obj.optim_vars["a"], obj.optim_vars["b"]], [r2], lower=None, upper=0.0,
                     name="disc")
    opt = PounceOptimizer(obj, constraints=[cap], max_iterations=200)
    y = inputs["y"].clone().requires_grad_(True)
    sol, info = solve_with(opt, {**inputs, "y": y})
    assert info.status[0] == S.CONVERGED and info.status[1] != S.CONVERGED
    sol["a"].sum().backward()
    assert torch.isfinite(y.grad).all()
    obj0, _ = curve_fit(1)
    cap0 = Constraint(cap.fn, [obj0.optim_vars["a"], obj0.optim_vars["b"]],
                      [th.Variable(r2.tensor[:1], name="r2")], lower=None, upper=0.0)
    with torch.no_grad():
        alone, _ = solve_with(PounceOptimizer(obj0, constraints=[cap0]),
                              {k: v[:1] for k, v in inputs.items()})
    assert torch.allclose(sol["a"][:1].detach(), alone["a"], atol=1e-9)


def test_theseus_positional_signature_and_lookup_by_name():
    obj, inputs = curve_fit(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = th.PounceOptimizer(obj, th.CholeskyDenseSolver, False, th.DenseLinearization,
                                 None, None, 1e-10, 1e-8, 7)
    notes = [str(w.message) for w in caught if "ignores" in str(w.message)]
    assert len(notes) == 1 and "linear_solver_cls" in notes[0], notes
    name = "PounceOptimizer"  # as a config names it
    assert getattr(th, name) is PounceOptimizer  # noqa: B009
    assert th.GaussNewton.__module__.startswith("theseus")  # nothing else replaced
    assert opt.params.max_iterations == 7
    assert isinstance(opt.linear_solver, th.CholeskyDenseSolver)  # built as GN builds it
    with pytest.warns(UserWarning, match="max_optim_iters"):
        PounceOptimizer(obj, max_optim_iters=10)
    with torch.no_grad():
        _, info = solve_with(opt, inputs)
    assert all(s == S.CONVERGED for s in info.status)


def test_an_unconstrained_solve_never_returns_a_worse_point_than_its_iterates():
    """A robust (Welsch) SE3 pose graph where the line search accepts a full step onto the
    loss' plateau (objective 29.3 -> 256) and then meets the convergence test there: the
    layer returns the best iterate instead, not reported as CONVERGED."""
    obj, inputs, _, _ = synthetic_pose_graph(20, 1, dims=3)
    opt = PounceOptimizer(obj)
    with torch.no_grad():
        _, info = solve_with(opt, inputs, track_err_history=True)
    best = info.err_history[0][torch.isfinite(info.err_history[0])].min()
    # (Theseus keeps the history in float32)
    assert float(info.last_err[0]) <= float(best) * (1 + 1e-6)
    if opt.last_solve["status"][0] == "objective_rose_above_an_earlier_iterate":
        assert info.status[0] == S.FAIL


@pytest.mark.parametrize("mode", ["implicit", "unroll"])
def test_a_cost_that_does_not_depend_on_the_variables(mode):
    """Theseus' mock cost (a constant error) next to a learnable scale: the solve returns
    the start as CONVERGED and the gradient of the solution to the scale is zero (it used
    to raise 'does not require grad' in the forward's gradient)."""
    dt = torch.float64
    x = th.Vector(2, name="x", dtype=dt)
    scale = th.Variable(torch.ones(1, 1, dtype=dt), name="scale")

    def constant(optim_vars, aux_vars):
        return aux_vars[0].tensor * torch.ones(optim_vars[0].tensor.shape[0], 3, dtype=dt)

    obj = th.Objective(dtype=dt)
    obj.add(th.AutoDiffCostFunction([x], constant, 3, aux_vars=[scale], name="c",
                                    cost_weight=th.ScaleCostWeight(torch.ones(1, 1, dtype=dt))))
    start = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=dt)
    s = torch.full((2, 1), 1.5, dtype=dt, requires_grad=True)
    sol, info = solve_with(PounceOptimizer(obj), {"x": start, "scale": s}, backward_mode=mode)
    assert all(st == S.CONVERGED for st in info.status)
    assert torch.equal(sol["x"].detach(), start)
    if sol["x"].requires_grad:
        (g,) = torch.autograd.grad(sol["x"].sum(), s, allow_unused=True)
        assert g is None or torch.all(g == 0)
