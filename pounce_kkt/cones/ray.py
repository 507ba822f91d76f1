"""Projection onto a 3-dimensional homogeneous cone through its boundary ray family, shared
by the exponential and power cones.

Both cones' smooth boundary is a ray family F(r, t) = t g(r), t > 0. For w outside K and
outside the polar cone -K* (and not in a case with a closed form), Pi(w) = t* g(r*) with r*
maximising phi(r) = <g(r), w> / |g(r)| and t* = <g, w> / |g|^2. With e = F - w,
J = [t g', g] and the stationarity J'e = 0, implicit differentiation gives

    D = J M^-1 J',   M = J'J + [[t <e, g''>, <e, g'>], [<e, g'>, 0]].

A ray is a function r -> (g, g', g'') on tensors of r, each (..., 3).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pounce_kkt.cones.base import BlockCone

Ray = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

# float64 exp and log on a CPU tensor of more than 2048 entries run through MKL's vector
# library inside torch's thread pool, whose nested threading costs milliseconds per call on
# a busy machine (docs/design.md, "Solution refinement"): both are applied in chunks of at
# most _CHUNK entries, which stay on the calling thread. Likewise the ray search keeps its
# elementwise ops under torch's parallel grain where it can.
_CHUNK = 2048


def chunked_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) elementwise, computed on flat chunks of at most _CHUNK entries on CPU."""
    return _chunked(torch.exp, x)


def chunked_log(x: torch.Tensor) -> torch.Tensor:
    """log(x) elementwise, computed on flat chunks of at most _CHUNK entries on CPU."""
    return _chunked(torch.log, x)


