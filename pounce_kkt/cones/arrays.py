"""The few array operations whose spelling differs between Torch and NumPy, so that the
barrier cones' H (pounce_kkt/cones/barrier.py, exp.py) is written once for both: Torch
where a graph or a device is involved (the dense backward differentiates H again), NumPy
for CPU float64 values without a graph, where a small Torch op's dispatch (~5-15 us)
costs more than its work (a layer's 1280-2560 exp blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def plain(*ts: torch.Tensor) -> bool:
    """Whether every tensor is CPU float64 without a graph (their NumPy views may stand in)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float64 and not t.requires_grad
               for t in ts)


class TorchOps:
    """The operations on tensors (differentiable)."""

    @staticmethod
    def stack(xs: Sequence[Any], axis: int) -> torch.Tensor:
        return torch.stack(list(xs), dim=axis)

    @staticmethod
    def cat(xs: Sequence[Any], axis: int) -> torch.Tensor:
        return torch.cat(list(xs), dim=axis)

    @staticmethod
    def norm(x: torch.Tensor) -> torch.Tensor:
        """2-norm over the last axis."""
        return torch.linalg.vector_norm(x, dim=-1)

    @staticmethod
    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """<a, b> over the last axis."""
        return (a * b).sum(-1)

    @staticmethod
    def matvec(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """M v over the last axes: (..., r, c) x (..., c) -> (..., r)."""
        return (M @ v[..., None])[..., 0]

    @staticmethod
    def diag(v: torch.Tensor) -> torch.Tensor:
        """(..., k) -> (..., k, k) diagonal matrices."""
        return torch.diag_embed(v)

    @staticmethod
    def swap(a: torch.Tensor) -> torch.Tensor:
        """The last two axes exchanged."""
        return a.transpose(-1, -2)

    @staticmethod
    def const(like: torch.Tensor, values: Sequence[float]) -> torch.Tensor:
        return like.new_tensor(tuple(values))

    @staticmethod
    def log(x: torch.Tensor) -> torch.Tensor:
        """log, in chunks on CPU (pounce_kkt/cones/ray.py `chunked_log`)."""
        from pounce_kkt.cones.ray import chunked_log

        return chunked_log(x)

    where = staticmethod(torch.where)
    ones_like = staticmethod(torch.ones_like)


class NumpyOps:
    """The same operations on NumPy arrays."""

    @staticmethod
    def stack(xs: Sequence[Any], axis: int) -> np.ndarray:
        return np.stack(list(xs), axis=axis)

    @staticmethod
    def cat(xs: Sequence[Any], axis: int) -> np.ndarray:
        return np.concatenate(list(xs), axis=axis)

    # einsum: a reduction over a short last axis (2, 3) costs numpy's sum() ~3x more
    @staticmethod
    def norm(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.einsum("...i,...i->...", x, x))

    @staticmethod
    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("...i,...i->...", a, b)

    @staticmethod
    def matvec(M: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.einsum("...ij,...j->...i", M, v)

    @staticmethod
    def diag(v: np.ndarray) -> np.ndarray:
        out = np.zeros(v.shape + (v.shape[-1],), dtype=v.dtype)
        idx = np.arange(v.shape[-1])
        out[..., idx, idx] = v
        return out

    @staticmethod
    def swap(a: np.ndarray) -> np.ndarray:
        return np.swapaxes(a, -1, -2)

    @staticmethod
    def const(like: np.ndarray, values: Sequence[float]) -> np.ndarray:
        return np.asarray(values, dtype=like.dtype)

    log = staticmethod(np.log)
    where = staticmethod(np.where)
    ones_like = staticmethod(np.ones_like)


def ops(t: Any) -> type[TorchOps] | type[NumpyOps]:
    """The operations for t's kind (NumPy array or Torch tensor)."""
    return NumpyOps if isinstance(t, np.ndarray) else TorchOps
