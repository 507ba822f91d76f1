"""Input checks that name the offending array and batch item."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of `t` is finite.

    CPU tensors are checked with numpy, which runs on the calling thread: a Torch reduction
    over a large tensor wakes Torch's intra-op thread pool, whose spinning workers then
    compete with the native batch solve that follows for the same cores.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float64, torch.float32):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def check_finite(name: str, t: torch.Tensor | None) -> None:
    """Raise ValueError naming `name` and the first batch index holding NaN or Inf.

    `t` is (B, k) batch-first or (k,) unbatched.
    """
    if t is None or all_finite(t):
        return
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return
    if t.dim() >= 2:
        items = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        kind = "NaN" if bool(torch.isnan(t[items[0]]).any()) else "Inf"
        raise ValueError(
            f"{name} contains {kind} at batch index {items[0]}"
            + (f" (items {items[:10]})" if len(items) > 1 else "")
        )
    kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
    raise ValueError(f"{name} contains {kind} (entry {int(bad.nonzero()[0, 0])})")


def check_real(name: str, value: object) -> None:
    """Raise TypeError if `value` (a tensor or array) holds complex numbers.

    The solve is real; casting a complex input to float64 would silently drop its
    imaginary part.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return
    if (torch.is_complex(value) if isinstance(value, torch.Tensor)
            else np.issubdtype(np.dtype(dtype), np.complexfloating)):
        raise TypeError(f"{name} is complex ({dtype}); POUNCE solves real problems: pass its "
                        "real and imaginary parts as separate real inputs")


def check_last_dim(name: str, t: torch.Tensor | None, size: int) -> None:
    """Raise ValueError unless `t` is (size,) or (B, size)."""
    if t is None:
        return
    if t.dim() not in (1, 2) or t.shape[-1] != size:
        raise ValueError(
            f"{name} must have shape ({size},) or (B, {size}); got {tuple(t.shape)}"
        )


def batch_size(named: dict[str, torch.Tensor | None]) -> int | None:
    """The common batch size of the batched tensors in `named` (None if all are unbatched).

    Batch sizes must agree, except that a batch of 1 broadcasts; an empty batch raises.
    """
    sizes = {k: v.shape[0] for k, v in named.items() if v is not None and v.dim() == 2}
    empty = [k for k, b in sizes.items() if b == 0]
    if empty:
        raise ValueError(f"{empty[0]} has batch size 0 (an empty batch); pass at least one item "
                         "(or an unbatched (k,) array)")
    big = {k: b for k, b in sizes.items() if b != 1}
    if len(set(big.values())) > 1:
        raise ValueError(f"batch sizes disagree: {big}")
    if big:
        return next(iter(big.values()))
    return 1 if sizes else None


#: Data whose largest |entry| exceeds this, or spans more than this ratio between its
#: largest and smallest nonzero |entry|, is beyond what relative tolerances can resolve.
EXTREME_SCALE = 1e12


def scaling_hint(values: dict[str, Any], item: int) -> str:
    """A note for a failed solve of batch item `item` when its data is extremely scaled.

    `values` maps array names to that item's values (tensors or arrays, any shape; None
    skipped). Returns "" for well-scaled data, else a sentence naming the arrays holding the
    largest and smallest nonzero |entry|.
    """
    big = (0.0, "")
    small = (np.inf, "")
    for name, t in values.items():
        if t is None:
            continue
        a = np.abs(t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
        nz = a[a > 0]
        if nz.size:
            big = max(big, (float(nz.max()), name))
            small = min(small, (float(nz.min()), name))
    if big[0] <= EXTREME_SCALE and big[0] <= EXTREME_SCALE * small[0]:
        return ""
    return (f"The data of batch item {item} is extremely scaled: its largest |entry| is "
            f"{big[0]:.1e} (in {big[1]}), its smallest nonzero one {small[0]:.1e} (in "
            f"{small[1]}); that status may come from the scaling rather than the problem. "
            "Rescale the rows of A and b (and q, P) to comparable magnitudes")
