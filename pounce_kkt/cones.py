"""Projection onto each cone and the derivative of that projection, side by side.

For a closed convex cone K with dual K*, Moreau's decomposition splits any w as
``w = Pi_K(w) - Pi_K*(-w)`` with the two parts orthogonal. At a primal-dual solution of the
conic program (docs/design.md) ``w = s - y`` gives back ``s = Pi_K(w)`` and
``y = Pi_K(w) - w``, so ``(s, y)`` is complementary and in ``K x K*`` by construction; this is
what solution refinement (:mod:`pounce_kkt.refine`) iterates on and what the active-set
backward differentiates (``ds = D dw``, ``dy = (D - I) dw``, ``D = dPi_K/dw``).

One class per cone, batched over a leading dimension N, float64, rows in the SCS layout
(SOC ``t`` first; PSD svec lower triangle, column-major, off-diagonals x sqrt(2); exp
``(x, y, z)``, ``y exp(x/y) <= z``; power ``(x, y, z)``, ``x^a y^(1-a) >= |z|``).
``project(w) -> (N, d)``, ``derivative(w) -> (N, d, d)`` (the Jacobian of ``project`` where
it is differentiable; at a kink the one-sided derivative from the region ``w`` is classified
in: in K -> identity, in the polar cone -> zero).
"""

from __future__ import annotations

import torch

from pounce_kkt.cone_dims import ConeBlock, ConeDims, svec_dim
from pounce_kkt.cone_scaling import mat_to_svec, svec_to_mat


class ZeroCone:
    """K = {0}, K* = everything: Pi(w) = 0, D = 0."""

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(w)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return w.new_zeros(w.shape + w.shape[-1:])


class NonnegCone:
    """K = K* = R^d_+: Pi(w) = max(w, 0), D = diag(w > 0)."""

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return torch.clamp(w, min=0.0)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed((w > 0).to(w.dtype))


class SecondOrderCone:
    """K = K* = {(t, v): |v| <= t}.

    Outside K and -K, with a = |v|, u = v / a:
        Pi(w) = (t + a)/2 (1, u),
        D = 1/2 [[1, u'], [u, (1 + t/a) I - (t/a) u u']].
    """

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


class PsdCone:
    """K = K* = PSD matrices of order k, in svec coordinates (d = k(k+1)/2).

    With W = smat(w) = Q diag(lam) Q': Pi(w) = svec(Q diag(max(lam, 0)) Q'), and
    D[E] = svec(Q (G o (Q' smat(E) Q)) Q') with G_ij = (lam_i+ - lam_j+) / (lam_i - lam_j)
    (= [lam_i > 0] where lam_i = lam_j), the Loewner divided differences of max(., 0).
    """

    def __init__(self, k: int):
        self.k = int(k)

    def _eig(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.eigh(svec_to_mat(w, self.k))

    def project(self, w: torch.Tensor) -> torch.Tensor:
        lam, Q = self._eig(w)
        return mat_to_svec(Q @ (torch.clamp(lam, min=0.0)[..., :, None] * Q.transpose(-1, -2)))

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        k, D = self.k, svec_dim(self.k)
        lam, Q = self._eig(w)
        lp = torch.clamp(lam, min=0.0)
        diff = lam[..., :, None] - lam[..., None, :]
        same = diff.abs() <= 1e-14 * (1.0 + lam.abs().amax(-1))[..., None, None]
        pos = (lam > 0).to(w.dtype)
        G = torch.where(same, 0.5 * (pos[..., :, None] + pos[..., None, :]),
                        (lp[..., :, None] - lp[..., None, :]) / torch.where(same, 1.0, diff))
        E = svec_to_mat(torch.eye(D, dtype=w.dtype, device=w.device), k)  # (D, k, k)
        Qe = Q[..., None, :, :]
        inner = Qe.transpose(-1, -2) @ E @ Qe  # (N, D, k, k)
        out = Qe @ (G[..., None, :, :] * inner) @ Qe.transpose(-1, -2)
        return mat_to_svec(out).transpose(-1, -2)


# --------------------------------------------------------------------------------- exp / power
#
# float64 exp and log on a CPU tensor of more than 2048 entries run through MKL's vector
# library inside torch's thread pool, whose nested threading costs milliseconds per call on
# a busy machine (8 ms for 2560 entries at load 2 on 2 cores, 0.01 ms in 2048-entry chunks):
# both are applied chunk by chunk. Likewise the ray search below keeps its elementwise ops
# under torch's parallel grain where it can.
_CHUNK = 2048


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) elementwise, computed on flat chunks of at most _CHUNK entries on CPU."""
    return _chunked(torch.exp, x)


def _log(x: torch.Tensor) -> torch.Tensor:
    """log(x) elementwise, computed on flat chunks of at most _CHUNK entries on CPU."""
    return _chunked(torch.log, x)


def _chunked(fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x) for an elementwise fn, applied to flat chunks of at most _CHUNK entries on CPU."""
    if x.device.type != "cpu" or x.numel() <= _CHUNK:
        return fn(x)
    return torch.cat([fn(c) for c in x.reshape(-1).split(_CHUNK)]).reshape(x.shape)


