"""Every supported variable type (SO2, SE2, SO3, SE3, Point2, Point3): a small inconsistent
Between graph solved in tangent coordinates with retract. Solutions are checked against a
tight th.GaussNewton; the implicit gradient (w.r.t. a cost weight) against central
differences of the forward solution map at tol=1e-13. Gauss-Newton itself is not used for
the differences here: on SO3/SE3 its solutions stall at ~1e-9, which is finite-difference
noise of ~1e-6 relative (the curve fit and SE2 pose graph use it, in test_theseus_optimizer)."""

from __future__ import annotations

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import (
    central_difference,
    solve_with,
    tight_gauss_newton,
)

pytestmark = THESEUS_MARKS

F64 = torch.float64


def _random(cls, bsz, scale, g):
    if issubclass(cls, th.LieGroup):
        dof = cls(dtype=F64).dof()
        return cls.exp_map(scale * torch.randn(bsz, dof, generator=g, dtype=F64)).tensor
    return scale * torch.randn(bsz, cls(dtype=F64).dof(), generator=g, dtype=F64)


def _graph(cls, bsz: int = 3, k: int = 4, seed: int = 0):
    """Chain v0..v{k-1} with Between costs, a loop closure and a prior on v0; the weight
    ``w`` of one Between is an input. Noise is moderate, so GN and the interior-point
    path reach the same local minimum."""
    g = torch.Generator().manual_seed(seed)
    vs = [cls(name=f"v{i}", dtype=F64) for i in range(k)]
    obj = th.Objective(dtype=F64)
    one = th.ScaleCostWeight(torch.tensor(1.0, dtype=F64))
    w = th.ScaleCostWeight(th.Variable(torch.ones(bsz, 1, dtype=F64), name="w"))
    inputs = {"w": torch.full((bsz, 1), 1.5, dtype=F64)}
    for i in range(k):
        m = cls(name=f"m{i}", dtype=F64)
        inputs[f"m{i}"] = _random(cls, bsz, 0.3, g)
        obj.add(th.Between(vs[i], vs[(i + 1) % k], m, w if i == 1 else one, name=f"b{i}"))
    prior = cls(name="prior", dtype=F64)
    inputs["prior"] = _random(cls, bsz, 0.1, g)
    obj.add(th.Difference(vs[0], prior, th.ScaleCostWeight(torch.tensor(10.0, dtype=F64)),
                          name="prior_cf"))
    for i in range(k):
        inputs[f"v{i}"] = _random(cls, bsz, 0.2, g)
    return obj, inputs


@pytest.mark.parametrize("cls", [th.SO2, th.SE2, th.SO3, th.SE3, th.Point2, th.Point3])
def test_variable_type_matches_gauss_newton_and_finite_differences(cls):
    obj, inputs = _graph(cls)
    ref_obj, _ = _graph(cls)
    reference = tight_gauss_newton(ref_obj, max_iterations=50)
    with torch.no_grad():
        ref_sol, _ = solve_with(reference, inputs)
    w = inputs["w"].clone().requires_grad_(True)
    sol, info = solve_with(PounceOptimizer(obj, tol=1e-12), {**inputs, "w": w})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    for k in sol:
        assert torch.allclose(sol[k], ref_sol[k], atol=1e-6, rtol=0), k

    def loss(s):
        return sum((i + 1) * s[k].flatten(1).sum(1) for i, k in enumerate(sorted(s)))

    (gw,) = torch.autograd.grad(loss(sol).sum(), w)

    forward_only = PounceOptimizer(_graph(cls)[0], tol=1e-13)

    def ref_loss(inp):
        with torch.no_grad():
            s, _ = solve_with(forward_only, inp)
        return loss(s)

    fd = central_difference(ref_loss, inputs, "w", (0,), h=1e-3)
    assert (gw[:, 0] - fd).abs().max() <= 1e-6 * fd.abs().max().clamp(min=1e-3), (gw[:, 0], fd)
