"""What every cone class provides, and the two shapes they come in.

A cone class is the one home of one SCS cone kind: its key in the cone dict, its rows
(layout), its projection and the projection's derivative, and the scaling H of
``ds = -H dy`` (docs/design.md). Instances are batched over a leading dimension N and
work in float64 Torch ops.

- Diagonal cones (zero, nonneg) cover one run of rows; ``scaling`` returns the diagonal of
  H, ``(N, d)``.
- Block cones (SOC, PSD, exp, power) come one block per entry of their cone-dict entry;
  ``scaling`` returns dense blocks ``(N, d, d)``. A block cone instance serves a group of
  equal-sized blocks stacked along N (:meth:`BlockCone.for_group`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch


class ConeCounts(Protocol):
    """The cone dict's entries a cone class reads (:class:`pounce_kkt.cone_dims.ConeDims`
    holds them, validated): counts of zero, nonneg and exp cones, SOC dimensions, PSD
    orders, power-cone alphas, and the diagonal rows (zero + nonneg)."""

    z: int
    l: int  # noqa: E741 (SCS's key)
    q: tuple[int, ...]
    s: tuple[int, ...]
    ep: int
    p: tuple[float, ...]

    @property
    def n_diag(self) -> int: ...


@dataclass(frozen=True)
class ConeBlock:
    """One cone of a product cone: `kind` in {"q", "s", "ep", "p"}, rows [start, start + dim).

    `param` is the matrix order for "s", alpha for "p", and the dimension otherwise.
    """

    kind: str
    start: int
    dim: int
    param: float


class Cone:
    """Projection ``project(w) -> (N, d)``, its derivative ``derivative(w) -> (N, d, d)``
    (the Jacobian of ``project`` where it is differentiable; at a kink the one-sided one from
    the region ``w`` is classified in: in K -> identity, in the polar cone -> zero) and the
    scaling H at an iterate ``(s, y)``."""

    key: ClassVar[str]

    def project(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project_and_derivative(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once (cones that share work between the two override this)."""
        return self.project(w), self.derivative(w)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DiagonalCone(Cone):
    """A cone whose H is diagonal, covering one run of ``rows(cones)`` rows."""

    @staticmethod
    def rows(cones: ConeCounts) -> int:
        raise NotImplementedError


class BlockCone(Cone):
    """A cone with one dense H block per cone-dict entry."""

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        """One parameter per block of this kind in ``cones``, in row order."""
        raise NotImplementedError

    @staticmethod
    def dim(param: float) -> int:
        """Rows of one block with this parameter."""
        raise NotImplementedError

    @classmethod
    def for_group(cls, params: Sequence[float], repeat: int) -> BlockCone:
        """The instance for ``repeat`` copies (the batch) of the blocks with ``params``
        (all of one size), stacked item-major along N."""
        return cls()
