"""The exponential cone (SCS key "ep"), SCS's orientation: rows ``(x, y, z)`` with
``y exp(x/y) <= z``, y > 0 (and its closure). SCS's dual exponential cone ("ed") is solved as
this cone on mapped rows (:func:`pounce_kkt.cone_dims.scs_cones`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pounce_kkt.cones.barrier import barrier_scaling, log_barrier_parts, push_inside
from pounce_kkt.cones.base import ConeCounts
from pounce_kkt.cones.ray import (
    RayCone,
    chunked_exp,
    chunked_log,
    on_rows,
    ray_projection,
    with_closed_forms,
)


def exp_barrier(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f, grad f, hess f of f(x, y, z) = -log(y log(z/y) - x) - log y - log z (nu = 3).

    The barrier of the SCS-oriented exponential cone cl{y exp(x/y) <= z, y > 0}.
    """
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    psi = y * torch.log(z / y) - x
    gpsi = torch.stack([-torch.ones_like(x), torch.log(z / y) - 1.0, y / z], dim=-1)
    zero = torch.zeros_like(x)
    hpsi = torch.stack([
        torch.stack([zero, zero, zero], -1),
        torch.stack([zero, -1.0 / y, 1.0 / z], -1),
        torch.stack([zero, 1.0 / z, -y / (z * z)], -1),
    ], dim=-2)
    f = -torch.log(psi) - torch.log(y) - torch.log(z)
    extra_g = torch.stack([zero, 1.0 / y, 1.0 / z], -1)
    extra_h = torch.diag_embed(torch.stack([zero, 1.0 / (y * y), 1.0 / (z * z)], -1))
    return log_barrier_parts(f, psi, gpsi, hpsi, extra_g, extra_h)


def exp_interior(s: torch.Tensor) -> torch.Tensor:
    """True where s is strictly inside the exponential cone (with a finite barrier)."""
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    ok = (y > 0) & (z > 0)
    ys, zs = torch.where(ok, y, 1.0), torch.where(ok, z, 1.0)
    return ok & (ys * torch.log(zs / ys) - x > 0)


def exp_hess_inv(s: torch.Tensor) -> torch.Tensor:
    """(hess f)^-1 of the exp-cone barrier, in closed form (B, 3) -> (B, 3, 3).

    Near the boundary hess f holds 1/psi^2 next to O(1) eigenvalues, too wide a spread to
    form and invert in float64. With g = grad psi = (-1, a), hess f = [[1/psi^2, -a'/psi^2],
    [-a/psi^2, D + a a'/psi^2]] and D = v v'/(y psi) + diag(1/y^2, 1/z^2), v = (1, -y/z), so
    by block elimination on x (Schur complement D):
        (hess f)^-1 = [[psi^2 + a'D^-1 a, a'D^-1], [D^-1 a, D^-1]],
        D^-1 = E - E v v' E / (y psi + v'E v),  E = diag(y^2, z^2).
    """
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    psi = y * torch.log(z / y) - x
    a = torch.stack([torch.log(z / y) - 1.0, y / z], dim=-1)
    e = torch.stack([y * y, z * z], dim=-1)
    v = torch.stack([torch.ones_like(y), -y / z], dim=-1)
    ev = e * v
    Dinv = torch.diag_embed(e) - ev[..., :, None] * ev[..., None, :] / (
        y * psi + (v * ev).sum(-1))[..., None, None]
    Da = (Dinv @ a[..., None])[..., 0]
    top = torch.cat([(psi * psi + (a * Da).sum(-1))[..., None], Da], dim=-1)
    rest = torch.cat([Da[..., :, None], Dinv], dim=-1)
    return torch.cat([top[..., None, :], rest], dim=-2)


def exp_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H for exponential-cone blocks (:mod:`pounce_kkt.cones.barrier`): (B, 3) x (B, 3) ->
    (B, 3, 3)."""
    e = torch.tensor([-1.0, 1.0, 1.0], dtype=s.dtype, device=s.device)
    st = push_inside(s, y, e, exp_interior)
    _, grad, _ = exp_barrier(st)
    return barrier_scaling(st, y, grad, exp_hess_inv(st))


class ExpCone(RayCone):
    """K = cl{(x, y, z): y exp(x/y) <= z, y > 0}; K* = cl{(u, v, w): -u exp(v/u) <= e w, u < 0};
    one block of 3 rows per count of "ep".

    Closed forms: w in K -> w; -w in K* -> 0; x < 0 and y < 0 -> (x, 0, max(z, 0)) (the
    face {y = 0}, D = diag(1, 0, [z > 0])); otherwise the smooth boundary, g(r) = (r, 1, e^r)
    (:mod:`pounce_kkt.cones.ray`). H from :func:`exp_scaling`.
    """

    key = "ep"

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        return [3.0] * cones.ep

    @staticmethod
    def _ray(r):
        one, zero, er = torch.ones_like(r), torch.zeros_like(r), chunked_exp(r)
        return (torch.stack([r, one, er], -1), torch.stack([one, zero, er], -1),
                torch.stack([zero, zero, er], -1))

    def _cases(self, w):
        x, y, z = w[..., 0], w[..., 1], w[..., 2]
        ypos, zpos = torch.where(y > 0, y, 1.0), torch.where(z > 0, z, 1.0)
        in_k = ((y > 0) & (z > 0) & (x <= ypos * chunked_log(zpos / ypos))) | (
            (x <= 0) & (y == 0) & (z >= 0))
        xpos, zneg = torch.where(x > 0, x, 1.0), torch.where(z < 0, -z, 1.0)
        in_polar = ((x > 0) & (z < 0) & (y <= xpos * (1.0 + chunked_log(zneg / xpos)))) | (
            (x == 0) & (y <= 0) & (z <= 0))
        face = (x < 0) & (y < 0)
        return in_k, in_polar, face

    def project_and_derivative(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) -> (N, 3), (N, 3, 3)."""
        w = w.reshape(-1, 3)
        in_k, in_polar, face = self._cases(w)
        smooth = ~(in_k | in_polar | face)
        p, D = on_rows(smooth, w, (1.0, 1.0, 0.0),
                       lambda v: ray_projection(v, self._ray, shared=True))
        x, z = w[:, 0], w[:, 2]
        p_face = torch.stack([x, torch.zeros_like(x), torch.clamp(z, min=0.0)], -1)
        D_face = torch.diag_embed(torch.stack([torch.ones_like(x), torch.zeros_like(x),
                                               (z > 0).to(w.dtype)], -1))
        return with_closed_forms(w, p, D, in_k, in_polar, face, p_face, D_face)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return exp_scaling(s, y)
