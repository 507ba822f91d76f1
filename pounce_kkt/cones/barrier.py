"""The scaling H of the non-symmetric cones (exp, power) from their log barriers.

``H = (mu hess f(s~))^-1`` with f the cone's 3-self-concordant log barrier, ``s~`` the
iterate pushed just inside the cone, and ``mu = |y| / |grad f(s~)|``. On the central path
(``y = -mu grad f(s)``) this is exactly ``s'y / 3`` and ``H y = s``; off it, this mu keeps
the tangent curvature block of H right (it scales like ``|y|``, independent of how close s~
is to the boundary), for the same reason as the symmetric cones' recentring
(:mod:`pounce_kkt.cones.centring`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pounce_kkt.cones.arrays import ops
from pounce_kkt.cones.centring import TAU_FLOOR

# Relative push ladder into the interior (the smallest that gives a strictly interior point
# wins); the push changes H by O(push) and plays the role of centring.TAU_REL_MIXED.
PUSH_LADDER = tuple(10.0 ** -k for k in range(8, 1, -1))


def log_barrier_parts(f, psi, gpsi, hpsi, extra_g, extra_h):
    """(f, grad, hess) of f = -log(psi) - (terms with gradient extra_g and hessian extra_h)."""
    grad = -gpsi / psi[..., None] - extra_g
    hess = (gpsi[..., :, None] * gpsi[..., None, :] / (psi * psi)[..., None, None]
            - hpsi / psi[..., None, None] + extra_h)
    return f, grad, hess


def push_inside(s: torch.Tensor, y: torch.Tensor, e: torch.Tensor,
                inside: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """s itself if s - PUSH_LADDER[0] * scale * e is still interior (s is not closer to the
    boundary than the smallest push), else s + delta e with the smallest delta of
    PUSH_LADDER (x scale) giving an interior point (the largest where none does). `inside`
    maps (..., 3) to (...,); the rungs are checked in order, each on every row, until every
    row has its answer (a snapped boundary point is interior at the first rung). Tensors,
    or NumPy arrays (pounce_kkt/cones/arrays.py)."""
    xp = ops(s)
    with torch.no_grad():
        scale = 1.0 + xp.norm(s) + xp.norm(y)
        done = inside(s + ((-PUSH_LADDER[0]) * scale)[..., None] * e)
        delta = xp.where(done, 0.0, PUSH_LADDER[-1] * scale)
        todo = ~done
        for rung in PUSH_LADDER:
            if not bool(todo.any()):
                break
            push = rung * scale
            hit = todo & inside(s + push[..., None] * e)
            delta = xp.where(hit, push, delta)
            todo = todo & ~hit
    return s + delta[..., None] * e


def sherman_morrison(Minv: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(M + u u' / c)^-1 from M^-1, for c > 0: M^-1 - M^-1 u u' M^-1 / (c + u'M^-1 u)."""
    Mu = (Minv @ u[..., None])[..., 0]
    return Minv - Mu[..., :, None] * Mu[..., None, :] / (c + (u * Mu).sum(-1))[..., None, None]


def barrier_scaling(s: torch.Tensor, y: torch.Tensor, grad: torch.Tensor,
                    hess_inv: torch.Tensor) -> torch.Tensor:
    """H = hess_inv / mu, mu = |y| / |grad| (floored so that y == 0 gives H ~ 1e20, not inf),
    symmetrised. Tensors, or NumPy arrays (pounce_kkt/cones/arrays.py)."""
    xp = ops(s)
    mu = xp.norm(y) / xp.norm(grad)
    mu = mu + TAU_FLOOR * (1.0 + xp.dot(s, s)) / 3.0
    H = hess_inv / mu[..., None, None]
    return 0.5 * (H + xp.swap(H))
