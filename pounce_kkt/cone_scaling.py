"""The scaling H of the linearised complementarity ``ds = -H dy``, cone by cone.

At a converged interior-point iterate ``(s, y)`` the KKT adjoint (docs/design.md) needs, for
each cone, a symmetric positive semidefinite H with ``ds = -H dy``. Everything here is batched
over a leading dimension B and written in differentiable Torch ops, so the dense backward can
be differentiated again.

Symmetric cones (nonneg, SOC, PSD): H is the Nesterov-Todd scaling ``W^2`` (``W^2 y = s``),
evaluated at the central-path pair that shares the iterate's ``w = s - y``:
``s~ - y~ = w`` and ``s~ o y~ = tau e`` with ``tau = <s, y> / rank`` (floored). In the Jordan
frame of w (eigenvalues lam_i) that pair has ``s~_i y~_i = tau``, ``s~_i - y~_i = lam_i``, so
each NT eigenvalue is ``rho_i = s~_i / y~_i = exp(2 asinh(lam_i / (2 sqrt(tau))))`` and the
mixed (off-frame) ones are ``sqrt(rho_i rho_j)``. For an iterate already on the central path
this IS the NT scaling of ``(s, y)``. Why recentre: the finite "tangent" eigenvalues of H at
a strictly complementary limit (e.g. ``|s|/|y|`` across an active SOC) are what the gradient
depends on, and NT at an off-centre iterate gets them wrong by the iterate's centrality
ratio; the recentred pair gets them right for any nearby iterate, and is defined even when
``s = b - A x`` lands a hair outside the cone.

Exp and power cones: ``H = (mu hess f(s~))^-1`` with f the cone's 3-self-concordant log
barrier, ``s~`` the iterate pushed just inside the cone, and ``mu = |y| / |grad f(s~)|``. On
the central path (``y = -mu grad f(s)``) this is exactly ``s'y / 3`` and ``H y = s``; off it,
this mu keeps the tangent curvature block of H right (it scales like ``|y|``, independent of
how close s~ is to the boundary), for the same reason as above.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from pounce_kkt.cone_dims import ConeDims, svec_dim

# tau floor relative to |w|^2 / rank for nonneg rows: keeps H within ~1e20 of its scale when
# s'y == 0 exactly (a diagonal H holds any spread exactly).
TAU_FLOOR = 1e-20
# The same for SOC and PSD blocks whose w has eigenvalues of both signs (_tau_rel), where H
# mixes coordinates: a dense block holding eigenvalues
# rho_max next to the finite curvature ones loses rho_max * 1e-16 of them, while a tau above
# the iterate's perturbs the limit by ~tau / lam^2. Measured on the SOCP/PSD/exp fixtures:
# 1e-8 keeps dense and sparse solves within ~1e-9 of each other and the gradient within
# ~1e-7 of finite differences (1e-10 halves the latter but dense vs sparse drift to 1e-7).
TAU_REL_MIXED = 1e-8
# Exp/power: relative push ladder into the interior (smallest that gives a strictly interior
# point wins); the push changes H by O(push) and plays the role of TAU_REL_MIXED.
PUSH_LADDER = tuple(10.0 ** -k for k in range(8, 1, -1))


def _log_nt_ratio(lam: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """log(s~/y~) of the scalar central pair with s~ - y~ = lam, s~ y~ = tau (stable, smooth)."""
    return 2.0 * torch.asinh(lam / (2.0 * torch.sqrt(tau)))


def _tau(inner: torch.Tensor, w_sq: torch.Tensor, rank: float,
         rel: float | torch.Tensor = TAU_FLOOR) -> torch.Tensor:
    """The centring parameter: <s, y> / rank, but at least rel * |w|^2 / rank."""
    return torch.maximum(inner / rank, rel * w_sq / rank) + TAU_FLOOR


def _tau_rel(lam_min: torch.Tensor, lam_max: torch.Tensor) -> torch.Tensor:
    """The relative floor of a block whose w has these extreme eigenvalues: TAU_REL_MIXED
    only when they differ in sign (H then holds ~1/tau next to finite eigenvalues); a block
    with w inside K or inside -K (H all ~1/tau or all ~tau) keeps the exact TAU_FLOOR."""
    mixed = (lam_min < 0) & (lam_max > 0)
    return torch.where(mixed, TAU_REL_MIXED, TAU_FLOOR).to(lam_min.dtype)


# ---------------------------------------------------------------------------------- nonneg


def nonneg_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Diagonal H for nonneg rows: s~/y~ per row (= s/y when s, y > 0)."""
    w = s - y
    return torch.exp(_log_nt_ratio(w, _tau(s * y, w * w, 1.0)))


