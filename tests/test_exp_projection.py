"""The exponential cone's projection (pounce_kkt/cones/exp.py) against an independent
reference and a machine-precision certificate, and its derivative against central
differences.

K = cl{(x, y, z): y exp(x/y) <= z, y > 0} (SCS's orientation; cvxpy's ExpCone(x, y, z)).
p = Pi_K(w) exactly when p in K, p - w in K* and <p, p - w> = 0 (Moreau): the certificate
checks these three to 1e-13 |w|, the reference is Clarabel at tolerance 1e-10, one solve per point.
"""

from __future__ import annotations

import clarabel
import numpy as np
import pytest
import torch
from scipy import sparse

from pounce_kkt.cones.exp import ExpCone, _root_function, exp_cases, exp_ray_root

DT = torch.float64


def _hard_points(rng: np.random.Generator) -> np.ndarray:
    """Random directions plus the cases near kinks and edges, at scales 1e-8 .. 1e8."""
    pts = [rng.standard_normal((400, 3))]
    rho = rng.uniform(-30.0, 30.0, 200)
    g = np.stack([rho, np.ones_like(rho), np.exp(rho)], 1)  # boundary of K
    h = np.stack([-np.ones_like(rho), rho - 1.0, np.exp(-rho)], 1)  # boundary of K*, <g, h> = 0
    for eps in (1e-9, -1e-9, 1e-3, -1e-3):
        pts.append(g / np.linalg.norm(g, axis=1)[:, None]
                   + eps * h / np.linalg.norm(h, axis=1)[:, None])  # K's boundary, +-normal
        pts.append(-h / np.linalg.norm(h, axis=1)[:, None]
                   - eps * g / np.linalg.norm(g, axis=1)[:, None])  # polar boundary
    n = 100
    x, z = rng.standard_normal(n), rng.standard_normal(n)
    for y in (0.0, 1e-12, -1e-12, 1e-6, -1e-6):  # y ~ 0
        pts.append(np.stack([x, np.full(n, y), z], 1))
    pts.append(np.stack([np.zeros(n), rng.standard_normal(n), z], 1))  # x = 0
    pts.append(np.stack([-np.abs(x), -np.abs(z), rng.standard_normal(n)], 1))  # x, y <= 0
    pts.append(np.stack([1e-10 * np.abs(x), -np.abs(z), rng.standard_normal(n)], 1))
    W = np.concatenate(pts)
    scale = 10.0 ** rng.uniform(-8, 8, W.shape[0])
    return W * scale[:, None]


def _in_k(p: np.ndarray) -> np.ndarray:
    """Rows of p in K, by K's inequalities."""
    pos = p[:, 1] > 0
    with np.errstate(over="ignore"):
        curve = p[:, 1] * np.exp(p[:, 0] / np.where(pos, p[:, 1], 1.0)) <= p[:, 2]
    return np.where(pos, curve, (p[:, 1] == 0) & (p[:, 0] <= 0) & (p[:, 2] >= 0))


def _in_k_dual(d: np.ndarray) -> np.ndarray:
    """Rows of d in K* = cl{(u, v, w): -u exp(v/u) <= e w, u < 0}."""
    neg = d[:, 0] < 0
    with np.errstate(over="ignore"):
        curve = -d[:, 0] * np.exp(d[:, 1] / np.where(neg, d[:, 0], -1.0)) <= np.e * d[:, 2]
    return np.where(neg, curve, (d[:, 0] == 0) & (d[:, 1] >= 0) & (d[:, 2] >= 0))


def _certified(W: np.ndarray, P: np.ndarray, tol: float) -> np.ndarray:
    """Rows where p is within tol |w| of K, p - w within tol |w| of K* (each moved by
    tol |w| along an interior direction lands inside) and |<p, p - w>| <= tol |w|^2: the
    Moreau conditions to rounding, without reading the quotients p - w holds at rounding
    level (d_y / d_x of a d ~ 1e-16 |w|) as exact."""
    n = np.linalg.norm(W, axis=1)[:, None]
    p, d = P / n, (P - W) / n
    return (_in_k(p + tol * np.array([-1.0, 1.0, 1.0]))
            & _in_k_dual(d + tol * np.array([-1.0, 0.0, 1.0]))
            & (np.abs((p * d).sum(1)) <= tol))


