"""``optimizer._error_requires_grad``: whether the solution will be differentiated, from a
variable that requires grad (answered without evaluating the errors) or, when none does,
from the errors' graph (a tensor a cost function closes over)."""

from __future__ import annotations

import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import optimizer

pytestmark = THESEUS_MARKS


def _objective(scale: torch.Tensor, target: torch.Tensor):
    x = th.Vector(tensor=torch.zeros(2, 3, dtype=torch.float64), name="x")
    t = th.Vector(tensor=target, name="t")

    def err(optim_vars, aux_vars):
        return scale * (optim_vars[0].tensor - aux_vars[0].tensor)

    obj = th.Objective(dtype=torch.float64)
    w = th.ScaleCostWeight(torch.tensor(1.0, dtype=torch.float64))
    obj.add(th.AutoDiffCostFunction([x], err, 3, aux_vars=[t], cost_weight=w, name="c"))
    return obj


def test_error_requires_grad(monkeypatch):
    plain = torch.ones(2, 3, dtype=torch.float64)
    assert not optimizer._error_requires_grad(_objective(torch.tensor(2.0), plain))
    # a closed-over tensor: found through the errors
    scale = torch.tensor(2.0, requires_grad=True)
    assert optimizer._error_requires_grad(_objective(scale, plain))
    # an aux variable: answered without evaluating the errors
    calls = []
    monkeypatch.setattr(optimizer, "weighted_error", lambda *a: calls.append(1))
    assert optimizer._error_requires_grad(_objective(torch.tensor(2.0),
                                                     plain.clone().requires_grad_(True)))
    assert not calls
