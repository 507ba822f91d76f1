"""Tangent coordinates of a Theseus objective's optimisation variables.

The NLP is solved in the local chart ``x = x0 (+) delta`` around base values ``x0``: for a
Vector/Point ``x0 + delta``, for a Lie group Theseus' right perturbation
``x0 * exp(delta)`` (``var.retract``). ``delta`` is laid out per batch element as the
concatenation of the variables' tangent vectors in the objective's ``optim_vars`` order
(``var.dof()`` entries each), the layout of Theseus' own linearisations.
"""

from __future__ import annotations

import torch
from theseus import Objective, Vector

__all__ = ["TangentChart"]


class TangentChart:
    """Maps a tangent vector ``delta`` (B, n) to values of the objective's optim vars."""

    def __init__(self, objective: Objective):
        self.objective = objective
        self.vars = list(objective.optim_vars.values())
        self.offsets: dict[str, slice] = {}
        start = 0
        for v in self.vars:
            self.offsets[v.name] = slice(start, start + v.dof())
            start += v.dof()
        self.dim = start
        # Variables whose retract is Theseus' plain Vector one (x0 + delta) are set
        # directly; the others go through Theseus' (possibly vectorised) retract.
        self._plain = [type(v)._retract_impl is Vector._retract_impl for v in self.vars]
        self._others = [v for v, plain in zip(self.vars, self._plain, strict=True) if not plain]
        self._other_cols = torch.cat(
            [torch.arange(self.offsets[v.name].start, self.offsets[v.name].stop)
             for v in self._others]
        ) if self._others else None
        self.base: list[torch.Tensor] = []
        self.recenter()

    def recenter(self) -> None:
        """Take the variables' current values (detached) as the chart's base point."""
        b = self.objective.batch_size
        self.base = [
            v.tensor.detach().expand(b, *v.tensor.shape[1:]).clone() for v in self.vars
        ]

    def apply(self, delta: torch.Tensor) -> None:
        """Set every optim var to ``base (+) delta`` (differentiable in ``delta``)."""
        for v, t, plain in zip(self.vars, self.base, self._plain, strict=True):
            if plain:
                sl = self.offsets[v.name]
                v.update(torch.add(t, delta[:, sl]))
            else:
                v.update(t)
        if self._others:
            # Theseus' (possibly vectorised) retract; it only updates the variables,
            # without recomputing the vectorisation caches.
            cols = self._other_cols.to(delta.device)
            d = delta if cols.numel() == self.dim else delta[:, cols]
            self.objective._retract_method(d, self._others, force_update=True)

    def restore(self) -> None:
        """Put the base values back into the variables."""
        for v, t in zip(self.vars, self.base, strict=True):
            v.update(t)

    def zeros(self, batch_size: int) -> torch.Tensor:
        ref = self.base[0]
        return torch.zeros(batch_size, self.dim, dtype=ref.dtype, device=ref.device)
