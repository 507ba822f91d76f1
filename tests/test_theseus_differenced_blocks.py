"""The polish's exact blocks by central differences of Theseus' analytic gradient
(``LinearizedPoint.exact_for(..., differenced=True)``, ``linearization._differenced_hessian``):
equal to the backward pass's blocks to ~1e-11 relative (SE2) and ~1e-10 (SE3) for some or
all elements, at the chart's base and off it; the same blocks where Theseus' Jacobians are
not differentiable (the autograd fallback); and the polish asks for them, reaching the
same iterations and errors as with the backward pass's blocks and its gradient within the
tight solve's tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_theseus_support import (  # noqa: F401
    THESEUS_MARKS,
    one_thread,
    polish_blocks_ab,
    recentred_structure,
)

from testing_helpers.theseus_problems import curve_fit, synthetic_pose_graph

pytestmark = THESEUS_MARKS


@pytest.mark.parametrize("dims, rtol", [(2, 1e-10), (3, 2e-9)])
def test_differenced_blocks_equal_the_backward_pass(dims, rtol):
    structure = recentred_structure(*synthetic_pose_graph(20, 3, dims=dims, seed=5)[:2])
    lin = structure.linearization
    g = torch.Generator().manual_seed(dims)
    for scale in (0.0, 1e-2):
        delta = scale * torch.randn(3, structure.n, generator=g, dtype=torch.float64)
        for elements in (np.array([1]), np.array([0, 2]), np.arange(3)):
            for curvature in (False, True):
                want = lin.at(delta).exact_for(elements, chart_curvature=curvature)
                got = lin.at(delta).exact_for(elements, chart_curvature=curvature,
                                              differenced=True)
                scale_ = want.abs().max()
                assert scale_ > 0
                assert not torch.equal(got, want)  # differenced, not the same computation
                assert (got - want).abs().max() <= rtol * scale_
                others = torch.as_tensor(np.setdiff1d(np.arange(3), elements))
                assert not got[others].any()  # not asked for


def test_differenced_blocks_fall_back_where_jacobians_are_not_differentiable():
    """An AutoDiffCostFunction (curve fit): the blocks by double backward either way."""
    structure = recentred_structure(*curve_fit(3))
    lin = structure.linearization
    assert lin is not None
    delta = 1e-2 * torch.ones(3, structure.n, dtype=torch.float64)
    for elements in (np.array([1]), np.arange(3)):
        assert torch.equal(lin.at(delta).exact_for(elements, differenced=True),
                           lin.at(delta).exact_for(elements))


def test_polish_takes_differenced_blocks(monkeypatch):
    """Element 1 of this graph switches to exact blocks in the polish (see
    test_theseus_robust_curvature.py): every such call is differenced; with the backward
    pass's blocks instead, the same iterations and errors (to rounding), and both outer
    gradients within 1e-4 of the tight solve's."""
    calls = polish_blocks_ab(
        monkeypatch,
        lambda chart_curvature, differenced=False: differenced,
        lambda exact_for: lambda self, elements, chart_curvature=True, differenced=False:
        exact_for(self, elements, chart_curvature))
    assert calls and all(calls)
