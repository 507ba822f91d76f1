"""The polish's exact blocks leave out the chart's curvature term
(``LinearizedPoint.exact_for(..., chart_curvature=False)``): the values are the full ones
minus exactly that term (zero at the chart's base), and on the SE2 graph whose element 1
switches to exact blocks the solve takes the same iterations, reaches the same errors and
keeps its outer gradients within the tight solve's tolerance."""

from __future__ import annotations

import numpy as np
import torch
from test_theseus_support import (  # noqa: F401
    THESEUS_MARKS,
    one_thread,
    polish_blocks_ab,
    recentred_structure,
)

from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _structure(n=20, bsz=3, dims=2):
    return recentred_structure(*synthetic_pose_graph(n, bsz, dims=dims, seed=5)[:2])


def test_without_chart_curvature_is_the_full_block_minus_that_term():
    for dims in (2, 3):
        structure = _structure(dims=dims)
        lin = structure.linearization
        g = torch.Generator().manual_seed(dims)
        delta = 1e-2 * torch.randn(3, structure.n, generator=g, dtype=torch.float64)
        elements = np.array([0, 2])
        full = lin.at(delta, robust_errors=True).exact_for(elements)
        pt = lin.at(delta, robust_errors=True)
        bare = pt.exact_for(elements, chart_curvature=False)
        term = pt._chart_curvature(torch.as_tensor(elements))
        assert term.abs().max() > 0
        assert torch.allclose(bare + term, full, rtol=1e-13, atol=1e-13 * full.abs().max())
        assert bare[1].abs().max() == 0 and full[1].abs().max() == 0  # not asked for
        base = lin.at(torch.zeros_like(delta), robust_errors=True)
        assert torch.equal(base.exact_for(elements, chart_curvature=False),
                           lin.at(torch.zeros_like(delta)).exact_for(elements))


def test_polish_without_chart_curvature_same_iterations(monkeypatch):
    """Element 1 of this graph switches to exact blocks in the polish (see
    test_theseus_robust_curvature.py); with the chart's term kept in them instead, the same
    iterations and errors, and both gradients within 1e-4 of the tight solve's."""
    calls = polish_blocks_ab(
        monkeypatch,
        lambda chart_curvature, **kw: chart_curvature,
        lambda exact_for: lambda self, elements, chart_curvature=True, **kw:
        exact_for(self, elements, True, **kw))
    assert calls and not any(calls)
