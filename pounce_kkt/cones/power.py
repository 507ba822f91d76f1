"""The 3-dimensional power cone (SCS key "p", one alpha per cone), SCS's orientation: rows
``(x, y, z)`` with ``x^a y^(1-a) >= |z|``, x, y >= 0. (POUNCE's own layout puts ``|.|``'s
entry first: the native side permutes.) SCS's dual power cone (a negative alpha) is solved
as this cone on mapped rows (:func:`pounce_kkt.cone_dims.scs_cones`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pounce_kkt.cones import ray
from pounce_kkt.cones.barrier import (
    barrier_scaling,
    log_barrier_parts,
    push_inside,
    sherman_morrison,
)
from pounce_kkt.cones.base import ConeCounts


def power_barrier(s: torch.Tensor, alpha: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    """f, grad f, hess f of the power-cone barrier (nu = 3), alpha broadcast over s[..., 0].

    f(x, y, z) = -log(x^(2a) y^(2-2a) - z^2) - (1-a) log x - a log y, the barrier of the
    SCS-oriented power cone {x, y >= 0, x^a y^(1-a) >= |z|}.
    """
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    a = alpha
    g = torch.exp(2 * a * torch.log(x) + (2 - 2 * a) * torch.log(y))
    phi = g - z * z
    zero = torch.zeros_like(x)
    gphi = torch.stack([g * 2 * a / x, g * (2 - 2 * a) / y, -2 * z], dim=-1)
    hxx = g * 2 * a * (2 * a - 1) / (x * x)
    hxy = g * 2 * a * (2 - 2 * a) / (x * y)
    hyy = g * (2 - 2 * a) * (1 - 2 * a) / (y * y)
    hphi = torch.stack([
        torch.stack([hxx, hxy, zero], -1),
        torch.stack([hxy, hyy, zero], -1),
        torch.stack([zero, zero, -2.0 * torch.ones_like(x)], -1),
    ], dim=-2)
    f = -torch.log(phi) - (1 - a) * torch.log(x) - a * torch.log(y)
    extra_g = torch.stack([(1 - a) / x, a / y, zero], -1)
    extra_h = torch.diag_embed(torch.stack([(1 - a) / (x * x), a / (y * y), zero], -1))
    return log_barrier_parts(f, phi, gphi, hphi, extra_g, extra_h)


def power_interior(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """True where s is strictly inside the power cone."""
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    ok = (x > 0) & (y > 0)
    xs, ys = torch.where(ok, x, 1.0), torch.where(ok, y, 1.0)
    return ok & (torch.exp(2 * alpha * torch.log(xs) + (2 - 2 * alpha) * torch.log(ys))
                 - z * z > 0)


def power_hess_inv(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(hess f)^-1 of the power-cone barrier, stably (B, 3) -> (B, 3, 3).

    With r = x^a y^(1-a), zeta = |z|, psi1 = r - zeta (small at an active point),
    psi2 = r + zeta: f = -log psi1 - log psi2 - (1-a) log x - a log y, and
    hess r = -a (1-a) r w w', w = (1/x, -1/y, 0). So hess f = N + c w w'/psi1 +
    g1 g1'/psi1^2 with N = g2 g2'/psi2^2 + c w w'/psi2 + diag((1-a)/x^2, a/y^2, 0) (O(1),
    inverted directly), c = a (1-a) r, g_i = grad psi_i; two Sherman-Morrison steps add the
    large rank-one terms without forming them.
    """
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    a = alpha
    r = torch.exp(a * torch.log(x) + (1 - a) * torch.log(y))
    sgn = torch.where(z >= 0, 1.0, -1.0).to(s.dtype)
    zeta = z * sgn
    psi1, psi2 = r - zeta, r + zeta
    rx, ry = r * a / x, r * (1 - a) / y
    g1 = torch.stack([rx, ry, -sgn], dim=-1)
    g2 = torch.stack([rx, ry, sgn], dim=-1)
    w = torch.stack([1.0 / x, -1.0 / y, torch.zeros_like(x)], dim=-1)
    c = a * (1 - a) * r
    diag = torch.diag_embed(torch.stack([(1 - a) / (x * x), a / (y * y), torch.zeros_like(x)], -1))
    N = (g2[..., :, None] * g2[..., None, :] / (psi2 * psi2)[..., None, None]
         + (c / psi2)[..., None, None] * w[..., :, None] * w[..., None, :] + diag)
    Minv = sherman_morrison(torch.linalg.inv(N), w, psi1 / c)
    return sherman_morrison(Minv, g1, psi1 * psi1)


