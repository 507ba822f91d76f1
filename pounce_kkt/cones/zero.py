"""The zero cone {0} (equality rows, SCS key "z"; cvxpy/diffcp may write "f")."""

from __future__ import annotations

import torch

from pounce_kkt.cones.base import ConeCounts, DiagonalCone


class ZeroCone(DiagonalCone):
    """K = {0}, K* = everything: Pi(w) = 0, D = 0, and H = 0 (``ds = 0``)."""

    key = "z"

    @staticmethod
    def rows(cones: ConeCounts) -> int:
        return cones.z

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(w)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return w.new_zeros(w.shape + w.shape[-1:])

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return s.new_zeros(s.shape)
