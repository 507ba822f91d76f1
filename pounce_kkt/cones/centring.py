"""The recentred central pair behind the symmetric cones' scaling H.

At a converged interior-point iterate ``(s, y)`` the KKT adjoint (docs/design.md) needs
``ds = -H dy``. For the symmetric cones (nonneg, SOC, PSD) H is the Nesterov-Todd scaling
``W^2`` (``W^2 y = s``) of the central-path pair that shares the iterate's ``w = s - y``:
``s~ - y~ = w`` and ``s~ o y~ = tau e`` with ``tau = <s, y> / rank`` (floored). In the Jordan
frame of w (eigenvalues lam_i) that pair has ``s~_i y~_i = tau``, ``s~_i - y~_i = lam_i``, so
each NT eigenvalue is ``rho_i = s~_i / y~_i = exp(2 asinh(lam_i / (2 sqrt(tau))))`` and the
mixed (off-frame) ones are ``sqrt(rho_i rho_j)``. For an iterate already on the central path
this IS the NT scaling of ``(s, y)``. Why recentre: the finite "tangent" eigenvalues of H at
a strictly complementary limit (e.g. ``|s|/|y|`` across an active SOC) are what the gradient
depends on, and NT at an off-centre iterate gets them wrong by the iterate's centrality
ratio; the recentred pair gets them right for any nearby iterate, and is defined even when
``s = b - A x`` lands a hair outside the cone.
"""

from __future__ import annotations

import torch

# tau floor relative to |w|^2 / rank for nonneg rows: keeps H within ~1e20 of its scale when
# s'y == 0 exactly (a diagonal H holds any spread exactly).
TAU_FLOOR = 1e-20
# The same for SOC and PSD blocks whose w has eigenvalues of both signs (tau_rel), where H
# mixes coordinates: a dense block holding eigenvalues rho_max next to the finite curvature
# ones loses rho_max * 1e-16 of them, while a tau above the iterate's perturbs the limit by
# ~tau / lam^2. On the SOCP/PSD/exp families of testing_helpers, 1e-8 keeps dense and sparse
# solves within ~1e-9 of each other and the gradient within ~1e-7 of finite differences
# (1e-10 halves the latter but lets dense and sparse drift apart to 1e-7).
TAU_REL_MIXED = 1e-8


def log_nt_ratio(lam: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """log(s~/y~) of the scalar central pair with s~ - y~ = lam, s~ y~ = tau (stable, smooth)."""
    return 2.0 * torch.asinh(lam / (2.0 * torch.sqrt(tau)))


def tau(inner: torch.Tensor, w_sq: torch.Tensor, rank: float,
        rel: float | torch.Tensor = TAU_FLOOR) -> torch.Tensor:
    """The centring parameter: <s, y> / rank, but at least rel * |w|^2 / rank."""
    return torch.maximum(inner / rank, rel * w_sq / rank) + TAU_FLOOR


def tau_rel(lam_min: torch.Tensor, lam_max: torch.Tensor) -> torch.Tensor:
    """The relative floor of a block whose w has these extreme eigenvalues: TAU_REL_MIXED
    only when they differ in sign (H then holds ~1/tau next to finite eigenvalues); a block
    with w inside K or inside -K (H all ~1/tau or all ~tau) keeps the exact TAU_FLOOR."""
    mixed = (lam_min < 0) & (lam_max > 0)
    return torch.where(mixed, TAU_REL_MIXED, TAU_FLOOR).to(lam_min.dtype)
