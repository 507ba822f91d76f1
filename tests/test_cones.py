"""Cone projections and their derivatives (pounce_kkt/cones/).

Projections are checked against diffcp's (an independent implementation; it has no power
cone) and against Moreau's conditions (p in K, p - w in K*, <p, p - w> = 0); derivatives
against central differences of the projection, at random points, at points whose projection
lies on the boundary (w = s - y for a strictly complementary boundary pair), and one-sided at
points on the boundary of K and of the polar cone, where the projection has a kink and the
derivative is the one from the side w is classified in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffcp.cones import pi as diffcp_pi

from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.cones import (
    ExpCone,
    NonnegCone,
    PowerCone,
    PsdCone,
    SecondOrderCone,
    ZeroCone,
    apply_derivative,
    project,
)
from testing_helpers.cone_pairs import pair_exp, pair_power, pair_psd, pair_soc

DT = torch.float64
H = 1e-6


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=DT)


# (name, cone, dim, diffcp cone spec or None, pair maker (rng) -> (s, y) on a boundary face)
CONES = [
    ("zero", ZeroCone(), 3, ("z", 3), None),
    ("nonneg", NonnegCone(), 4, ("l", 4), None),
    ("soc", SecondOrderCone(), 4, ("q", [4]), lambda rng: pair_soc(rng, 4, "boundary")),
    ("psd3", PsdCone(3), 6, ("s", [3]), lambda rng: pair_psd(rng, 3, rank=1)),
    ("exp", ExpCone(), 3, ("ep", 1), lambda rng: pair_exp(rng, "boundary")),
    ("pow0.3", PowerCone(0.3), 3, None, lambda rng: pair_power(rng, 0.3, "boundary")),
    ("pow0.7", PowerCone(0.7), 3, None, lambda rng: pair_power(rng, 0.7, "boundary")),
]
IDS = [c[0] for c in CONES]


def _central(cone, w, d, h=H):
    return (cone.project(w + h * d) - cone.project(w - h * d)) / (2 * h)


def _check_derivative(cone, w, rng, tol):
    D = cone.derivative(w)
    for _ in range(3):
        d = _t(rng.standard_normal(w.shape))
        fd = _central(cone, w, d)
        an = (D @ d[..., None])[..., 0]
        err = ((fd - an).abs().amax(-1) / (1 + fd.abs().amax(-1))).max()
        assert err < tol, err


@pytest.mark.parametrize("name,cone,dim,spec,pair", [c for c in CONES if c[3]],
                         ids=[c[0] for c in CONES if c[3]])
def test_projection_matches_diffcp(name, cone, dim, spec, pair):
    """(diffcp has no power cone: those are checked by Moreau's conditions below.)"""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, dim))
    ours = cone.project(_t(W)).numpy()
    ref = np.stack([diffcp_pi(w, [spec]) for w in W])
    # diffcp's exp projection is itself only ~1e-7 accurate (Moreau checks below are tighter)
    np.testing.assert_allclose(ours, ref, atol=1e-6 if name == "exp" else 1e-12)


def _in_power(v, a):
    return (v[:, 0] >= 0) & (v[:, 1] >= 0) & (
        v[:, 0] ** a * v[:, 1] ** (1 - a) - np.abs(v[:, 2]) >= -1e-12)


def _in_power_dual(v, a):
    return (v[:, 0] >= 0) & (v[:, 1] >= 0) & (
        (v[:, 0] / a) ** a * (v[:, 1] / (1 - a)) ** (1 - a) - np.abs(v[:, 2]) >= -1e-12)


@pytest.mark.parametrize("a", [0.3, 0.7])
def test_power_projection_meets_moreau(a):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((200, 3)) * rng.uniform(0.1, 10, (200, 1))
    P = PowerCone(a).project(_t(W)).numpy()
    Y = P - W
    assert _in_power(P, a).all() and _in_power_dual(Y, a).all()
    assert np.abs((P * Y).sum(1)).max() < 1e-12 * (1 + np.abs(W).max())


def test_exp_projection_meets_moreau():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((200, 3))
    P = ExpCone().project(_t(W)).numpy()
    Y = P - W
    assert np.abs((P * Y).sum(1)).max() < 1e-12
    inner = P[:, 1] > 1e-3  # away from the y = 0 face: y exp(x/y) <= z
    assert (P[inner, 1] * np.exp(P[inner, 0] / P[inner, 1]) <= P[inner, 2] * (1 + 1e-12)).all()
    dual = Y[:, 0] < -1e-3  # -u exp(v/u) <= e w
    assert (-Y[dual, 0] * np.exp(Y[dual, 1] / Y[dual, 0]) <= np.e * Y[dual, 2] * (1 + 1e-9)).all()


@pytest.mark.parametrize("name,cone,dim,spec,pair", CONES, ids=IDS)
def test_derivative_matches_central_differences(name, cone, dim, spec, pair):
    rng = np.random.default_rng(4)
    W = _t(rng.standard_normal((40, dim)))
    if isinstance(cone, (ExpCone, PowerCone)):
        # leave out points projected within 1e-3 of an edge of K (exp: y = 0; power: x = 0 or
        # y = 0), where the projection bends on a scale below any usable difference step
        p = cone.project(W)
        far = (p[:, :2].abs().amin(1) > 1e-3) | (p == W).all(1) | (p == 0).all(1)
        assert far.sum() >= 25
        W = W[far]
    _check_derivative(cone, W, rng, tol=1e-6)


@pytest.mark.parametrize("name,cone,dim,spec,pair", [c for c in CONES if c[4]],
                         ids=[c[0] for c in CONES if c[4]])
def test_projection_onto_the_boundary_and_its_derivative(name, cone, dim, spec, pair):
    """w = s - y of a strictly complementary boundary pair: Pi(w) = s, D smooth there."""
    rng = np.random.default_rng(5)
    s, y = map(np.stack, zip(*[pair(rng) for _ in range(10)], strict=True))
    w = _t(s - y)
    np.testing.assert_allclose(cone.project(w).numpy(), s, atol=1e-12)
    _check_derivative(cone, w, rng, tol=1e-6)
    D = cone.derivative(w)
    # D s = s (scaling along the face) and D y = 0 (the multiplier's direction)
    np.testing.assert_allclose((D @ _t(s)[..., None])[..., 0].numpy(), s, atol=1e-8)
    np.testing.assert_allclose((D @ _t(y)[..., None])[..., 0].numpy(), 0, atol=1e-8)


# A point inside K and one inside K*, per cone (directions off the kinks below).
INTERIOR = {
    "soc": ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),
    "psd3": ([1.0, 0.0, 0.0, 1.0, 0.0, 1.0],) * 2,
    "exp": ([-1.0, 1.0, 1.0], [-1.0, 0.0, 1.0]),
    "pow0.3": ([1.0, 1.0, 0.0],) * 2,
    "pow0.7": ([1.0, 1.0, 0.0],) * 2,
}