def _clarabel(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pi_K(w) per row by Clarabel at tolerance 1e-10 on the unit row (the projection is
    homogeneous): min |p - w|^2 s.t. p in K, and which rows it reports solved."""
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas", "tol_ktratio"):
        setattr(settings, k, 1e-10)
    P2 = sparse.csc_matrix(2.0 * np.eye(3))
    A = sparse.csc_matrix(-np.eye(3))
    out, solved = np.zeros_like(W), np.zeros(W.shape[0], dtype=bool)
    for i, w in enumerate(W):
        n = np.linalg.norm(w)
        sol = clarabel.DefaultSolver(P2, -2.0 * w / n, A, np.zeros(3),
                                     [clarabel.ExponentialConeT()], settings).solve()
        out[i] = np.asarray(sol.x) * n
        solved[i] = str(sol.status) == "Solved"
    return out, solved


def test_exp_projection_certified_and_matches_clarabel():
    W = _hard_points(np.random.default_rng(0))
    P = ExpCone().project(torch.tensor(W, dtype=DT)).numpy()
    ok = _certified(W, P, 1e-13)
    assert ok.all(), W[~ok][:5]
    ref, solved = _clarabel(W)
    assert solved.mean() > 0.95
    n = np.linalg.norm(W, axis=1)
    err = np.linalg.norm(P - ref, axis=1)[solved] / n[solved]
    assert err.max() <= 2e-5, err.max()  # Clarabel's own accuracy (its IPM stops at 1e-10 gaps)
    # ours is no farther from w than Clarabel's answer, up to Clarabel's infeasibility
    # (its p may lie up to ~1e-10 outside K, closer to w)
    dist = np.linalg.norm(P - W, axis=1)
    assert (dist <= np.linalg.norm(ref - W, axis=1) + 1e-9 * n).all()


def test_exp_ray_root_solves_the_decomposition():
    """On rows of the smooth case, t (rho, 1, e^rho) - s (-1, rho - 1, e^-rho) = w with t,
    s >= 0, to rounding."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((5000, 3))
    in_k, in_polar, face = exp_cases(W)
    W = W[~(in_k | in_polar | face)]
    r = exp_ray_root(W)
    q = r * r - r + 1.0
    t, s = ((r - 1.0) * W[:, 0] + W[:, 1]) / q, (W[:, 0] - r * W[:, 1]) / q
    # t = 0 or s = 0 where the root is within rounding of the bracket's end
    slack = 1e-15 * (1.0 + np.abs(r)) * np.linalg.norm(W, axis=1)
    assert (t >= -slack).all() and (s >= -slack).all()
    with np.errstate(over="ignore"):
        fit = np.stack([t * r + s, t + s * (1.0 - r), t * np.exp(r) - s * np.exp(-r)], 1)
    # the z row carries t e^rho: forming t from rho amplifies rounding by e^|rho|
    ok = np.abs(r) < 5
    assert ok.mean() > 0.9
    err = np.abs(fit[ok] - W[ok]).max(1) / np.linalg.norm(W[ok], axis=1)
    assert err.max() <= 1e-13, err.max()
    # every row: one more Newton step on F would move rho by at most rounding
    f, df = _root_function(r, *(W / np.linalg.norm(W, axis=1)[:, None]).T)
    assert (np.abs(f / df) <= 1e-14 * (1.0 + np.abs(r))).all()


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_exp_projection_derivative_central_differences(scale):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((3000, 3))
    cone = ExpCone()
    Wt = torch.tensor(W, dtype=DT)
    in_k, in_polar, face = (torch.from_numpy(c) for c in exp_cases(W))
    P = cone.project(Wt)
    # rows whose projection lies on the smooth boundary, 1e-2 away from K, the polar cone
    # and the edge y = 0 (kinks of the projection)
    n = Wt.norm(dim=1)
    keep = ~(in_k | in_polar | face) & ((P - Wt).norm(dim=1) > 1e-2 * n) & (
        P.norm(dim=1) > 1e-2 * n) & (P[:, 1] > 1e-2 * n)
    W = Wt[keep] * scale
    assert W.shape[0] > 200
    _, D = cone.project_and_derivative(W)
    h = 1e-6 * W.norm(dim=1, keepdim=True)
    fd = torch.stack([(cone.project(W + h * e) - cone.project(W - h * e)) / (2 * h)
                      for e in torch.eye(3, dtype=DT)], -1)
    assert (D - fd).abs().max() <= 1e-6, (D - fd).abs().max()


def test_exp_ray_root_start_changes_only_the_path():
    """A start guess (good, poor, outside the bracket or nan) gives the same rho."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4000, 3))
    in_k, in_polar, face = exp_cases(W)
    W = W[~(in_k | in_polar | face)]
    r = exp_ray_root(W)
    for start in (r + 1e-3 * rng.standard_normal(r.shape), r + rng.standard_normal(r.shape),
                  np.full(r.shape, 1e6), np.full(r.shape, np.nan), -r):
        assert np.allclose(exp_ray_root(W, start), r, rtol=1e-12, atol=1e-12)


def test_exp_projection_repeated_calls_agree():
    """A repeated input (answered from the last call) and a nearby one (Newton started from
    the last call's rho) give what a first call gives."""
    rng = np.random.default_rng(4)
    W = torch.tensor(rng.standard_normal((500, 3)), dtype=DT)
    cone = ExpCone()
    p0, D0 = cone.project_and_derivative(W)
    p1 = cone.project(W)
    p2, D2 = cone.project_and_derivative(W.clone())
    assert torch.equal(p0, p1) and torch.equal(p0, p2) and torch.equal(D0, D2)
    V = W * (1 + 1e-2 * torch.randn(W.shape, dtype=DT, generator=torch.Generator().manual_seed(0)))
    pv = cone.project(V)
    cone.project(W + 1.0)  # another rho per row as the start
    assert torch.allclose(cone.project(V.clone()), pv, rtol=1e-12, atol=1e-13)
    p0[0, 0] = 123.0  # answers are copies: the cache is not the caller's tensor
    assert torch.equal(cone.project(W), p1)