# Both are 3-dimensional and homogeneous; their smooth boundary is a ray family
# F(r, t) = t g(r), t > 0. For w outside K and outside the polar cone -K* (and not in a case
# with a closed form), Pi(w) = t* g(r*) with r* maximising phi(r) = <g(r), w> / |g(r)| and
# t* = <g, w> / |g|^2. With e = F - w, J = [t g', g] and the stationarity J'e = 0,
# implicit differentiation gives
#     D = J M^-1 J',   M = J'J + [[t <e, g''>, <e, g'>], [<e, g'>, 0]].

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


def _ray_argmax(w: torch.Tensor, ray, shared: bool = False) -> torch.Tensor:
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


def _ray_projection(w: torch.Tensor, ray, shared: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection onto the ray family and its derivative (N, 3), (N, 3, 3); shared as in
    :func:`_ray_argmax`."""
    r = _ray_argmax(w, ray, shared)
    g, g1, g2 = ray(r)
    t = _dot(g, w) / _dot(g, g)
    p = t[:, None] * g
    norm = torch.linalg.vector_norm(w, dim=-1)
    polar = ~(t * torch.linalg.vector_norm(g, dim=-1) > KINK_REL * norm)
    in_k = torch.linalg.vector_norm(p - w, dim=-1) <= KINK_REL * norm
    e = p - w
    a = t[:, None] * g1  # J = [a, g]
    m00 = _dot(a, a) + t * _dot(e, g2)
    m01 = _dot(a, g) + _dot(e, g1)
    m11 = _dot(g, g)
    i00, i01, i11 = _inv2(m00, m01, m11)

    def outer(u, v):
        return u[:, :, None] * v[:, None, :]

    D = i00[:, None, None] * outer(a, a) + i01[:, None, None] * (outer(a, g) + outer(g, a)) \
        + i11[:, None, None] * outer(g, g)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(D)
    p = _select([(in_k, w), (polar, torch.zeros_like(w))], p)
    D = _select([(in_k, eye), (polar, torch.zeros_like(D))], D)
    return p, D


def _inv2(m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries (00, 01, 11) of the inverse of the symmetric 2x2 M = [[m00, m01], [m01, m11]]:
    [[m11, -m01], [-m01, m00]] / det, det = m00 m11 - m01^2; where |det| <= 1e-13 |M|_F^2
    the pseudo-inverse instead. M is singular only where the maximiser runs off to the ray
    family's limit (the projection lands on an edge of K, a kink), where any generalised
    inverse is a choice."""
    det = m00 * m11 - m01 * m01
    regular = det.abs() > 1e-13 * (m00 * m00 + 2 * m01 * m01 + m11 * m11)
    safe = torch.where(regular, det, 1.0)
    inv = (m11 / safe, -m01 / safe, m00 / safe)
    if bool(regular.all()):
        return inv
    M = torch.stack([torch.stack([m00, m01], -1), torch.stack([m01, m11], -1)], -2)
    P = torch.linalg.pinv(M, hermitian=True)
    return tuple(torch.where(regular, v, P[:, i, j])
                 for v, (i, j) in zip(inv, ((0, 0), (0, 1), (1, 1)), strict=True))


def _on_rows(mask: torch.Tensor, w: torch.Tensor, stand_in: tuple[float, float, float],
             fn) -> tuple[torch.Tensor, torch.Tensor]:
    """fn(v) -> (p (N, 3), D (N, 3, 3)) on v = w where mask holds and the point stand_in
    elsewhere (one the smooth case handles; the caller overwrites those rows): every row is
    computed, none gathered or scattered."""
    if bool(mask.all()):
        return fn(w)
    return fn(torch.where(mask[:, None], w, w.new_tensor(stand_in)))


def _select(cases: list[tuple[torch.Tensor, torch.Tensor]], default: torch.Tensor) -> torch.Tensor:
    """The first case whose mask holds, per row; `default` where none does."""
    out = default
    for mask, val in reversed(cases):
        out = torch.where(mask.reshape(mask.shape + (1,) * (val.dim() - 1)), val, out)
    return out


class ExpCone:
    """K = cl{(x, y, z): y exp(x/y) <= z, y > 0}; K* = cl{(u, v, w): -u exp(v/u) <= e w, u < 0}.

    Closed forms: w in K -> w; -w in K* -> 0; x < 0 and y < 0 -> (x, 0, max(z, 0)) (the
    face {y = 0}, D = diag(1, 0, [z > 0])); otherwise the smooth boundary, g(r) = (r, 1, e^r).
    """

    @staticmethod
    def _ray(r):
        one, zero, er = torch.ones_like(r), torch.zeros_like(r), _exp(r)
        return (torch.stack([r, one, er], -1), torch.stack([one, zero, er], -1),
                torch.stack([zero, zero, er], -1))

    def _cases(self, w):
        x, y, z = w[..., 0], w[..., 1], w[..., 2]
        ypos, zpos = torch.where(y > 0, y, 1.0), torch.where(z > 0, z, 1.0)
        in_k = ((y > 0) & (z > 0) & (x <= ypos * _log(zpos / ypos))) | (
            (x <= 0) & (y == 0) & (z >= 0))
        xpos, zneg = torch.where(x > 0, x, 1.0), torch.where(z < 0, -z, 1.0)
        in_polar = ((x > 0) & (z < 0) & (y <= xpos * (1.0 + _log(zneg / xpos)))) | (
            (x == 0) & (y <= 0) & (z <= 0))
        face = (x < 0) & (y < 0)
        return in_k, in_polar, face

    def _both(self, w):
        w = w.reshape(-1, 3)
        in_k, in_polar, face = self._cases(w)
        smooth = ~(in_k | in_polar | face)
        p, D = _on_rows(smooth, w, (1.0, 1.0, 0.0),
                        lambda v: _ray_projection(v, self._ray, shared=True))
        x, z = w[:, 0], w[:, 2]
        p_face = torch.stack([x, torch.zeros_like(x), torch.clamp(z, min=0.0)], -1)
        D_face = torch.diag_embed(torch.stack([torch.ones_like(x), torch.zeros_like(x),
                                               (z > 0).to(w.dtype)], -1))
        eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(D)
        p = _select([(in_k, w), (in_polar, torch.zeros_like(w)), (face, p_face)], p)
        D = _select([(in_k, eye), (in_polar, torch.zeros_like(D)), (face, D_face)], D)
        return p, D

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return self._both(w)[0].reshape(w.shape)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return self._both(w)[1].reshape(w.shape + (3,))


class PowerCone:
    """K = {(x, y, z): x, y >= 0, x^a y^(1-a) >= |z|}; K* = {(u, v, w): u, v >= 0,
    (u/a)^a (v/(1-a))^(1-a) >= |w|}. alpha: a float or an (N,) tensor.

    Closed forms: w in K -> w; -w in K* -> 0; z = 0 -> (max(x, 0), max(y, 0), 0);
    otherwise the smooth boundary, g(u) = (e^((1-a)u), e^(-a u), sign z).
    """

    def __init__(self, alpha):
        self.alpha = alpha

    def _alpha(self, w):
        a = torch.as_tensor(self.alpha, dtype=w.dtype, device=w.device)
        return a.expand(w.shape[0]) if a.dim() == 0 else a.reshape(-1)

    @staticmethod
    def _geo(x, y, a, b):
        """x^a y^b for x, y >= 0 (0 where either is 0)."""
        ok = (x > 0) & (y > 0)
        xs, ys = torch.where(ok, x, 1.0), torch.where(ok, y, 1.0)
        return torch.where(ok, _exp(a * _log(xs) + b * _log(ys)), 0.0)

    def _both(self, w):
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

            def ray(u):
                shape = u.shape
                al = am.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
                s_ = sg.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)
                ex, ey = _exp((1 - al) * u), _exp(-al * u)
                zero = torch.zeros_like(u)
                return (torch.stack([ex, ey, s_], -1),
                        torch.stack([(1 - al) * ex, -al * ey, zero], -1),
                        torch.stack([(1 - al) ** 2 * ex, al * al * ey, zero], -1))

            return _ray_projection(v, ray)

        p, D = _on_rows(smooth, w, (0.0, 0.0, 1.0), smooth_part)
        zero = torch.zeros_like(x)
        p_flat = torch.stack([torch.clamp(x, min=0.0), torch.clamp(y, min=0.0), zero], -1)
        D_flat = torch.diag_embed(torch.stack([(x > 0).to(w.dtype), (y > 0).to(w.dtype), zero], -1))
        eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(D)
        p = _select([(in_k, w), (in_polar, torch.zeros_like(w)), (flat, p_flat)], p)
        D = _select([(in_k, eye), (in_polar, torch.zeros_like(D)), (flat, D_flat)], D)
        return p, D

    def project(self, w: torch.Tensor) -> torch.Tensor:
        return self._both(w)[0].reshape(w.shape)

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        return self._both(w)[1].reshape(w.shape + (3,))


