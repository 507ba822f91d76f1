"""PounceOptimizer's solve and implicit step run their Torch work on one intra-op thread
(pounce_kkt.torch_threads.serial_torch) and leave the caller's thread count as it was."""

from __future__ import annotations

import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import central_difference, tight_gauss_newton

pytestmark = THESEUS_MARKS


def _fit(seen: list[int]) -> tuple[th.Objective, dict[str, torch.Tensor]]:
    """``y = a exp(b x)``, its error function recording the intra-op thread count."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0.0, 1.0, 20, dtype=dtype).expand(2, 20).clone()
    y = 1.7 * torch.exp(-1.2 * x) + 0.05 * torch.randn(2, 20, generator=g, dtype=dtype)
    a, b = th.Vector(1, name="a", dtype=dtype), th.Vector(1, name="b", dtype=dtype)
    xv, yv = th.Variable(x, name="x"), th.Variable(y, name="y")

    def err(optim_vars, aux_vars):
        seen.append(torch.get_num_threads())
        return optim_vars[0].tensor * torch.exp(optim_vars[1].tensor * aux_vars[0].tensor) \
            - aux_vars[1].tensor

    obj = th.Objective(dtype=dtype)
    weight = th.ScaleCostWeight(torch.tensor(1.0, dtype=dtype))
    obj.add(th.AutoDiffCostFunction([a, b], err, 20, aux_vars=[xv, yv], cost_weight=weight,
                                    name="fit"))
    inputs = {"a": torch.ones(2, 1, dtype=dtype), "b": torch.zeros(2, 1, dtype=dtype),
              "x": x, "y": y}
    return obj, inputs


def test_solve_and_implicit_step_on_one_thread() -> None:
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        obj, inputs = _fit(seen)
        layer = th.TheseusLayer(PounceOptimizer(obj))
        y = inputs["y"].clone().requires_grad_(True)
        sol, info = layer.forward({**inputs, "y": y},
                                  optimizer_kwargs={"backward_mode": "implicit"})
        assert torch.get_num_threads() == 2
        assert seen.count(1) >= 5  # the solve's and the implicit step's evaluations
        assert bool(info.status.tolist()) and all(
            s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
        grad = torch.autograd.grad(sol["a"].sum(), y)[0]
        assert torch.get_num_threads() == 2
        # the solution of Theseus' Gauss-Newton run to its noise floor, and the gradient
        # by central differences through it
        ref_seen: list[int] = []
        ref_obj, _ = _fit(ref_seen)
        ref = th.TheseusLayer(tight_gauss_newton(ref_obj))

        def loss(inp):
            with torch.no_grad():
                out, _ = ref.forward(dict(inp))
            return out["a"].sum(dim=1)

        with torch.no_grad():
            ref_sol, _ = ref.forward(dict(inputs))
        assert torch.allclose(sol["a"], ref_sol["a"], rtol=0, atol=1e-7)
        fd = central_difference(loss, inputs, "y", (3,), h=1e-3)
        assert torch.allclose(grad[:, 3], fd.reshape(-1), rtol=1e-6, atol=1e-8)
        assert set(ref_seen) == {2}  # Theseus' own optimizer is left alone
    finally:
        torch.set_num_threads(outer)
