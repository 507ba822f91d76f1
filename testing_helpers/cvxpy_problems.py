"""Small DPP problems, one per cone cvxpy emits, shared by the tests of pounce_cvxpy.

Each builder returns a `Case`: the problem, its parameters and variables, and a function
giving well-posed parameter values (float64 numpy) for a seed. Values are chosen so every
problem has a unique, strictly complementary solution (the derivative exists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np


@dataclass
class Case:
    name: str
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    values: Callable[[int], list[np.ndarray]]
    gp: bool = False


def qp(n: int = 4, m: int = 3, p: int = 1) -> Case:
    """min 1/2 ||x||^2 + q'x  s.t.  G x <= h, F x == g  (zero, nonneg; P kept)."""
    x = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    F, g = cp.Parameter((p, n)), cp.Parameter(p)
    ineq, eq = G @ x <= h, F @ x == g
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [ineq, eq])

    def values(seed: int) -> list[np.ndarray]:
        r = np.random.default_rng(seed)
        x0 = r.standard_normal(n)
        G_ = r.standard_normal((m, n))
        # Half the inequalities active at a point near x0 keeps complementarity strict.
        h_ = G_ @ x0 + np.where(np.arange(m) % 2 == 0, 0.0, 1.0) + 0.1 * r.random(m)
        F_ = r.standard_normal((p, n))
        return [r.standard_normal(n) * 2, G_, h_, F_, F_ @ x0]

    return Case("qp", prob, [q, G, h, F, g], [x], values)


def quad_form_qp(n: int = 3) -> Case:
    """min x'Qx + q'x  s.t.  -1 <= x <= 1 with Q a PSD parameter (needs P, not SOC)."""
    x = cp.Variable(n)
    Q, q = cp.Parameter((n, n), PSD=True), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.quad_form(x, Q) + q @ x), [x >= -1, x <= 1])

    def values(seed: int) -> list[np.ndarray]:
        r = np.random.default_rng(seed)
        M = r.standard_normal((n, n))
        return [M @ M.T + np.eye(n), 3 * r.standard_normal(n)]

    return Case("quad_form", prob, [Q, q], [x], values)


def socp(n: int = 3, m: int = 4) -> Case:
    """min ||A x - b||_2 + c'x  s.t.  ||x||_2 <= 1  (SOC)."""
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    ball = cp.norm(x, 2) <= 1
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + c @ x), [ball])

    def values(seed: int) -> list[np.ndarray]:
        r = np.random.default_rng(seed)
        return [r.standard_normal((m, n)), r.standard_normal(m), r.standard_normal(n)]

    return Case("socp", prob, [A, b, c], [x], values)


def exp_cone(n: int = 3) -> Case:
    """Entropy-regularised assignment: min c'x - sum(entr(x))  s.t.  sum(x) == 1 (exp)."""
    x = cp.Variable(n)
    c = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1])

    def values(seed: int) -> list[np.ndarray]:
        return [np.random.default_rng(seed).standard_normal(n)]

    return Case("exp", prob, [c], [x], values)


def psd(k: int = 3) -> Case:
    """min tr(C X) + ||X||_F^2  s.t.  X >> 0, tr(X) == 1  (PSD, SOC, zero)."""
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k))
    prob = cp.Problem(
        cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)), [X >> 0, cp.trace(X) == 1]
    )

    def values(seed: int) -> list[np.ndarray]:
        M = np.random.default_rng(seed).standard_normal((k, k))
        return [M + M.T]

    return Case("psd", prob, [C], [X], values)


def power_cone(alpha: float = 0.3) -> Case:
    """max w - c'u  s.t.  PowCone3D(u0, u1, w, alpha), u <= 2 (3D power cone)."""
    u = cp.Variable(2)
    w = cp.Variable()
    c = cp.Parameter(2)
    prob = cp.Problem(
        cp.Maximize(w - c @ u - 0.5 * cp.sum_squares(u)),
        [cp.PowCone3D(u[0], u[1], w, alpha), u <= 2],
    )

    def values(seed: int) -> list[np.ndarray]:
        # c'(1, 1) < 1 = (1^a 1^(1-a)) keeps the optimum away from the cone's apex.
        return [0.1 + 0.3 * np.random.default_rng(seed).random(2)]

    return Case("power", prob, [c], [u, w], values)


def gp() -> Case:
    """A geometric program (gp=True): min x*y*z s.t. a*x*y >= 1, x/y <= b, y*z + x <= c."""
    x, y, z = cp.Variable(pos=True), cp.Variable(pos=True), cp.Variable(pos=True)
    a, b, c = cp.Parameter(pos=True), cp.Parameter(pos=True), cp.Parameter(pos=True)
    prob = cp.Problem(
        cp.Minimize(1 / (x * y * z)), [a * (x * y + x * z + y * z) <= b, x >= c * y]
    )

    def values(seed: int) -> list[np.ndarray]:
        r = np.random.default_rng(seed)
        return [np.array(2.0 + r.random()), np.array(1.0 + r.random()), np.array(0.5 + r.random())]

    return Case("gp", prob, [a, b, c], [x, y, z], values, gp=True)


ALL_CONES: dict[str, Callable[[], Case]] = {
    "qp": qp,
    "quad_form": quad_form_qp,
    "socp": socp,
    "exp": exp_cone,
    "psd": psd,
    "power": power_cone,
}