# --------------------------------------------------------------------------------- product cone


def _block_cone(kind: str, members: list[ConeBlock], B: int):
    if kind == "q":
        return SecondOrderCone()
    if kind == "s":
        return PsdCone(int(members[0].param))
    if kind == "ep":
        return ExpCone()
    alphas = torch.tensor([b.param for b in members], dtype=torch.float64)
    return PowerCone(alphas.repeat(B))


def _groups(cones: ConeDims) -> dict[tuple[str, int], list[ConeBlock]]:
    out: dict[tuple[str, int], list[ConeBlock]] = {}
    for blk in cones.blocks():
        out.setdefault((blk.kind, blk.dim), []).append(blk)
    return out


def project(w: torch.Tensor, cones: ConeDims, derivative: bool = False
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """Pi_K(w) for the product cone, w (B, m) in SCS row order.

    With ``derivative``, also D as a list of (rows (G, d) index tensor, D (B, G, d, d))
    per group of equal blocks; the zero and nonneg rows' D is the diagonal
    ``[w > 0]`` on nonneg rows and 0 on zero rows (not listed). No graph is recorded.
    """
    B = w.shape[0]
    with torch.no_grad():
        p = torch.zeros_like(w)
        z, nd = cones.z, cones.n_diag
        p[:, z:nd] = torch.clamp(w[:, z:nd], min=0.0)
        parts = [] if derivative else None
        for (kind, d), members in _groups(cones).items():
            rows = torch.tensor([[b.start + i for i in range(d)] for b in members])
            cols = _columns(rows)
            wg = w[:, cols].reshape(B * len(members), d)
            cone = _block_cone(kind, members, B)
            if derivative:
                pg, Dg = _project_and_derivative(cone, wg)
                parts.append((rows, Dg.reshape(B, len(members), d, d)))
            else:
                pg = cone.project(wg)
            p[:, cols] = pg.reshape(p[:, cols].shape)
    return p, parts


def _columns(rows: torch.Tensor) -> torch.Tensor | slice:
    """The column selector of the row indices rows (G, d): a slice when they are one
    consecutive run (a view, no gather or scatter), else rows itself."""
    first, n = int(rows[0, 0]), rows.numel()
    if bool((rows.reshape(-1) == torch.arange(first, first + n)).all()):
        return slice(first, first + n)
    return rows


def _project_and_derivative(cone, w):
    if isinstance(cone, (ExpCone, PowerCone)):
        return cone._both(w)
    return cone.project(w), cone.derivative(w)


def apply_derivative(dw: torch.Tensor, w: torch.Tensor, cones: ConeDims,
                     parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """D dw for the product cone (B, m), D from :func:`project` at w (differentiable in dw)."""
    B = dw.shape[0]
    z, nd = cones.z, cones.n_diag
    pieces = torch.cat([dw.new_zeros(B, z), (w[:, z:nd] > 0).to(dw.dtype) * dw[:, z:nd],
                        dw[:, nd:] * 0.0], dim=1)
    for rows, D in parts:
        G, d = rows.shape
        v = (D @ dw[:, rows].reshape(B, G, d, 1)).reshape(B, G * d)
        pieces = pieces.index_put((torch.arange(B)[:, None], rows.reshape(1, -1).expand(B, -1)),
                                  v)
    return pieces

