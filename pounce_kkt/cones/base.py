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
from typing import ClassVar

import torch

from pounce_kkt.cone_dims import ConeDims


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
    def rows(cones: ConeDims) -> int:
        raise NotImplementedError


class BlockCone(Cone):
    """A cone with one dense H block per cone-dict entry."""

    @staticmethod
    def params(cones: ConeDims) -> Sequence[float]:
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
