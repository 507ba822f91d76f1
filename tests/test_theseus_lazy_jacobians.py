"""PounceOptimizer defers its objective's vectorised Jacobian run (it never reads it);
whoever does read it later still gets what Theseus' eager run gives."""

from __future__ import annotations

import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import pose_graph, solve_with, tight_gauss_newton

pytestmark = THESEUS_MARKS


def _moved(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs with a learnable loop weight and pose 2 moved off its start."""
    w = inputs["loop_w"].clone().requires_grad_(True)
    pose = th.SE2(tensor=inputs["pose_2"]).compose(
        th.SE2(x_y_theta=torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64))
    )
    return {**inputs, "loop_w": w, "pose_2": pose.tensor}


def test_deferred_jacobians_match_the_eager_ones():
    obj, inputs = pose_graph(2, n_poses=6)
    ref, _ = pose_graph(2, n_poses=6)
    th.Vectorize(ref)
    with torch.no_grad():
        solve_with(PounceOptimizer(obj), inputs)  # vectorises obj, then defers its run
    moved = _moved(inputs)
    obj.update(moved)
    ref.update(moved)
    lazy = obj._vectorized_jacobians_iter
    assert all(w._cached_jacobians is None for w in lazy.wrappers)  # nothing run yet
    got = [cf.weighted_jacobians_error() for cf in obj._get_jacobians_iter()]
    assert all(w._cached_jacobians is not None for w in lazy.wrappers)  # run, vectorised
    want = [cf.weighted_jacobians_error() for cf in ref._get_jacobians_iter()]
    assert len(got) == len(want) == len(obj.cost_functions)
    for (jg, eg), (jw, ew) in zip(got, want, strict=True):
        assert torch.allclose(eg, ew, rtol=1e-12, atol=1e-14)
        for a, b in zip(jg, jw, strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    # run under the grad mode of the update: the loop weight's error keeps its graph
    assert any(e.requires_grad for _, e in got)


def test_theseus_optimizer_on_a_deferred_objective():
    """th.GaussNewton after PounceOptimizer on the same objective reads the deferred
    Jacobians: same solution as on a fresh objective."""
    obj, inputs = pose_graph(2, n_poses=6)
    ref, _ = pose_graph(2, n_poses=6)
    with torch.no_grad():
        solve_with(PounceOptimizer(obj), inputs)
        got, _ = solve_with(tight_gauss_newton(obj, max_iterations=20), inputs)
        want, _ = solve_with(tight_gauss_newton(ref, max_iterations=20), inputs)
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