def power_scaling(s: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """H for power-cone blocks (:mod:`pounce_kkt.cones.barrier`): (B, 3) x (B, 3) x alpha
    (broadcastable to B) -> (B, 3, 3)."""
    e = torch.tensor([1.0, 1.0, 0.0], dtype=s.dtype, device=s.device)
    st = push_inside(s, y, e, lambda v: power_interior(v, alpha))
    _, grad, _ = power_barrier(st, alpha)
    return barrier_scaling(st, y, grad, power_hess_inv(st, alpha))


class PowerCone(ray.RayCone):
    """K = {(x, y, z): x, y >= 0, x^a y^(1-a) >= |z|}; K* = {(u, v, w): u, v >= 0,
    (u/a)^a (v/(1-a))^(1-a) >= |w|}; one block of 3 rows per alpha of "p".
    alpha: a float or an (N,) tensor.

    Closed forms: w in K -> w; -w in K* -> 0; z = 0 -> (max(x, 0), max(y, 0), 0);
    otherwise the smooth boundary, g(u) = (e^((1-a)u), e^(-a u), sign z)
    (:mod:`pounce_kkt.cones.ray`). H from :func:`power_scaling`.
    """

    key = "p"

    def __init__(self, alpha):
        self.alpha = alpha

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        return list(cones.p)

    @classmethod
    def for_group(cls, params: Sequence[float], repeat: int) -> PowerCone:
        return cls(torch.tensor(list(params), dtype=torch.float64).repeat(repeat))

    def _alpha(self, w):
        a = torch.as_tensor(self.alpha, dtype=w.dtype, device=w.device)
        return a.expand(w.shape[0]) if a.dim() == 0 else a.reshape(-1)

    @staticmethod
    def _geo(x, y, a, b):
        """x^a y^b for x, y >= 0 (0 where either is 0)."""
        ok = (x > 0) & (y > 0)
        xs, ys = torch.where(ok, x, 1.0), torch.where(ok, y, 1.0)
        return torch.where(
            ok, ray.chunked_exp(a * ray.chunked_log(xs) + b * ray.chunked_log(ys)), 0.0)

    def project_and_derivative(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) -> (N, 3), (N, 3, 3)."""
        w = w.reshape(-1, 3)
        a = self._alpha(w)
        x, y, z = w[:, 0], w[:, 1], w[:, 2]
        in_k = (x >= 0) & (y >= 0) & (self._geo(x, y, a, 1 - a) >= z.abs())
        in_polar = (x <= 0) & (y <= 0) & (
            self._geo(-x / a, -y / (1 - a), a, 1 - a) >= z.abs())
        flat = z == 0
        smooth = ~(in_k | in_polar | flat)

        def smooth_part(v):
            am, sg = a, torch.sign(v[:, 2])

            def boundary(u):
                shape = u.shape
                al = am.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
                s_ = sg.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
                ex, ey = ray.chunked_exp((1 - al) * u), ray.chunked_exp(-al * u)
                zero = torch.zeros_like(u)
                return (torch.stack([ex, ey, s_], -1),
                        torch.stack([(1 - al) * ex, -al * ey, zero], -1),
                        torch.stack([(1 - al) ** 2 * ex, al * al * ey, zero], -1))

            return ray.ray_projection(v, boundary)

        p, D = ray.on_rows(smooth, w, (0.0, 0.0, 1.0), smooth_part)
        zero = torch.zeros_like(x)
        p_flat = torch.stack([torch.clamp(x, min=0.0), torch.clamp(y, min=0.0), zero], -1)
        D_flat = torch.diag_embed(torch.stack([(x > 0).to(w.dtype), (y > 0).to(w.dtype), zero], -1))
        return ray.with_closed_forms(w, p, D, in_k, in_polar, flat, p_flat, D_flat)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return power_scaling(s, y, self._alpha(s))
