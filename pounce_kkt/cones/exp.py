"""The exponential cone (SCS key "ep"), SCS's orientation: rows ``(x, y, z)`` with
``y exp(x/y) <= z``, y > 0 (and its closure). SCS's dual exponential cone ("ed") is solved as
this cone on mapped rows (:func:`pounce_kkt.cone_dims.scs_cones`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pounce_kkt.cones.arrays import ops, plain
from pounce_kkt.cones.barrier import barrier_scaling, log_barrier_parts, push_inside
from pounce_kkt.cones.base import ConeCounts
from pounce_kkt.cones.ray import RayCone, norm_np, ray_projection_np

# Safeguarded Newton iterations of :func:`exp_ray_root`: a cap, not a count (rows leave once
# converged).
ROOT_STEPS = 100
# Doublings of the bracket's free end (reaches |rho| ~ 2**64).
_BRACKET_DOUBLINGS = 64


def _root_function(r: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """e^-|r| F(r) and its derivative, F(r) = T e^r - S e^-r - q z with T = (r - 1) x + y,
    S = x - r y, q = r^2 - r + 1 (every exponent <= 0: no overflow)."""
    a = np.abs(r)
    ep, em, e0 = np.exp(r - a), np.exp(-r - a), np.exp(-a)
    f = ((r - 1.0) * x + y) * ep - (x - r * y) * em - (r * r - r + 1.0) * z * e0
    df = ((r * x + y) * ep + (x + (1.0 - r) * y) * em - (2.0 * r - 1.0) * z * e0
          - np.where(r >= 0, f, -f))
    return f, df


def exp_ray_root(w: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """rho of the projection t (rho, 1, e^rho) of each row w = (x, y, z) (N, 3) that lies
    outside K, outside the polar cone and off the face case (x > 0 or y > 0).

    The Moreau decomposition w = t g(rho) - s h(rho), g = (rho, 1, e^rho) on the boundary of
    K and h = (-1, rho - 1, e^-rho) on that of K* with <g, h> = 0, gives, per rho,
    t = T / q and s = S / q (T, S, q of :func:`_root_function`), and the z row leaves the
    univariate equation F(rho) = 0 (Friberg, "Projection onto the exponential cone: a
    univariate root-finding problem"). t > 0 and s > 0 hold on the interval
    (1 - y/x if x > 0, x/y if y > 0), where F goes from negative to positive; a free end is
    found by doubling, then safeguarded Newton converges (rtsafe's rule: bisection where a
    step leaves the bracket or does not halve the step before last, except that a step past
    an end first restarts Newton from that end). F is homogeneous in w: rows are scaled to
    unit norm first. Converged to rounding in at most ~25 steps, most rows in 4-6
    (tests/test_exp_projection.py checks the residual). `start` (N,), where finite, is a
    guess of rho (e.g. a nearby row's): it only changes where Newton starts, not
    where it stops.
    """
    n = norm_np(w)
    x, y, z = (w[:, i] / np.where(n > 0, n, 1.0) for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lo = np.where(x > 0, 1.0 - y / np.where(x > 0, x, 1.0), -np.inf)
        hi = np.where(y > 0, x / np.where(y > 0, y, 1.0), np.inf)
        if start is not None:
            guess = np.flatnonzero(np.isfinite(start) & (start > lo) & (start < hi))
            f, _ = _root_function(start[guess], x[guess], y[guess], z[guess])
            hi[guess[f > 0]] = start[guess[f > 0]]
            lo[guess[f <= 0]] = start[guess[f <= 0]]
        for end, sign in ((hi, 1.0), (lo, -1.0)):
            free = np.flatnonzero(np.isinf(end))
            base = np.where(sign > 0, lo, hi)[free]
            d = 1.0
            for _ in range(_BRACKET_DOUBLINGS):
                if free.size == 0:
                    break
                c = base + sign * d
                f, _ = _root_function(c, x[free], y[free], z[free])
                found = (f > 0) if sign > 0 else (f < 0)
                end[free[found]] = c[found]
                keep = ~found
                base, free = c[keep], free[keep]
                if sign > 0:
                    lo[free] = base
                else:
                    hi[free] = base
                d *= 2.0
        r = 0.5 * (lo + hi)
        if start is not None:  # Newton from the guess (now a bracket end)
            r[guess] = start[guess]
        last = hi - lo  # the step before the last (rtsafe's safeguard)
        jumped = np.zeros(r.shape[0], dtype=bool)  # the last step went to a bracket end
        act = np.arange(r.shape[0])
        for _ in range(ROOT_STEPS):
            if act.size == 0:
                break
            ra, la, ha = r[act], lo[act], hi[act]
            f, df = _root_function(ra, x[act], y[act], z[act])
            la = np.where(f < 0, ra, la)
            ha = np.where(f > 0, ra, ha)
            dx = f / df
            step = ra - dx
            inside = np.isfinite(step) & (step > la) & (step < ha)
            # Newton where it stays in the bracket and halves the step before the last; a
            # step past an end (F convex or concave on the way) goes on from that end, from
            # which Newton comes back monotonically; else bisection
            ok = inside & (2.0 * np.abs(dx) <= np.abs(last[act]))
            scale = 1.0 + np.abs(ra)
            # a Newton step below 1e-9 leaves r at rounding (quadratic convergence)
            tiny = (f == 0) | (np.abs(dx) <= 1e-9 * scale)
            end = np.where(step >= ha, ha, la)
            jump = ~inside & np.isfinite(step) & (ra != end) & ~jumped[act]
            jumped[act] = jump
            new = np.where(ok | (tiny & inside), step,
                           np.where(tiny, ra, np.where(jump, end, 0.5 * (la + ha))))
            done = tiny | (ha - la <= 4e-16 * scale)
            last[act] = np.abs(new - ra)
            r[act] = new
            lo[act], hi[act] = la, ha
            act = act[~done]
    return r


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
    """True where s is strictly inside the exponential cone (with a finite barrier).
    A tensor, or a NumPy array (pounce_kkt/cones/arrays.py)."""
    xp = ops(s)
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    ok = (y > 0) & (z > 0)
    ys, zs = xp.where(ok, y, 1.0), xp.where(ok, z, 1.0)
    return ok & (ys * xp.log(zs / ys) - x > 0)


def exp_hess_inv(s: torch.Tensor) -> torch.Tensor:
    """(hess f)^-1 of the exp-cone barrier, in closed form (B, 3) -> (B, 3, 3).

    Near the boundary hess f holds 1/psi^2 next to O(1) eigenvalues, too wide a spread to
    form and invert in float64. With g = grad psi = (-1, a), hess f = [[1/psi^2, -a'/psi^2],
    [-a/psi^2, D + a a'/psi^2]] and D = v v'/(y psi) + diag(1/y^2, 1/z^2), v = (1, -y/z), so
    by block elimination on x (Schur complement D):
        (hess f)^-1 = [[psi^2 + a'D^-1 a, a'D^-1], [D^-1 a, D^-1]],
        D^-1 = E - E v v' E / (y psi + v'E v),  E = diag(y^2, z^2).
    A tensor, or a NumPy array (pounce_kkt/cones/arrays.py).
    """
    xp = ops(s)
    x, y, z = s[..., 0], s[..., 1], s[..., 2]
    log_zy = xp.log(z / y)
    psi = y * log_zy - x
    a = xp.stack([log_zy - 1.0, y / z], -1)
    e = xp.stack([y * y, z * z], -1)
    v = xp.stack([xp.ones_like(y), -y / z], -1)
    ev = e * v
    Dinv = xp.diag(e) - ev[..., :, None] * ev[..., None, :] / (
        y * psi + xp.dot(v, ev))[..., None, None]
    Da = xp.matvec(Dinv, a)
    top = xp.cat([(psi * psi + xp.dot(a, Da))[..., None], Da], -1)
    rest = xp.cat([Da[..., :, None], Dinv], -1)
    return xp.cat([top[..., None, :], rest], -2)


def exp_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H for exponential-cone blocks (:mod:`pounce_kkt.cones.barrier`): (B, 3) x (B, 3) ->
    (B, 3, 3). On CPU float64 tensors without a graph, computed on their NumPy views (the
    same code, pounce_kkt/cones/arrays.py)."""
    if plain(s, y):
        return torch.from_numpy(_exp_scaling(s.numpy(), y.numpy()))
    return _exp_scaling(s, y)


def _exp_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """exp_scaling on tensors or NumPy arrays."""
    xp = ops(s)
    e = xp.const(s, (-1.0, 1.0, 1.0))
    st = push_inside(s, y, e, exp_interior)
    x, yt, z = st[..., 0], st[..., 1], st[..., 2]
    log_zy = xp.log(z / yt)
    psi = yt * log_zy - x
    # grad f of exp_barrier: -grad psi / psi - (0, 1/y, 1/z), grad psi = (-1, log(z/y) - 1, y/z)
    grad = xp.stack([1.0 / psi, -(log_zy - 1.0) / psi - 1.0 / yt,
                     -(yt / z) / psi - 1.0 / z], -1)
    return barrier_scaling(st, y, grad, exp_hess_inv(st))


def _exp_ray(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g, g', g'' (N, 3 each) of g(r) = e^-max(r, 0) (r, 1, e^r): the boundary ray
    (r, 1, e^r), rescaled so that no entry overflows."""
    neg = (r < 0)[:, None]
    e = np.exp(-np.abs(r))  # e^r where r < 0, e^-r elsewhere
    one, zero = np.ones_like(r), np.zeros_like(r)
    g = np.where(neg, np.stack([r, one, e], 1), np.stack([r * e, e, one], 1))
    g1 = np.where(neg, np.stack([one, zero, e], 1), np.stack([(1.0 - r) * e, -e, zero], 1))
    g2 = np.where(neg, np.stack([zero, zero, e], 1), np.stack([(r - 2.0) * e, e, zero], 1))
    return g, g1, g2


def exp_cases(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (N, 3) in K, in the polar cone -K*, and on the face case x <= 0, y <= 0."""
    x, y, z = w[:, 0], w[:, 1], w[:, 2]
    with np.errstate(divide="ignore"):
        ypos, zpos = np.where(y > 0, y, 1.0), np.where(z > 0, z, 1.0)
        in_k = ((y > 0) & (z > 0) & (x <= ypos * np.log(zpos / ypos))) | (
            (x <= 0) & (y == 0) & (z >= 0))
        xpos, zneg = np.where(x > 0, x, 1.0), np.where(z < 0, -z, 1.0)
        in_polar = ((x > 0) & (z < 0) & (y <= xpos * (1.0 + np.log(zneg / xpos)))) | (
            (x == 0) & (y <= 0) & (z <= 0))
    face = (x <= 0) & (y <= 0)
    return in_k, in_polar, face


def exp_projection(w: np.ndarray, derivative: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Pi_K(w) (N, 3) and, with `derivative`, D = dPi/dw (N, 3, 3), float64 arrays.

    Closed forms: w in K -> (w, I); -w in K* -> (0, 0); x <= 0 and y <= 0 ->
    ((x, 0, max(z, 0)), diag(1, 0, [z > 0])) (the face {y = 0}); otherwise the smooth
    boundary t g(rho), rho from :func:`exp_ray_root`, D from
    :func:`pounce_kkt.cones.ray.ray_projection_np`, both on the unit rows (Pi is positively
    homogeneous, D of degree 0).
    """
    in_k, in_polar, face = exp_cases(w)
    x, z = w[:, 0], w[:, 2]
    p = np.stack([x, np.zeros_like(x), np.maximum(z, 0.0)], 1)
    D = None
    if derivative:
        D = np.zeros((w.shape[0], 3, 3))
        D[:, 0, 0] = 1.0
        D[:, 2, 2] = z > 0
    smooth = np.flatnonzero(~(in_k | in_polar | face))
    if smooth.size:
        ws = w[smooth]
        n = norm_np(ws)[:, None]
        u = ws / n
        r = exp_ray_root(u)
        ps, Ds = ray_projection_np(u, *_exp_ray(r), derivative=derivative)
        p[smooth] = ps * n
        if derivative:
            D[smooth] = Ds
    p[in_polar] = 0.0
    p[in_k] = w[in_k]
    if derivative:
        D[in_polar] = 0.0
        D[in_k] = np.eye(3)
    return p, D


class ExpCone(RayCone):
    """K = cl{(x, y, z): y exp(x/y) <= z, y > 0}; K* = cl{(u, v, w): -u exp(v/u) <= e w, u < 0};
    one block of 3 rows per count of "ep". Projection and D from :func:`exp_projection`
    (computed in NumPy, no graph); H from :func:`exp_scaling`.
    """

    key = "ep"

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        return [3.0] * cones.ep

    def project(self, w: torch.Tensor) -> torch.Tensor:
        p, _ = exp_projection(w.detach().cpu().reshape(-1, 3).numpy(), derivative=False)
        return torch.from_numpy(p).to(w.device).reshape(w.shape)

    def project_and_derivative(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) -> (N, 3), (N, 3, 3)."""
        p, D = exp_projection(w.detach().cpu().reshape(-1, 3).numpy(), derivative=True)
        return torch.from_numpy(p).to(w.device), torch.from_numpy(D).to(w.device)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return exp_scaling(s, y)
