"""The nonnegative orthant (SCS key "l")."""

from __future__ import annotations

import torch

from pounce_kkt.cones.base import ConeCounts, DiagonalCone
from pounce_kkt.cones.centring import log_nt_ratio, tau


def nonneg_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Diagonal H for nonneg rows: s~/y~ per row (= s/y when s, y > 0)."""
    w = s - y
    return torch.exp(log_nt_ratio(w, tau(s * y, w * w, 1.0)))


class NonnegCone(DiagonalCone):
    """K = K* = R^d_+: Pi(w) = max(w, 0), D = diag(w > 0); H from :func:`nonneg_scaling`."""

    key = "l"

    @staticmethod
    def rows(cones: ConeCounts) -> int:
        return cones.l

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.clamp(w, min=0.0)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed((w > 0).to(w.dtype))

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nonneg_scaling(s, y)
