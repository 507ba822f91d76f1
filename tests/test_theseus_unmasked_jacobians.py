"""compat.weighted_jacobians_error: the numbers of Theseus' own (batch-masked)
``weighted_jacobians_error`` of a vectorised cost function, robust or not, with the mask
skipped only where no row's weight is zero; the masking flag is left as it was."""

from __future__ import annotations

import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS

from pounce_theseus.compat import (
    accurate_se2_log_jacobian,
    cost_function_groups,
    weighted_jacobians_error,
)
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _vectorized(obj: th.Objective, inputs: dict) -> list:
    """The vectorised cost functions of ``obj``'s schemas of several cost functions, each
    holding its cost functions' tensors stacked (as the linearisation evaluates them)."""
    th.Vectorize(obj)
    obj.update(inputs)
    return [ev for cfs, ev in cost_function_groups(obj) if len(cfs) > 1]


def _assert_same(cost_fn) -> None:
    assert cost_fn._supports_masking
    with accurate_se2_log_jacobian():  # as weighted_jacobians_error takes them
        want_j, want_e = cost_fn.weighted_jacobians_error()
    got_j, got_e = weighted_jacobians_error(cost_fn)
    assert cost_fn._supports_masking  # restored
    assert torch.equal(got_e, want_e)
    assert len(got_j) == len(want_j)
    for g, w in zip(got_j, want_j, strict=True):
        assert torch.equal(g, w)


def test_robust_pose_graph_rows_equal_theseus_masked() -> None:
    obj, inputs, _, _ = synthetic_pose_graph(8, 3, dims=3)
    fns = _vectorized(obj, inputs)
    assert any(isinstance(f, th.RobustCostFunction) for f in fns)
    for cost_fn in fns:
        _assert_same(cost_fn)


def test_zero_weight_rows_keep_theseus_mask() -> None:
    """A batch element whose weight is zero gets zero Jacobians and error, as Theseus'
    mask gives them, even where its values are not finite (the unmasked path would give
    0 * NaN there)."""
    bsz, dtype = 3, torch.float64
    w = torch.tensor([[1.0], [0.0], [2.0]], dtype=dtype)
    obj = th.Objective(dtype=dtype)
    weight = th.ScaleCostWeight(th.Variable(w, name="w"))
    for i in range(3):
        x = th.SE2(name=f"x{i}", dtype=dtype)
        target = th.SE2(name=f"t{i}", dtype=dtype)
        obj.add(th.Difference(x, target, weight, name=f"d{i}"))
    g = torch.Generator().manual_seed(0)
    inputs = {
        **{f"x{i}": th.SE2.exp_map(torch.randn(bsz, 3, generator=g, dtype=dtype)).tensor
           for i in range(3)},
        **{f"t{i}": th.SE2.exp_map(torch.randn(bsz, 3, generator=g, dtype=dtype)).tensor
           for i in range(3)},
    }
    inputs["t1"][1] = float("nan")
    (cost_fn,) = _vectorized(obj, inputs)
    _assert_same(cost_fn)
    jac, err = weighted_jacobians_error(cost_fn)
    rows = err.view(3, bsz, -1)  # cost-function-major
    assert torch.count_nonzero(rows[:, 1]) == 0
    assert torch.count_nonzero(jac[0].view(3, bsz, -1)[:, 1]) == 0
    assert torch.count_nonzero(rows[:, 0]) > 0
    assert torch.isfinite(err).all() and all(torch.isfinite(j).all() for j in jac)
