"""Exact Hessian blocks of ``th.Between`` cost functions from products in one variable
(pounce_theseus/linearization.py ``_between_hessian``, the Lie bracket of
``chart.bracket_matrix``): equal to autograd's dense Hessian of ``f(base (+) delta)`` for
every group of ``EXP_GROUPS``, plain and robust, vectorised or not, on and off the chart's
base."""

from __future__ import annotations

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus.batch_nlp import ProblemStructure
from pounce_theseus.linearization import _between_pair

pytestmark = THESEUS_MARKS

GROUPS = [th.SO2, th.SO3, th.SE2, th.SE3]


def _random(group, bsz: int, gen: torch.Generator, scale: float):
    tangent = scale * torch.randn(bsz, group(dtype=torch.float64).dof(), generator=gen,
                                  dtype=torch.float64)
    return group.exp_map(tangent)


def _ring(group, robust: bool, vectorize: bool, bsz: int = 2, n: int = 5):
    """A ring of ``n`` poses with Between edges (i, i+1) and one chord, a prior on pose 0;
    the measurements are off the poses' relative values, so residuals are not zero."""
    gen = torch.Generator().manual_seed(7)
    poses = []
    for i in range(n):
        p = _random(group, bsz, gen, 1.0)
        poses.append(group(tensor=p.tensor, name=f"x{i}"))
    obj = th.Objective(dtype=torch.float64)
    radius = th.Vector(tensor=torch.full((1, 1), 0.5, dtype=torch.float64), name="log_radius")
    edges = [(i, (i + 1) % n) for i in range(n)] + [(0, 2)]
    for k, (i, j) in enumerate(edges):
        rel = poses[i].between(poses[j]).compose(_random(group, bsz, gen, 0.3))
        meas = group(tensor=rel.tensor, name=f"z{k}")
        weight = th.DiagonalCostWeight(
            torch.rand(1, poses[0].dof(), generator=gen, dtype=torch.float64) + 0.5)
        cf = th.Between(poses[i], poses[j], meas, weight, name=f"e{k}")
        obj.add(th.RobustCostFunction(cf, th.WelschLoss, radius, name=f"r{k}") if robust
                else cf)
    prior = group(tensor=poses[0].tensor.clone(), name="prior")
    obj.add(th.Difference(poses[0], prior, th.ScaleCostWeight(
        torch.tensor(0.1, dtype=torch.float64)), name="p0"))
    if vectorize:
        th.Vectorize(obj)
    obj.update({})  # sets the batch size
    return obj


def _dense_hessian(obj, structure: ProblemStructure, x: np.ndarray, b: int) -> torch.Tensor:
    def element(d):
        full = torch.as_tensor(x).clone()
        full = torch.cat([full[:b], d.unsqueeze(0), full[b + 1:]])
        structure.chart.apply(full)
        return obj.error_metric().sum()

    return torch.autograd.functional.hessian(element, torch.as_tensor(x[b]))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
@pytest.mark.parametrize("robust", [False, True], ids=["plain", "robust"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "one-by-one"])
@pytest.mark.parametrize("spread", [0.0, 0.1])
def test_between_blocks_equal_autograds_dense_hessian(group, robust, vectorize, spread):
    obj = _ring(group, robust, vectorize)
    structure = ProblemStructure(obj, [])
    assert structure.linearization is not None
    x = np.random.default_rng(1).normal(size=(2, structure.n)) * spread
    pt = structure.linearization.at(torch.as_tensor(x))
    pt._activate()
    assert sum(_between_pair(ev) is not None for _, ev in pt.groups) >= 1
    got = structure.hess.dense(pt.exact())
    for b in range(2):
        want = _dense_hessian(obj, structure, x, b)
        assert (got[b] - want).abs().max() <= 1e-10 * want.abs().max()
    structure.chart.restore()


def test_bracket_matrix_is_the_commutator_of_hat_matrices():
    gen = torch.Generator().manual_seed(3)
    from pounce_theseus.chart import bracket_matrix

    for group in GROUPS:
        dof = group(dtype=torch.float64).dof()
        u, v, g = (torch.randn(4, dof, generator=gen, dtype=torch.float64) for _ in range(3))
        hu, hv = group.hat(u), group.hat(v)
        bracket = group.vee(hu @ hv - hv @ hu)
        want = (g * bracket).sum(1)
        got = (u.unsqueeze(1) @ bracket_matrix(group, g) @ v.unsqueeze(2)).reshape(-1)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), group.__name__
