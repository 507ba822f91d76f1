"""The one dense KKT solve (pounce_kkt/kkt_solve.py) shared by the conic dense adjoint and
the NLP implicit step: its constants are the native adjoint's, it solves regular systems to
refinement accuracy, returns the minimum-norm solution of a singular consistent one (as the
native path does), and is differentiable twice (the dense double backward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pounce_kkt import _native
from pounce_kkt.kkt_solve import REFINE_STEPS, REFINE_TOL, REG_REL, solve_kkt

DT = torch.float64


def test_constants_are_the_native_adjoints():
    assert REG_REL == _native.KKT_REG_REL > 0
    assert REFINE_STEPS == _native.KKT_REFINE_STEPS >= 1
    assert REFINE_TOL == _native.KKT_REFINE_TOL > 0
    assert isinstance(_native.KKT_REFINE_STEPS, int)


def _kkt(rng, B, n, m, p_rank=None, a_rank=None):
    """(B, n+m, n+m) K = [[P, A'], [A, -H]] with P = L L' of rank p_rank, A of rank a_rank,
    H = 0 (the equality-only shape, singular when P and A leave a common null space)."""
    Ks = []
    for _ in range(B):
        L = rng.standard_normal((n, p_rank or n))
        A = rng.standard_normal((m, a_rank or n)) @ rng.standard_normal((a_rank or n, n))
        K = np.zeros((n + m, n + m))
        K[:n, :n] = L @ L.T + (0.0 if p_rank else 0.5 * np.eye(n))
        K[n:, :n], K[:n, n:] = A, A.T
        Ks.append(K)
    return torch.tensor(np.stack(Ks), dtype=DT)


@pytest.mark.parametrize("regularised", [True, False])
def test_regular_systems_solved_to_refinement_accuracy(regularised):
    rng = np.random.default_rng(0)
    K = _kkt(rng, 3, 6, 3)
    rhs = torch.tensor(rng.standard_normal((3, 9)), dtype=DT)
    delta = REG_REL * K.abs().flatten(1).amax(1) if regularised else None
    sol = solve_kkt(K, rhs, 6, delta)
    ref = torch.linalg.solve(K, rhs)
    assert (sol - ref).abs().max() < 1e-12 * ref.abs().max()
    res = (rhs - (K @ sol[:, :, None])[:, :, 0]).abs().amax(1)
    assert (res < 1e3 * REFINE_TOL * rhs.abs().amax(1)).all()


def test_singular_consistent_system_gives_the_minimum_norm_solution():
    """P of rank 2 and A of rank 1 on 4 variables: K has a null space; a right-hand side in
    range(K) gets pinv(K) rhs, the solution with no null-space component."""
    rng = np.random.default_rng(1)
    K = _kkt(rng, 2, 4, 2, p_rank=2, a_rank=1)
    assert (torch.linalg.matrix_rank(K) < 6).all()
    rhs = (K @ torch.tensor(rng.standard_normal((2, 6, 1)), dtype=DT))[:, :, 0]
    delta = REG_REL * K.abs().flatten(1).amax(1)
    sol = solve_kkt(K, rhs, 4, delta)
    ref = (torch.linalg.pinv(K, hermitian=True) @ rhs[:, :, None])[:, :, 0]
    assert (sol - ref).abs().max() < 1e-6 * ref.abs().max()


def test_differentiable_twice():
    rng = np.random.default_rng(2)
    K = _kkt(rng, 2, 3, 2).requires_grad_()
    rhs = torch.tensor(rng.standard_normal((2, 5)), dtype=DT, requires_grad=True)
    delta = torch.full((2,), 1e-8, dtype=DT)

    def f(K, rhs):
        return solve_kkt(K, rhs, 3, delta)

    assert torch.autograd.gradcheck(f, (K, rhs))
    assert torch.autograd.gradgradcheck(f, (K, rhs))
