"""The error metric a forward reports (``info.last_err``) at the written solution: taken
from the implicit step's own evaluation of the errors when a gradient follows (no second
``Objective.error_metric``), evaluated once otherwise; bitwise the metric at the solution
either way. A linearisation built without its gradient (the implicit step's, for its
exact blocks) evaluates the metric only when asked, at its own point."""

from __future__ import annotations

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import curve_fit, pose_graph, synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _cases():
    return [
        ("se2", lambda: synthetic_pose_graph(20, 3, dims=2, seed=2)[:2], "log_loss_radius"),
        ("se3", lambda: synthetic_pose_graph(20, 2, dims=3, seed=2)[:2], "log_loss_radius"),
        ("chain", lambda: pose_graph(2), "loop_w"),
        ("curve", lambda: curve_fit(3), "w"),
    ]


@pytest.mark.parametrize("name, build, key", _cases())
@pytest.mark.parametrize("grad", [True, False])
def test_last_err_is_the_metric_at_the_solution(monkeypatch, name, build, key, grad):
    obj, inputs = build()
    inputs = dict(inputs)
    inputs[key] = inputs[key].clone().requires_grad_(grad)
    calls = []
    metric = th.Objective.error_metric

    def spy(self, *a, **k):
        calls.append(1)
        return metric(self, *a, **k)

    layer = th.TheseusLayer(PounceOptimizer(obj))
    monkeypatch.setattr(th.Objective, "error_metric", spy)
    with torch.set_grad_enabled(grad):
        sol, info = layer.forward(inputs, optimizer_kwargs={"backward_mode": "implicit"})
    monkeypatch.undo()
    assert len(calls) == (0 if grad else 1)
    assert not info.last_err.requires_grad
    with torch.no_grad():
        obj.update({k: v.detach() for k, v in sol.items()})
        want = obj.error_metric()
    assert torch.equal(info.last_err, want)


def test_linearization_metric_on_request_at_its_point():
    obj, inputs = synthetic_pose_graph(20, 3, dims=2, seed=2)[:2]
    opt = PounceOptimizer(obj)
    with torch.no_grad():
        th.TheseusLayer(opt).forward(inputs)
    lin = opt._structure.linearization
    g = torch.Generator().manual_seed(0)
    d0, d1 = (1e-2 * torch.randn(3, opt._structure.n, generator=g, dtype=torch.float64)
              for _ in range(2))
    lazy = lin.at(d0)
    assert lazy._f is None  # nothing evaluated for the metric yet
    lin.at(d1)  # the optim vars move elsewhere
    want = lin.at(d0, jacobians=True).f
    lin.at(d1)
    assert torch.allclose(lazy.f, want, rtol=1e-14, atol=0)
    assert not torch.allclose(lazy.f, lin.at(d1).f, rtol=1e-6, atol=0)