# ---------------------------------------------------------------------------------- SOC


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
    """H for SOC blocks: (B, d) x (B, d) -> (B, d, d), NT at the recentred pair.

    Jordan frame of w = s - y: lam_{1,2} = w0 +- |w1|, c_{1,2} = (1, +-u)/2, u = w1/|w1|.
    W^2 = rho_1 (2 c1 c1') + rho_2 (2 c2 c2') + sqrt(rho_1 rho_2) (I - 2 c1 c1' - 2 c2 c2').
    """
    d = s.shape[-1]
    w = s - y
    w0, w1 = w[..., 0], w[..., 1:]
    a = torch.sqrt(torch.clamp((w1 * w1).sum(-1), min=1e-300))
    tau = _tau((s * y).sum(-1), (w * w).sum(-1), 1.0, _tau_rel(w0 - a, w0 + a))
    l1 = _log_nt_ratio(w0 + a, tau)
    l2 = _log_nt_ratio(w0 - a, tau)
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


# ---------------------------------------------------------------------------------- PSD


@lru_cache(maxsize=32)
def _svec_maps(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and scale of every svec entry (lower triangle, column-major, x sqrt 2)."""
    rows, cols, scale = [], [], []
    for j in range(k):
        for i in range(j, k):
            rows.append(i)
            cols.append(j)
            scale.append(1.0 if i == j else math.sqrt(2.0))
    return np.array(rows), np.array(cols), np.array(scale)


def svec_to_mat(v: torch.Tensor, k: int) -> torch.Tensor:
    """(..., k(k+1)/2) svec -> (..., k, k) symmetric matrix."""
    rows, cols, scale = _svec_maps(k)
    off = rows != cols
    r_all = torch.as_tensor(np.concatenate([rows, cols[off]]))
    c_all = torch.as_tensor(np.concatenate([cols, rows[off]]))
    sc = torch.as_tensor(scale, dtype=v.dtype, device=v.device)
    vals = v / sc
    vals = torch.cat([vals, vals[..., torch.as_tensor(off)]], dim=-1)
    M = v.new_zeros(v.shape[:-1] + (k, k))
    M[..., r_all, c_all] = vals
    return M


def mat_to_svec(M: torch.Tensor) -> torch.Tensor:
    """(..., k, k) symmetric -> (..., k(k+1)/2) svec."""
    k = M.shape[-1]
    rows, cols, scale = _svec_maps(k)
    sc = torch.as_tensor(scale, dtype=M.dtype, device=M.device)
    return M[..., torch.as_tensor(rows), torch.as_tensor(cols)] * sc


def psd_nt_operator(Q: torch.Tensor, rho_sqrt: torch.Tensor) -> torch.Tensor:
    """svec matrix of dY -> W dY W for W = Q diag(rho_sqrt) Q' (batched: (B, k, k), (B, k)).

    Entry (a, b) of the result is svec_a(W E_b W) where E_b = smat(e_b).
    """
    k = Q.shape[-1]
    D = svec_dim(k)
    eye = torch.eye(D, dtype=Q.dtype, device=Q.device)
    E = svec_to_mat(eye, k)  # (D, k, k): smat of each unit svec
    W = Q @ (rho_sqrt[..., :, None] * Q.transpose(-1, -2))
    WEW = W[..., None, :, :] @ E @ W[..., None, :, :]  # (B, D, k, k)
    return mat_to_svec(WEW).transpose(-1, -2)


def psd_scaling(s: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """H for a PSD block of order k: (B, D) x (B, D) -> (B, D, D), D = k(k+1)/2.

    The svec operator of dY -> W dY W with the NT W of the recentred pair: in the
    eigenbasis Q of w = S - Y (eigenvalues lam_i), W = Q diag(sqrt(rho_i)) Q'.
    """
    S, Y = svec_to_mat(s, k), svec_to_mat(y, k)
    Wm = S - Y
    lam, Q = torch.linalg.eigh(Wm)
    tau = _tau((s * y).sum(-1), (lam * lam).sum(-1), float(k),
               _tau_rel(lam[..., 0].detach(), lam[..., -1].detach()))
    rho_sqrt = torch.exp(0.5 * _log_nt_ratio(lam, tau[..., None]))
    return psd_nt_operator(Q, rho_sqrt)


# ---------------------------------------------------------------------------------- exp / power


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
    return _log_barrier_parts(f, psi, gpsi, hpsi, extra_g, extra_h)


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
    return _log_barrier_parts(f, phi, gphi, hphi, extra_g, extra_h)


def _log_barrier_parts(f, psi, gpsi, hpsi, extra_g, extra_h):
    """grad and hess of -log(psi) - (terms with gradient extra_g and hessian extra_h)."""
    grad = -gpsi / psi[..., None] - extra_g
    hess = (gpsi[..., :, None] * gpsi[..., None, :] / (psi * psi)[..., None, None]
            - hpsi / psi[..., None, None] + extra_h)
    return f, grad, hess


def exp_interior(s: torch.Tensor) -> torch.Tensor:
    """True where s is strictly inside the exponential cone (with a finite barrier)."""
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    ok = (y > 0) & (z > 0)
    ys, zs = torch.where(ok, y, 1.0), torch.where(ok, z, 1.0)
    return ok & (ys * torch.log(zs / ys) - x > 0)


def power_interior(s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """True where s is strictly inside the power cone."""
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    ok = (x > 0) & (y > 0)
    xs, ys = torch.where(ok, x, 1.0), torch.where(ok, y, 1.0)
    return ok & (torch.exp(2 * alpha * torch.log(xs) + (2 - 2 * alpha) * torch.log(ys))
                 - z * z > 0)


def _push_inside(s: torch.Tensor, y: torch.Tensor, e: torch.Tensor, inside) -> torch.Tensor:
    """s itself if s - PUSH_LADDER[0] * scale * e is still interior (s is not closer to the
    boundary than the smallest push), else s + delta e with the smallest delta of
    PUSH_LADDER (x scale) giving an interior point."""
    with torch.no_grad():
        scale = 1.0 + torch.linalg.vector_norm(s, dim=-1) + torch.linalg.vector_norm(y, dim=-1)
        done = inside(s - (PUSH_LADDER[0] * scale)[..., None] * e)
        delta = torch.zeros_like(scale)
        for rel in PUSH_LADDER:
            ok = inside(s + (rel * scale)[..., None] * e) & ~done
            delta = torch.where(ok, rel * scale, delta)
            done = done | ok
        delta = torch.where(done, delta, PUSH_LADDER[-1] * scale)
    return s + delta[..., None] * e


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


def _sherman_morrison(Minv: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(M + u u' / c)^-1 from M^-1, for c > 0: M^-1 - M^-1 u u' M^-1 / (c + u'M^-1 u)."""
    Mu = (Minv @ u[..., None])[..., 0]
    return Minv - Mu[..., :, None] * Mu[..., None, :] / (c + (u * Mu).sum(-1))[..., None, None]


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
    Minv = _sherman_morrison(torch.linalg.inv(N), w, psi1 / c)
    return _sherman_morrison(Minv, g1, psi1 * psi1)


def _barrier_scaling(s: torch.Tensor, y: torch.Tensor, grad: torch.Tensor,
                     hess_inv: torch.Tensor) -> torch.Tensor:
    mu = torch.linalg.vector_norm(y, dim=-1) / torch.linalg.vector_norm(grad, dim=-1)
    mu = mu + TAU_FLOOR * (1.0 + (s * s).sum(-1)) / 3.0  # y == 0 exactly: H ~ 1e20, not inf
    H = hess_inv / mu[..., None, None]
    return 0.5 * (H + H.transpose(-1, -2))


def exp_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H for exponential-cone blocks: (B, 3) x (B, 3) -> (B, 3, 3)."""
    e = torch.tensor([-1.0, 1.0, 1.0], dtype=s.dtype, device=s.device)
    st = _push_inside(s, y, e, exp_interior)
    _, grad, _ = exp_barrier(st)
    return _barrier_scaling(st, y, grad, exp_hess_inv(st))


def power_scaling(s: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """H for power-cone blocks: (B, 3) x (B, 3) x alpha (broadcastable to B) -> (B, 3, 3)."""
    e = torch.tensor([1.0, 1.0, 0.0], dtype=s.dtype, device=s.device)
    st = _push_inside(s, y, e, lambda v: power_interior(v, alpha))
    _, grad, _ = power_barrier(st, alpha)
    return _barrier_scaling(st, y, grad, power_hess_inv(st, alpha))


# ---------------------------------------------------------------------------------- composite


def cone_scaling(s: torch.Tensor, y: torch.Tensor, cones: ConeDims
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """H for the whole product cone at (s, y), both (B, m) in SCS row order.

    Returns ``h_diag (B, z + l)`` (zeros on zero-cone rows) and ``h_blocks (B, sum d_k^2)``
    with each SOC, PSD, exp and power block dense row-major, in cone order: the layout of the
    native ``kkt_adjoint_batch``. Cones of one kind and size are computed together.
    """
    B = s.shape[0]
    z, nd = cones.z, cones.n_diag
    h_diag = torch.cat([s.new_zeros(B, z), nonneg_scaling(s[:, z:nd], y[:, z:nd])], dim=1)
    groups: dict[tuple[str, int], list] = {}
    offset = 0
    for blk in cones.blocks():
        key = (blk.kind, blk.dim)
        groups.setdefault(key, []).append((blk, offset))
        offset += blk.dim * blk.dim
    if offset == 0:
        return h_diag, s.new_zeros(B, 0)
    vals, where = [], []
    for (kind, d), members in groups.items():
        rows = torch.tensor([[b.start + i for i in range(d)] for b, _ in members])
        sg = s[:, rows].reshape(B * len(members), d)
        yg = y[:, rows].reshape(B * len(members), d)
        if kind == "q":
            Hg = soc_scaling(sg, yg)
        elif kind == "s":
            Hg = psd_scaling(sg, yg, int(members[0][0].param))
        elif kind == "ep":
            Hg = exp_scaling(sg, yg)
        else:
            alpha = torch.tensor([b.param for b, _ in members], dtype=s.dtype, device=s.device)
            Hg = power_scaling(sg, yg, alpha.repeat(B))
        vals.append(Hg.reshape(B, len(members) * d * d))
        where.append(torch.tensor([off + i for _, off in members for i in range(d * d)]))
    idx = torch.cat(where).to(s.device)
    h_blocks = s.new_zeros(B, offset).index_copy(1, idx, torch.cat(vals, dim=1))
    return h_diag, h_blocks


def dense_h(h_diag: torch.Tensor, h_blocks: torch.Tensor, scatter: torch.Tensor, m: int
            ) -> torch.Tensor:
    """(B, m, m) H from its compact layout; `scatter` is ConicStructure.h_scatter."""
    B = h_diag.shape[0]
    flat = h_diag.new_zeros(B, m * m).index_copy(
        1, scatter.to(h_diag.device), torch.cat([h_diag, h_blocks], dim=1))
    return flat.reshape(B, m, m)


def block_offsets(cones: ConeDims) -> dict[int, torch.Tensor]:
    """For each block size d: (count, d*d) positions of those blocks' entries in h_blocks."""
    groups: dict[int, list[int]] = {}
    off = 0
    for blk in cones.blocks():
        groups.setdefault(blk.dim, []).append(off)
        off += blk.dim * blk.dim
    return {d: torch.tensor(offs)[:, None] + torch.arange(d * d)[None, :]
            for d, offs in groups.items()}


def equilibration(h_diag: torch.Tensor, h_blocks: torch.Tensor, cones: ConeDims
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(I + H)^(-1/2), block by block, in the compact (h_diag, h_blocks) layout.

    Used (without gradient) to scale K before a dense solve: the scaled -H block has
    eigenvalues rho / (1 + rho) in [0, 1), so no direction's digits drown in another's.
    """
    d_diag = torch.rsqrt(1.0 + torch.clamp(h_diag, min=0.0))
    d_blocks = torch.zeros_like(h_blocks)
    B = h_blocks.shape[0]
    for d, pos in block_offsets(cones).items():
        pos = pos.to(h_blocks.device)
        Hb = h_blocks[:, pos].reshape(B, pos.shape[0], d, d)
        lam, V = torch.linalg.eigh(0.5 * (Hb + Hb.transpose(-1, -2)))
        Db = (V * torch.rsqrt(1.0 + torch.clamp(lam, min=0.0))[..., None, :]) @ V.transpose(-1, -2)
        d_blocks[:, pos.reshape(-1)] = Db.reshape(B, -1)
    return d_diag, d_blocks