def _chunked(fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x) for an elementwise fn, applied to flat chunks of at most _CHUNK entries on CPU."""
    if x.device.type != "cpu" or x.numel() <= _CHUNK:
        return fn(x)
    return torch.cat([fn(c) for c in x.reshape(-1).split(_CHUNK)]).reshape(x.shape)


# r = sinh(grid): dense near 0, reaching |r| ~ 300 (e^r stays finite).
_GRID = torch.sinh(torch.linspace(-6.4, 6.4, 321, dtype=torch.float64))
_BRACKET_STEPS = 80


# Rows per block of the shared grid search: rows x grid points stay below torch's parallel
# grain (32768 entries), where an elementwise op runs on one thread (a parallel one waits
# milliseconds for a time slice on a busy machine).
_GRID_ROWS = max(1, 32768 // _GRID.shape[0])


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """<u, v> over the last dimension (3), broadcast, as elementwise products (no reduction
    kernel)."""
    return u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1] + u[..., 2] * v[..., 2]


def _best(a: torch.Tensor, inv_norm: torch.Tensor) -> torch.Tensor:
    """argmax_k of a_k inv_norm_k over the entries with a_k > 0, per row of a (n, G)."""
    return torch.where(a > 0, a * inv_norm, -torch.inf).argmax(-1)


def _ray_argmax(w: torch.Tensor, ray: Ray, shared: bool = False) -> torch.Tensor:
    """r maximising <g(r), w> / |g(r)| (g, g', g'' = ray(r)), per row of w (N, 3).

    A grid brackets the maximiser; safeguarded Newton on phi'(r) ~ N(r) =
    <g', w>|g|^2 - <g, w><g, g'> (positive left of the maximiser) then converges in it.
    shared: g is the same function of r for every row (ray then maps a (1, G) grid to
    (1, G, 3), computed once; the rows are searched in blocks of _GRID_ROWS).
    """
    grid = _GRID.to(w.device)
    if shared:
        g = ray(grid[None, :])[0][0]
        inv = 1.0 / torch.linalg.vector_norm(g, dim=-1)
        k = torch.cat([_best(_dot(c[:, None, :], g), inv) for c in w.split(_GRID_ROWS)])
    else:
        g, _, _ = ray(grid[None, :].expand(w.shape[0], -1))
        k = _best(_dot(g, w[:, None, :]), 1.0 / torch.linalg.vector_norm(g, dim=-1))
    last = grid.shape[0] - 1
    lo = grid[torch.clamp(k - 1, min=0)]
    hi = grid[torch.clamp(k + 1, max=last)]
    r = grid[k]
    done = torch.zeros_like(r, dtype=torch.bool)
    for _ in range(_BRACKET_STEPS):
        g, g1, g2 = ray(r)
        gw, g1w, g2w = (_dot(v, w) for v in (g, g1, g2))
        nn, gg1 = _dot(g, g), _dot(g, g1)
        N = g1w * nn - gw * gg1
        dN = g2w * nn + g1w * gg1 - gw * (_dot(g1, g1) + _dot(g, g2))
        lo = torch.where(N > 0, r, lo)
        hi = torch.where(N > 0, hi, r)
        step = r - N / torch.where(dN < 0, dN, -1.0)
        ok = (dN < 0) & (step > lo) & (step < hi)
        # a Newton step below 1e-8 (or N = 0) leaves r at rounding (quadratic convergence);
        # r is then a bracket end, and a step that rounds onto it is no bisection's business
        tiny = (N == 0) | ((dN < 0) & ((step - r).abs() <= 1e-8 * (1.0 + r.abs())))
        r_new = torch.where(ok, step, torch.where(tiny, r, 0.5 * (lo + hi)))
        conv = tiny | (hi - lo <= 1e-15 * (1.0 + r.abs()))
        r = torch.where(done, r, r_new)
        done = done | conv
        if bool(done.all()):
            break
    return r


# Within this distance (relative to |w|) of K or of the polar cone, w is taken to be in it:
# there the ray maximiser is ill-determined (a kink of the projection).
KINK_REL = 1e-12


def ray_projection(w: torch.Tensor, ray: Ray, shared: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection onto the ray family and its derivative (N, 3), (N, 3, 3); shared as in
    :func:`_ray_argmax`."""
    return ray_projection_at(w, _ray_argmax(w, ray, shared), ray)


def ray_projection_at(w: torch.Tensor, r: torch.Tensor, ray: Ray
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection onto the ray family and its derivative (N, 3), (N, 3, 3), given each row's
    maximiser r (N,) of <g(r), w> / |g(r)| (:func:`ray_projection_np` on the rows)."""
    g, g1, g2 = (v.detach().cpu().numpy() for v in ray(r))
    p, D = ray_projection_np(w.detach().cpu().numpy(), g, g1, g2, derivative=True)
    return torch.from_numpy(p).to(w.device), torch.from_numpy(D).to(w.device)


def _dot_np(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """<u, v> per row of two (N, 3) arrays."""
    return u[:, 0] * v[:, 0] + u[:, 1] * v[:, 1] + u[:, 2] * v[:, 2]


def norm_np(u: np.ndarray) -> np.ndarray:
    """|u| per row of an (N, 3) array (np.linalg.norm's reduction over a 3-long axis costs
    ~6x more)."""
    return np.sqrt(_dot_np(u, u))


def ray_projection_np(w: np.ndarray, g: np.ndarray, g1: np.ndarray, g2: np.ndarray,
                      derivative: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Projection p = t g(r*) of the rows w (N, 3) and, with `derivative`, D (N, 3, 3), from
    g, g', g'' (N, 3 each) at each row's maximiser r*. Rows within KINK_REL |w| of K get
    (w, I), rows whose t |g| is within KINK_REL |w| of 0 get (0, 0)."""
    t = _dot_np(g, w) / _dot_np(g, g)
    p = t[:, None] * g
    e = p - w
    norm = norm_np(w)
    polar = ~(t * norm_np(g) > KINK_REL * norm)
    in_k = norm_np(e) <= KINK_REL * norm
    out = np.where(in_k[:, None], w, np.where(polar[:, None], 0.0, p))
    if not derivative:
        return out, None
    a = t[:, None] * g1  # J = [a, g]
    i00, i01, i11 = _inv2(_dot_np(a, a) + t * _dot_np(e, g2), _dot_np(a, g) + _dot_np(e, g1),
                          _dot_np(g, g))
    ag = a[:, :, None] * g[:, None, :]
    D = (i00[:, None, None] * (a[:, :, None] * a[:, None, :])
         + i01[:, None, None] * (ag + ag.transpose(0, 2, 1))
         + i11[:, None, None] * (g[:, :, None] * g[:, None, :]))
    D = np.where(in_k[:, None, None], np.eye(3), np.where(polar[:, None, None], 0.0, D))
    return out, D


def _inv2(m00: np.ndarray, m01: np.ndarray, m11: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries (00, 01, 11) of the inverse of the symmetric 2x2 M = [[m00, m01], [m01, m11]]:
    [[m11, -m01], [-m01, m00]] / det, det = m00 m11 - m01^2; where |det| <= 1e-13 |M|_F^2
    the pseudo-inverse instead. M is singular only where the maximiser runs off to the ray
    family's limit (the projection lands on an edge of K, a kink), where any generalised
    inverse is a choice."""
    det = m00 * m11 - m01 * m01
    regular = np.abs(det) > 1e-13 * (m00 * m00 + 2 * m01 * m01 + m11 * m11)
    safe = np.where(regular, det, 1.0)
    inv = (m11 / safe, -m01 / safe, m00 / safe)
    if regular.all():
        return inv
    M = np.stack([np.stack([m00, m01], -1), np.stack([m01, m11], -1)], -2)
    P = np.linalg.pinv(M, hermitian=True)
    return tuple(np.where(regular, v, P[:, i, j])
                 for v, (i, j) in zip(inv, ((0, 0), (0, 1), (1, 1)), strict=True))


def on_rows(mask: torch.Tensor, w: torch.Tensor, stand_in: tuple[float, float, float],
            fn) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(v) -> (p (N, 3), D (N, 3, 3)) on v = w where mask holds and the point stand_in
    elsewhere (one the smooth case handles; the caller overwrites those rows): every row is
    computed, none gathered or scattered."""
    if bool(mask.all()):
        return fn(w)
    return fn(torch.where(mask[:, None], w, w.new_tensor(stand_in)))


def select_rows(cases: list[tuple[torch.Tensor, torch.Tensor]], default: torch.Tensor
                ) -> torch.Tensor:
    """The first case whose mask holds, per row; `default` where none does."""
    out = default
    for mask, val in reversed(cases):
        out = torch.where(mask.reshape(mask.shape + (1,) * (val.dim() - 1)), val, out)
    return out


def with_closed_forms(w: torch.Tensor, p: torch.Tensor, D: torch.Tensor, in_k: torch.Tensor,
                      in_polar: torch.Tensor, other: torch.Tensor, p_other: torch.Tensor,
                      D_other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, D) of the smooth case with the closed forms in their rows: w and I where w is
    in K, 0 and 0 where -w is in K*, (p_other, D_other) where ``other`` holds."""
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(D)
    p = select_rows([(in_k, w), (in_polar, torch.zeros_like(w)), (other, p_other)], p)
    D = select_rows([(in_k, eye), (in_polar, torch.zeros_like(D)), (other, D_other)], D)
    return p, D


class RayCone(BlockCone):
    """A 3-row block cone projected through its ray family: subclasses give
    ``project_and_derivative`` ((N, 3) -> (N, 3), (N, 3, 3)); ``project`` and ``derivative``
    keep the input's leading shape."""

    @staticmethod
    def dim(param: float) -> int:
        return 3

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return self.project_and_derivative(w)[0].reshape(w.shape)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return self.project_and_derivative(w)[1].reshape(w.shape + (3,))
