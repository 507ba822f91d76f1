"""CUDA check: CvxpyLayer and QPFunction keep device and dtype and agree with a CPU run.

Run on a machine with CUDA: `python scripts/cuda_check.py` (see docs/device-checks.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cvxpy as cp
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy.qpth import QPFunction

N, M, B = 10, 8, 16


def _qp_layer() -> CvxpyLayer:
    x = cp.Variable(N)
    q, G, h = cp.Parameter(N), cp.Parameter((M, N)), cp.Parameter(M)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [G @ x <= h])
    return CvxpyLayer(prob, [q, G, h], [x], solver="pounce")


def _run(fn: Callable, data: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    """Solution and gradients of sum(x**2), on `device`, checked for device and dtype."""
    ps = [t.detach().to(device).requires_grad_(True) for t in data]
    t0 = time.perf_counter()
    x = fn(*ps)
    (x**2).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"  {device}: {time.perf_counter() - t0:.3f} s")
    for t in [x] + [p.grad for p in ps]:
        assert t.device.type == device and t.dtype == data[0].dtype, (t.device, t.dtype)
    return [x.detach().cpu()] + [p.grad.cpu() for p in ps]


def main() -> None:
    print("torch", torch.__version__, "|", torch.cuda.get_device_name(0))
    torch.manual_seed(0)
    layer = _qp_layer()
    for dt in (torch.float32, torch.float64):
        data = [torch.randn(B, N, dtype=dt), torch.randn(B, M, N, dtype=dt),
                torch.rand(B, M, dtype=dt)]
        cases = {
            "CvxpyLayer": lambda q, G, h: layer(q, G, h)[0],
            "QPFunction": lambda q, G, h: QPFunction(verbose=0)(
                torch.eye(N, dtype=q.dtype, device=q.device), q, G, h,
                q.new_empty(0), q.new_empty(0)),
        }
        for name, fn in cases.items():
            print(f"{name} {dt}:")
            cpu, cuda = _run(fn, data, "cpu"), _run(fn, data, "cuda")
            err = max((a - b).abs().max().item() for a, b in zip(cpu, cuda, strict=True))
            print(f"  max |cpu - cuda| over x and gradients = {err:.2e}")
            assert err < (1e-4 if dt == torch.float32 else 1e-9)
    print("CUDA CHECK OK")


if __name__ == "__main__":
    main()