@pytest.mark.parametrize("name,cone,dim,spec,pair", [c for c in CONES if c[4]],
                         ids=[c[0] for c in CONES if c[4]])
def test_derivative_at_and_next_to_the_kinks(name, cone, dim, spec, pair):
    """The projection has kinks on the boundary of K (w = s, y = 0) and of the polar cone
    (w = -y, s = 0). At them D is a one-sided derivative (either side, as rounding classifies
    w), so D s = s at the first and D y = 0 at the second; 1e-4 to either side D matches
    central differences."""
    rng = np.random.default_rng(6)
    s, y = map(np.stack, zip(*[pair(rng) for _ in range(6)], strict=True))
    k_in, kd_in = (_t(v).expand(6, dim) for v in INTERIOR[name])
    D = cone.derivative(_t(s))
    np.testing.assert_allclose((D @ _t(s)[..., None])[..., 0].numpy(), s, atol=1e-7)
    D = cone.derivative(_t(-y))
    np.testing.assert_allclose((D @ _t(y)[..., None])[..., 0].numpy(), 0, atol=1e-7)
    eps = 1e-4
    sides = {"inside K": _t(s) + eps * k_in, "outside K": _t(s) - eps * _t(y),
             "inside the polar": -_t(y) - eps * kd_in, "outside the polar": -_t(y) + eps * _t(s)}
    for side, w in sides.items():
        D = cone.derivative(w)
        for _ in range(3):
            d = _t(rng.standard_normal(w.shape))
            fd = _central(cone, w, d, h=1e-7)
            an = (D @ d[..., None])[..., 0]
            assert (fd - an).abs().max() < 1e-5, (side, (fd - an).abs().max())
    eye = torch.eye(dim, dtype=DT)
    assert torch.allclose(cone.derivative(sides["inside K"]), eye.expand(6, dim, dim))
    assert torch.allclose(cone.derivative(sides["inside the polar"]), 0 * eye)


def test_product_cone_projection_and_derivative_by_blocks():
    cones = ConeDims(z=2, l=3, q=(3,), s=(2,), ep=1, p=(0.4,))
    rng = np.random.default_rng(7)
    w = _t(rng.standard_normal((4, cones.m)))
    p, parts = project(w, cones, derivative=True)
    d = _t(rng.standard_normal(w.shape))
    fd = (project(w + H * d, cones)[0] - project(w - H * d, cones)[0]) / (2 * H)
    an = apply_derivative(d, w, cones, parts)
    assert (fd - an).abs().max() < 1e-6
    assert torch.equal(p[:, :2], torch.zeros(4, 2, dtype=DT))
    assert torch.equal(p[:, 2:5], w[:, 2:5].clamp(min=0))
