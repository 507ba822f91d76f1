"""Complementary ``(s, y)`` pairs in ``K x K*`` with strict complementarity, per cone and for
a whole SCS cone dict, on chosen or random faces.

Cone conventions are SCS's (docs/design.md): SOC ``t`` first; PSD in svec
(:mod:`testing_helpers.svec`); exp ``(x, y, z)`` with ``y exp(x/y) <= z``; power
``(x, y, z)`` with ``x^a y^(1-a) >= |z|``.
"""

from __future__ import annotations

import math

import numpy as np

from testing_helpers.svec import svec


def pair_nonneg(rng, d, active=None):
    """``d`` nonneg rows: ``s = 0, y > 0`` where ``active`` (random if None), else
    ``s > 0, y = 0``."""
    active = rng.random(d) < 0.5 if active is None else np.asarray(active, bool)
    s = np.where(active, 0.0, rng.uniform(0.5, 2.0, d))
    y = np.where(active, rng.uniform(0.5, 2.0, d), 0.0)
    return s, y


def soc_mode(rng, d):
    """A random face for an SOC of size ``d``: "boundary" (60%), "s_interior" or "y_interior"
    (20% each); size 1 has no boundary apart from its apex, so "s_interior" stands in."""
    mode = str(rng.choice(["boundary", "s_interior", "y_interior"], p=[0.6, 0.2, 0.2]))
    return "s_interior" if (d == 1 and mode == "boundary") else mode


def pair_soc(rng, d, mode=None):
    """An SOC pair of size ``d`` (``t`` first) on the face ``mode`` (see :func:`soc_mode`)."""
    mode = mode or soc_mode(rng, d)
    u = rng.standard_normal(d - 1)
    u /= max(np.linalg.norm(u), 1e-12)
    if mode == "boundary":  # s = a(1, u), y = c(1, -u): both on the boundary, s'y = 0
        a, c = rng.uniform(0.5, 2.0, 2)
        return a * np.concatenate([[1.0], u]), c * np.concatenate([[1.0], -u])
    t = rng.uniform(1.5, 2.5)
    inner = np.concatenate([[t], 0.5 * rng.uniform(0, 1) * u])
    if mode == "s_interior":
        return inner, np.zeros(d)
    return np.zeros(d), inner


def pair_psd(rng, k, rank=None):
    """S of rank ``rank`` (random if None) and Y of rank k - rank, sharing eigenvectors."""
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    r = int(rng.integers(0, k + 1)) if rank is None else int(rank)
    ls = np.concatenate([rng.uniform(0.5, 2.0, r), np.zeros(k - r)])
    ly = np.concatenate([np.zeros(r), rng.uniform(0.5, 2.0, k - r)])
    S = Q @ np.diag(ls) @ Q.T
    Y = Q @ np.diag(ly) @ Q.T
    return svec(S), svec(Y)


def pair_exp(rng, mode=None):
    """An exp-cone pair ``(x, y, z)``, ``y exp(x/y) <= z``: "boundary" or "s_interior"."""
    mode = mode or str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
    if mode == "boundary":
        # s = (x, y, y e^{x/y}); y* = c(-e^r, e^r (r - 1), 1), r = x/y: the outer normal of
        # the boundary, on the dual boundary, s'y* = 0.
        yv = rng.uniform(0.5, 2.0)
        r = rng.uniform(-1.0, 1.0)
        c = rng.uniform(0.5, 2.0)
        s = np.array([r * yv, yv, yv * math.exp(r)])
        y = c * np.array([-math.exp(r), math.exp(r) * (r - 1.0), 1.0])
        return s, y
    yv = rng.uniform(0.5, 2.0)
    r = rng.uniform(-1.0, 1.0)
    return np.array([r * yv, yv, 2.0 * yv * math.exp(r)]), np.zeros(3)


def pair_power(rng, a, mode=None):
    """A power-cone pair ``(x, y, z)``, ``x^a y^(1-a) >= |z|``: "boundary" or "s_interior"."""
    mode = mode or str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
    xv, yv = rng.uniform(0.5, 2.0, 2)
    g = xv**a * yv ** (1 - a)
    if mode == "boundary":
        # s = (x, y, +-x^a y^(1-a)); y* = c(a x^(a-1) y^(1-a), (1-a) x^a y^-a, -sign z).
        sign = rng.choice([-1.0, 1.0])
        c = rng.uniform(0.5, 2.0)
        s = np.array([xv, yv, sign * g])
        y = c * np.array([a * xv ** (a - 1) * yv ** (1 - a), (1 - a) * xv**a * yv ** (-a), -sign])
        return s, y
    return np.array([xv, yv, 0.3 * g * rng.uniform(-1, 1)]), np.zeros(3)


def face_modes(rng, cones: dict) -> list:
    """Random face of each block (in cone order after the zero rows): a bool active mask for
    the nonneg rows, then "boundary" / "s_interior" / "y_interior" per SOC, the rank of S per
    PSD, "boundary" / "s_interior" per exp and power cone."""
    modes = [rng.random(cones.get("l", 0)) < 0.5]
    modes += [soc_mode(rng, d) for d in cones.get("q", [])]
    modes += [int(rng.integers(0, k + 1)) for k in cones.get("s", [])]
    modes += [str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
              for _ in range(cones.get("ep", 0) + len(cones.get("p", [])))]  # fmt: skip
    return modes


def face_codim(cones: dict, modes: list) -> int:
    """Number of independent equations the face pins: zero rows, active nonneg rows, 1 per
    boundary SOC/exp/power, d per SOC at its apex, (k-r)(k-r+1)/2 per PSD of rank r."""
    it = iter(modes)
    total = cones.get("z", 0) + int(np.sum(next(it)))
    for d in cones.get("q", []):
        mode = next(it)
        total += {"boundary": 1, "s_interior": 0, "y_interior": d}[mode]
    for k in cones.get("s", []):
        r = next(it)
        total += (k - r) * (k - r + 1) // 2
    for _ in range(cones.get("ep", 0) + len(cones.get("p", []))):
        total += 1 if next(it) == "boundary" else 0
    return total


def complementary_pair(rng, cones: dict, modes: list | None = None):
    """A random ``(s, y)`` in ``K x K*`` with ``s'y = 0`` and strict complementarity, on the
    faces ``modes`` (see :func:`face_modes`; random if None)."""
    it = iter(modes) if modes is not None else None
    pick = (lambda: next(it)) if it is not None else (lambda: None)
    z = cones.get("z", 0)
    s_parts, y_parts = [np.zeros(z)], [rng.standard_normal(z)]
    # One (pair maker, its size argument) per cone block, in the SCS row order.
    blocks = [(pair_nonneg, (cones.get("l", 0),))]
    blocks += [(pair_soc, (d,)) for d in cones.get("q", [])]
    blocks += [(pair_psd, (k,)) for k in cones.get("s", [])]
    blocks += [(pair_exp, ()) for _ in range(cones.get("ep", 0))]
    blocks += [(pair_power, (a,)) for a in cones.get("p", [])]
    for make_pair, size in blocks:
        s, y = make_pair(rng, *size, pick())
        s_parts.append(s)
        y_parts.append(y)
    return np.concatenate(s_parts), np.concatenate(y_parts)
