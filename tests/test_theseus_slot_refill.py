"""``compat.cost_function_groups`` refills the vectorised slots whose variables changed (new
aux data, a shared loss radius of one row or one per element) and, when a gradient is
needed, the slots filled under no_grad from tensors that require grad, by one
concatenation or expansion each instead of Theseus' fill of the whole schema: the same
errors as Theseus' ``Objective.error()``, the same gradient to the radius and the
measurements, and no call of Theseus' fill."""

from __future__ import annotations

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401
from theseus.core.vectorizer import Vectorize

from pounce_theseus.chart import TangentChart
from pounce_theseus.compat import (
    _FILLED,
    cost_function_groups,
    defer_vectorized_jacobians,
    weighted_error,
)
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _moved(inputs: dict, scale: float, radius_rows: int) -> dict:
    g = torch.Generator().manual_seed(int(100 * scale))
    out = {}
    for k, v in inputs.items():
        if k == "log_loss_radius":
            out[k] = (v + scale).expand(radius_rows, 1).clone().requires_grad_(True)
        elif k.startswith("EDGE"):  # measurements: SE2 tensors, moved along the group
            xyt = scale * torch.randn(v.shape[0], 3, generator=g, dtype=v.dtype)
            out[k] = th.SE2(tensor=v).compose(th.SE2.exp_map(xyt)).tensor.requires_grad_(True)
        else:
            out[k] = v.clone()
    return out


@pytest.mark.parametrize("radius_rows", [1, 3])
def test_refill_equals_theseus_fill(monkeypatch, radius_rows):
    obj, inputs, _, _ = synthetic_pose_graph(12, 3, dims=2, seed=3)
    assert any(k.startswith("EDGE") for k in inputs)
    Vectorize(obj)
    assert defer_vectorized_jacobians(obj)  # as PounceOptimizer leaves it
    obj.update(_moved(inputs, 0.0, radius_rows))
    with torch.no_grad():
        weighted_error(obj)  # the first fill (Theseus')
    fills = []
    fill = Vectorize._update_all_cost_fns_var_tensors
    monkeypatch.setattr(Vectorize, "_update_all_cost_fns_var_tensors",
                        staticmethod(lambda *a: fills.append(1) or fill(*a)))
    for step, scale in enumerate((0.1, 0.2)):
        new = _moved(inputs, scale, radius_rows)
        obj.update(new)
        with torch.no_grad():
            e_nograd = weighted_error(obj)  # new aux data, no graph needed
        e = weighted_error(obj)  # now with the graph to the radius and the measurements
        assert not fills, f"Theseus' fill ran at step {step}"
        wrt = [new["log_loss_radius"], *(v for k, v in new.items() if k.startswith("EDGE"))]
        got = torch.autograd.grad((e * e).sum(), wrt)
        monkeypatch.undo()
        want_e = obj.error()  # Theseus' own fill and errors
        want = torch.autograd.grad((want_e * want_e).sum(), wrt)
        monkeypatch.setattr(Vectorize, "_update_all_cost_fns_var_tensors",
                            staticmethod(lambda *a: fills.append(1) or fill(*a)))
        assert torch.equal(e.detach(), want_e.detach())
        assert torch.equal(e_nograd, want_e.detach())
        for a, b in zip(got, want, strict=True):
            assert b.abs().max() > 0
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())


def test_gathered_rows_are_reused_and_follow_the_positions():
    """The optim var slots gathered from the chart's stacked tensor
    (``compat._gather_slots``) take the stacked rows computed once per positions: the same
    index tensor at the next point, a new one when the members sit elsewhere in the stack;
    the errors are Theseus' either way."""
    obj, inputs, _, _ = synthetic_pose_graph(12, 3, dims=2, seed=3)
    Vectorize(obj)
    assert defer_vectorized_jacobians(obj)
    obj.update(inputs)
    chart = TangentChart(obj)
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(2):
        with torch.no_grad():
            chart.apply(1e-2 * torch.randn(3, chart.dim, generator=g, dtype=torch.float64))
            e = weighted_error(obj, chart.sources)
        (vectorized,) = [ev for cfs, ev in cost_function_groups(obj, chart.sources)
                         if len(cfs) > 1]
        rows = _FILLED[vectorized].rows
        assert rows  # the pose slots were gathered
        seen.append({i: r[1] for i, r in rows.items()})
        assert torch.equal(e, obj.error())
    assert all(seen[0][i] is seen[1][i] for i in seen[0])
    # the same values stacked in the reverse member order: new rows, the same errors
    reordered, flipped = {}, {}
    for name, (stacked, pos, piece) in chart.sources.items():
        k = stacked.shape[0] // 3
        if id(stacked) not in flipped:
            flipped[id(stacked)] = stacked.view(k, 3, -1).flip(0).reshape(stacked.shape)
        reordered[name] = (flipped[id(stacked)], k - 1 - pos, piece)
    with torch.no_grad():
        e = weighted_error(obj, reordered)
    assert all(_FILLED[vectorized].rows[i][1] is not seen[1][i] for i in seen[1])
    assert torch.equal(e, obj.error())
