"""NonlinearOptimizerInfo as Theseus' optimizers fill it, and failure isolation: one bad
element never changes the others."""

from __future__ import annotations

import math

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import curve_fit, pose_graph, solve_with

pytestmark = THESEUS_MARKS
S = th.NonlinearOptimizerStatus



def test_nan_element_fails_alone():
    obj, inputs = curve_fit(4)
    bad = dict(inputs)
    bad["y"] = inputs["y"].clone()
    bad["y"][2, 5] = math.nan
    y = bad["y"].clone().requires_grad_(True)
    sol, info = solve_with(PounceOptimizer(obj, tol=1e-10), {**bad, "y": y})
    assert info.status[2] == S.FAIL and info.converged_iter[2] == -1
    good = [0, 1, 3]
    assert all(info.status[i] == S.CONVERGED for i in good)
    obj2, _ = curve_fit(3)
    sub = {k: v[good] for k, v in inputs.items()}
    with torch.no_grad():
        alone, _ = solve_with(PounceOptimizer(obj2, tol=1e-10), sub)
    for k in ("a", "b"):
        assert torch.allclose(sol[k][good], alone[k], atol=1e-9)
    (g,) = torch.autograd.grad(sol["a"].sum(), y)
    y_alone = sub["y"].clone().requires_grad_(True)
    obj3, _ = curve_fit(3)
    sol3, _ = solve_with(PounceOptimizer(obj3, tol=1e-10), {**sub, "y": y_alone})
    (g_alone,) = torch.autograd.grad(sol3["a"].sum(), y_alone)
    assert torch.allclose(g[good], g_alone, atol=1e-9)
    assert torch.all(g[2] == 0)


def test_max_iterations_status():
    obj, inputs = pose_graph(2)
    with torch.no_grad():
        _, info = solve_with(PounceOptimizer(obj, max_iterations=2), inputs)
    assert all(s == S.MAX_ITERATIONS for s in info.status)
    assert torch.all(info.converged_iter == -1)


def test_histories_best_solution_and_callbacks(capsys):
    obj, inputs = curve_fit(3)
    opt = PounceOptimizer(obj, max_iterations=30)
    calls = []

    def cb(optimizer, info, delta, it):
        assert optimizer is opt and delta.shape == (3, 2)
        calls.append(it)

    with torch.no_grad():
        sol, info = solve_with(
            opt, inputs, track_err_history=True, track_state_history=True,
            track_best_solution=True, verbose=True, end_iter_callback=cb,
        )
    assert all(s == S.CONVERGED for s in info.status)
    assert info.err_history.shape == (3, 31)
    init_err = obj.error_metric({"a": inputs["a"], "b": inputs["b"]})
    hist = info.err_history.double()  # Theseus allocates the history in the default dtype
    assert torch.allclose(hist[:, 0], init_err.float().double())
    assert info.state_history["a"].shape == (3, 1, 31)
    n_it = int(info.converged_iter.max())
    for b in range(3):  # each element's own iterations, then its final values (Theseus'
        it = int(info.converged_iter[b])  # loop records a stopped element until all stop)
        assert torch.allclose(hist[b, it : n_it + 1], info.last_err[b].double())
        assert torch.isinf(info.err_history[b, n_it + 1 :]).all()
        assert torch.all(info.err_history[b, 1 : it + 1].isfinite())
        assert torch.allclose(info.state_history["a"][b, :, it : n_it + 1],
                              sol["a"][b].float().unsqueeze(-1))
    assert torch.allclose(info.best_solution["b"], sol["b"]) and torch.equal(
        info.best_err, info.last_err
    )
    assert calls == list(range(n_it))
    assert "Nonlinear optimizer. Iteration: 1." in capsys.readouterr().out


def test_drop_in_keywords_and_error_messages():
    obj, inputs = curve_fit(2)
    with pytest.warns(UserWarning, match="linear_solver_cls"):
        opt = PounceOptimizer(obj, linear_solver_cls=th.CholeskyDenseSolver, step_size=0.5)
    with torch.no_grad():
        _, info = solve_with(opt, inputs, damping=0.1, backward_mode="implicit")
    assert all(s == S.CONVERGED for s in info.status)
    with pytest.warns(UserWarning, match=r"ignores unknown keyword argument\(s\) \['bogus'\]"):
        PounceOptimizer(obj, bogus=1)
    with pytest.raises(ValueError, match="hessian"):
        PounceOptimizer(obj, hessian="bfgs")
    obj2, _ = pose_graph(1, n_poses=4)
    with pytest.raises(ValueError, match="pose_1.*SE2"):
        solve_with(PounceOptimizer(obj2, bounds={"pose_1": (0.0, 1.0)}), pose_graph(1, 4)[1])
