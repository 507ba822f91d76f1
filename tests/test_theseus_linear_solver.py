"""``PounceOptimizer.linear_solver``: what Theseus code outside the optimizer reads.

LEO (``TheseusLayer.compute_samples``) samples around the solution from the linearisation's
``A'A``; the motion-planning models read ``linear_solver.linearization``. The attribute is
built as Gauss-Newton builds it and linearised at the objective's current values.
"""

from __future__ import annotations

import theseus as th
import torch

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import (
    curve_fit,
    pose_graph,
    solve_with,
    tight_gauss_newton,
)


def test_default_is_gauss_newtons_default_and_the_class_given_is_used():
    obj, _ = pose_graph(1, n_poses=6)
    assert isinstance(PounceOptimizer(obj).linear_solver, th.CholeskyDenseSolver)
    obj, _ = pose_graph(1, n_poses=6)
    opt = PounceOptimizer(obj, th.LUDenseSolver)
    assert isinstance(opt.linear_solver, th.LUDenseSolver)


def test_linearised_at_the_solution_like_gauss_newtons():
    obj, inputs = pose_graph(2, n_poses=10)
    ours = PounceOptimizer(obj, max_iterations=100, tol=1e-12)
    with torch.no_grad():
        solve_with(ours, inputs)
    ls = ours.linear_solver
    # at a minimum the Gauss-Newton step is zero
    assert ls.solve().abs().max() < 1e-6
    obj2, inputs2 = pose_graph(2, n_poses=10)
    gn = tight_gauss_newton(obj2)
    with torch.no_grad():
        solve_with(gn, inputs2)
        gn.linear_solver.linearization.linearize()
    ref = gn.linear_solver.linearization.hessian_approx()
    got = ls.linearization.hessian_approx()
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-6 * ref.abs().max())


def test_leo_samples_around_the_solution():
    """compute_samples retracts Vector variables (as LEO's state estimation uses it)."""
    obj, inputs = curve_fit(2)
    opt = PounceOptimizer(obj, max_iterations=100)
    layer = th.TheseusLayer(opt)
    with torch.no_grad():
        sol, _ = layer.forward(dict(inputs))
    samples = layer.compute_samples(opt.linear_solver, n_samples=64, temperature=1e-12)
    assert samples is not None and samples.shape == (2, 2, 64)
    order = [v.name for v in opt.linear_solver.linearization.ordering]
    mean = torch.cat([sol[name] for name in order], 1)
    # a tiny temperature: the samples sit on the solution (the Gauss-Newton step there is 0)
    assert (samples.mean(-1) - mean).abs().max() < 1e-4  # samples are float32
    assert (samples.std(-1) > 0).all()


def test_linearised_without_a_graph_like_gauss_newtons():
    """LEO samples from A'A; with a learnable weight upstream, A'A must carry no graph."""
    obj, inputs = pose_graph(2, n_poses=8)
    inputs["loop_w"] = inputs["loop_w"].clone().requires_grad_(True)
    opt = PounceOptimizer(obj, max_iterations=100)
    solve_with(opt, inputs)
    assert not opt.linear_solver.linearization.hessian_approx().requires_grad
