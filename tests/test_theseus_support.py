"""What the Theseus test modules share: their marks, a one-thread fixture, a robust SE2
pose graph's per-element solve, a solved structure re-centred at its answer and the A/B run
of the polish's exact blocks.

Imported by the test_theseus_* modules (pytest puts tests/ on sys.path); it holds no tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import theseus as th
import torch

from pounce_theseus import PounceOptimizer
from pounce_theseus.linearization import LinearizedPoint
from testing_helpers.theseus_problems import one_torch_thread, synthetic_pose_graph

# No xfail for a build without the native NLP solve: `nlp` is a default feature, so such a
# build is broken and every Theseus test must fail on it (PounceOptimizer raises, naming
# the missing feature).
THESEUS_MARKS = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """The solves are small; intra-op threads only contend on a shared machine."""
    with one_torch_thread():
        yield


def se2_element_gradients(opt_kwargs: dict, n: int = 40, bsz: int = 4, seed: int = 1):
    """A robust SE2 pose graph (B = 4) whose element 1 converges linearly in the
    Gauss-Newton polish, solved by PounceOptimizer(**opt_kwargs): iterations, final errors
    and each element's outer gradient d loss_b / d log_loss_radius."""
    obj, inputs, poses, gt = synthetic_pose_graph(n, bsz, dims=2, seed=seed)
    opt = PounceOptimizer(obj, **opt_kwargs)
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    sol, info = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                             optimizer_kwargs={"backward_mode": "implicit"})
    loss = sum(th.local(th.SE2(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True))
    grads = [torch.autograd.grad(loss[b], radius, retain_graph=True)[0].item()
             for b in range(bsz)]
    return opt.last_solve["iterations"], info.last_err, torch.tensor(grads)


def recentred_structure(objective: th.Objective, inputs: dict) -> Any:
    """The PounceOptimizer's structure after one forward of `objective` on `inputs`, its
    chart re-centred at the answer (so the chart's curvature term is zero at delta = 0)."""
    opt = PounceOptimizer(objective)
    with torch.no_grad():
        th.TheseusLayer(opt).forward(inputs)
    structure = opt._structure
    structure.chart.recenter()
    return structure


def polish_blocks_ab(monkeypatch: pytest.MonkeyPatch, record: Callable[..., Any],
                     replacement: Callable[[Callable], Callable]) -> list:
    """The SE2 graph of `se2_element_gradients` solved twice: with
    `LinearizedPoint.exact_for` spied (`record(chart_curvature=..., **kw)` of each call
    kept), then with `replacement(exact_for)` in its place; asserts both take the same
    iterations and errors (1e-12), reach a tight solve's errors (1e-10), and keep both outer
    gradients of element 1 within 1e-4 of the tight solve's. Returns the recorded values
    of the first solve."""
    calls = []
    exact_for = LinearizedPoint.exact_for

    def spy(self, elements, chart_curvature=True, **kw):
        calls.append(record(chart_curvature=chart_curvature, **kw))
        return exact_for(self, elements, chart_curvature, **kw)

    monkeypatch.setattr(LinearizedPoint, "exact_for", spy)
    it, err, g = se2_element_gradients({})
    monkeypatch.setattr(LinearizedPoint, "exact_for", replacement(exact_for))
    it_b, err_b, g_b = se2_element_gradients({})
    monkeypatch.undo()
    _, err_ref, g_ref = se2_element_gradients({"tol": 1e-12, "max_iterations": 300})
    assert np.array_equal(it, it_b)
    assert torch.allclose(err, err_b, rtol=1e-12, atol=0)
    assert torch.allclose(err, err_ref, rtol=1e-10, atol=0)
    assert abs(g[1] - g_ref[1]) <= 1e-4 * abs(g_ref[1])
    assert abs(g_b[1] - g_ref[1]) <= 1e-4 * abs(g_ref[1])
    return calls
