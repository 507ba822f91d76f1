"""A CPU-backed stand-in for an accelerator, to test device round trips without a GPU.

`SimTensor` holds a real CPU tensor but reports ``SIM_DEVICE`` ("meta") as its device, so
code that branches on ``t.device`` sees a non-CPU tensor. Under `SimulatedDevice()`:

- ``.to(SIM_DEVICE)`` and factories with ``device=SIM_DEVICE`` give SimTensors;
  ``.to("cpu")`` gives the plain CPU tensor back (a device copy);
- an op mixing a SimTensor with a CPU tensor of dimension > 0 raises, as CUDA does
  ("expected all tensors to be on the same device"); 0-dim CPU scalars are allowed, as on CUDA;
- ``.numpy()`` of a SimTensor raises (a meta-device tensor has no host memory), as it does
  for a CUDA tensor.

What it cannot show: anything CUDA-specific (streams, asynchronous copies, pinned memory).
It checks the device logic of the code under test: inputs moved to the CPU before the
native solve, results and gradients moved back, no arithmetic across devices.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

SIM_DEVICE = torch.device("meta")
_aten = torch.ops.aten


def _is_sim(dev) -> bool:
    return dev is not None and torch.device(dev).type == SIM_DEVICE.type


class SimTensor(torch.Tensor):
    """A CPU tensor (``.elem``) that reports SIM_DEVICE as its device."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        extra = ({"strides": elem.stride()} if elem.layout == torch.strided
                 else {"layout": elem.layout})
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype,
                                                   device=SIM_DEVICE, requires_grad=False,
                                                   **extra)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    def __repr__(self) -> str:
        return f"SimTensor({self.elem})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _dispatch(func, args, kwargs):
    dev = kwargs.get("device")
    if func is _aten._to_copy.default:
        (t,) = args
        inner = t.elem if isinstance(t, SimTensor) else t
        out = _aten._to_copy.default(inner, **{k: v for k, v in kwargs.items() if k != "device"})
        stays = isinstance(t, SimTensor) if dev is None else _is_sim(dev)
        return SimTensor(out) if stays else out
    if _is_sim(dev):  # a factory (ones, zeros, empty, ...) on the simulated device
        return SimTensor(func(*args, **{**kwargs, "device": torch.device("cpu")}))
    flat: list[torch.Tensor] = []
    tree_map(lambda a: flat.append(a) if isinstance(a, torch.Tensor) else None, (args, kwargs))
    sim = [isinstance(a, SimTensor) for a in flat]
    if any(sim) and not all(s or a.dim() == 0 for s, a in zip(sim, flat, strict=True)):
        raise RuntimeError(f"{func}: tensors on {SIM_DEVICE} and cpu mixed")

    def unwrap(a):
        return a.elem if isinstance(a, SimTensor) else a

    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    if not any(sim) or dev is not None:  # an explicit (cpu) device wins
        return out
    return tree_map(lambda a: SimTensor(a) if isinstance(a, torch.Tensor) else a, out)


class SimulatedDevice(TorchDispatchMode):
    """Routes copies to / factories on SIM_DEVICE and every op on SimTensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(issubclass(t, SimTensor) for t in types) or _is_sim(kwargs.get("device")):
            return _dispatch(func, args, kwargs)
        return func(*args, **kwargs)


def on_cpu(t: torch.Tensor) -> torch.Tensor:
    """The CPU data of a SimTensor (for comparing values)."""
    assert isinstance(t, SimTensor), type(t)
    return t.elem
