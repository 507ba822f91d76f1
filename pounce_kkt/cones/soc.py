"""The second-order cone (SCS key "q"): rows ``(t, v)``, ``t`` first, ``|v| <= t``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pounce_kkt.cones.base import BlockCone, ConeCounts
from pounce_kkt.cones.centring import log_nt_ratio, tau, tau_rel


def soc_nt_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NT scaling W^2 of an interior SOC pair: (B, d) x (B, d) -> (B, d, d), W^2 y = s.

    With J = diag(1, -I), s_ = s / sqrt(s'Js), y_ = y / sqrt(y'Jy), g = sqrt((1 + s_'y_)/2),
    wb = (s_ + J y_) / (2 g) (wb'J wb = 1), v = (wb + e) / sqrt(2 (wb_0 + 1)):
    W = beta (2 v v' - J), beta = (s'Js / y'Jy)^(1/4).
    """
    d = s.shape[-1]
    J = torch.ones(d, dtype=s.dtype, device=s.device)
    J[1:] = -1.0
    det_s = (s * s * J).sum(-1)
    det_y = (y * y * J).sum(-1)
    sn = s / torch.sqrt(det_s)[..., None]
    yn = y / torch.sqrt(det_y)[..., None]
    gamma = torch.sqrt((1.0 + (sn * yn).sum(-1)) / 2.0)
    wb = (sn + J * yn) / (2.0 * gamma)[..., None]
    e0 = torch.zeros(d, dtype=s.dtype, device=s.device)
    e0[0] = 1.0
    v = (wb + e0) / torch.sqrt(2.0 * (wb[..., 0] + 1.0))[..., None]
    beta = (det_s / det_y) ** 0.25
    W = beta[..., None, None] * (2.0 * v[..., :, None] * v[..., None, :] - torch.diag(J))
    return W @ W


def soc_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H for SOC blocks: (B, d) x (B, d) -> (B, d, d), NT at the recentred pair
    (:mod:`pounce_kkt.cones.centring`).

    Jordan frame of w = s - y: lam_{1,2} = w0 +- |w1|, c_{1,2} = (1, +-u)/2, u = w1/|w1|.
    W^2 = rho_1 (2 c1 c1') + rho_2 (2 c2 c2') + sqrt(rho_1 rho_2) (I - 2 c1 c1' - 2 c2 c2').
    """
    d = s.shape[-1]
    w = s - y
    w0, w1 = w[..., 0], w[..., 1:]
    a = torch.sqrt(torch.clamp((w1 * w1).sum(-1), min=1e-300))
    t = tau((s * y).sum(-1), (w * w).sum(-1), 1.0, tau_rel(w0 - a, w0 + a))
    l1 = log_nt_ratio(w0 + a, t)
    l2 = log_nt_ratio(w0 - a, t)
    r1, r2, rt = torch.exp(l1), torch.exp(l2), torch.exp(0.5 * (l1 + l2))
    u = w1 / a[..., None]
    # 2 c1 c1' and 2 c2 c2' share the blocks [[1, +-u'], [+-u, u u']] / 2.
    eye = torch.eye(d, dtype=s.dtype, device=s.device)
    H = rt[..., None, None] * eye
    uu = u[..., :, None] * u[..., None, :]
    plus = 0.5 * (r1 + r2) - rt
    minus = 0.5 * (r1 - r2)
    H00 = rt + plus
    H0u = minus[..., None] * u
    Huu = plus[..., None, None] * uu
    top = torch.cat([H00[..., None, None], H0u[..., None, :]], dim=-1)
    bottom = torch.cat([H0u[..., :, None], Huu], dim=-1)
    return H + torch.cat([top, bottom], dim=-2) - rt[..., None, None] * _e0e0(d, s)


def _e0e0(d: int, like: torch.Tensor) -> torch.Tensor:
    e = torch.zeros(d, d, dtype=like.dtype, device=like.device)
    e[0, 0] = 1.0
    return e


class SecondOrderCone(BlockCone):
    """K = K* = {(t, v): |v| <= t}; one block of ``d`` rows per entry of "q".

    Outside K and -K, with a = |v|, u = v / a:
        Pi(w) = (t + a)/2 (1, u),
        D = 1/2 [[1, u'], [u, (1 + t/a) I - (t/a) u u']].
    H from :func:`soc_scaling`.
    """

    key = "q"

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        return [float(d) for d in cones.q]

    @staticmethod
    def dim(param: float) -> int:
        return int(param)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        t, v = w[..., 0], w[..., 1:]
        a = torch.linalg.vector_norm(v, dim=-1)
        u = v / torch.clamp(a, min=1e-300)[..., None]
        c = 0.5 * (t + a)
        boundary = torch.cat([c[..., None], c[..., None] * u], dim=-1)
        out = torch.where((a <= t)[..., None], w, boundary)
        return torch.where((a <= -t)[..., None], torch.zeros_like(w), out)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        d = w.shape[-1]
        t, v = w[..., 0], w[..., 1:]
        a = torch.linalg.vector_norm(v, dim=-1)
        u = v / torch.clamp(a, min=1e-300)[..., None]
        r = t / torch.clamp(a, min=1e-300)
        eye = torch.eye(d - 1, dtype=w.dtype, device=w.device)
        uu = u[..., :, None] * u[..., None, :]
        lower = (1.0 + r)[..., None, None] * eye - r[..., None, None] * uu
        top = torch.cat([torch.ones_like(t)[..., None, None], u[..., None, :]], dim=-1)
        bottom = torch.cat([u[..., :, None], lower], dim=-1)
        D = 0.5 * torch.cat([top, bottom], dim=-2)
        inside = (a <= t)[..., None, None]
        D = torch.where(inside, torch.eye(d, dtype=w.dtype, device=w.device).expand_as(D), D)
        return torch.where((a <= -t)[..., None, None], torch.zeros_like(D), D)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return soc_scaling(s, y)
