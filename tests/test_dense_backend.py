"""The dense Bunch-Kaufman backend (rust/src/dense_backend.rs) that POUNCE's QP IPM and the
KKT adjoint use for small, filled KKT systems: inertia, solves and the end-to-end results
against feral on the same batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pounce_kkt as pk
from pounce_kkt import _native
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import random_problem_batch


def _triplets(K: np.ndarray, split: bool = False):
    """Lower-triangle triplets of K; with `split`, each off-diagonal value is stored as two
    halves, one in each triangle (the backend must sum duplicates and fold the triangles)."""
    r, c = np.tril_indices(K.shape[0])
    v = K[r, c]
    if not split:
        return r, c, v
    off = r != c
    return (np.concatenate([r, c[off]]), np.concatenate([c, r[off]]),
            np.concatenate([np.where(off, v / 2, v), v[off] / 2]))


def _kkt(rng, n: int, m: int) -> np.ndarray:
    """A quasi-definite-free saddle point [[P, G'], [G, 0]] (needs 2x2 pivots)."""
    L = rng.standard_normal((n, n))
    G = rng.standard_normal((m, n))
    return np.block([[L @ L.T / n + 0.1 * np.eye(n), G.T], [G, np.zeros((m, m))]])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("split", [False, True])
def test_inertia_and_solve_match_numpy(seed, split):
    rng = np.random.default_rng(seed)
    if seed % 2:
        K = _kkt(rng, 7 + seed, 3 + seed)
    else:
        M = rng.standard_normal((20 + seed, 20 + seed))
        K = M + M.T
    dim = K.shape[0]
    rhs = rng.standard_normal((3, dim))
    out = _native.dense_lblt_probe(dim, *_triplets(K, split), rhs)
    assert out["status"] == "success"
    assert out["negative"] == int((np.linalg.eigvalsh(K) < 0).sum())
    x_ref = np.linalg.solve(K, rhs.T).T
    assert rel_err(out["x"], x_ref) < 1e-10


def _quasi_definite(rng, n: int, m: int) -> np.ndarray:
    """An IPM-like KKT [[P + I, G'], [G, -W]] with W spanning 1e-4..1e4."""
    L = rng.standard_normal((n, n))
    G = rng.standard_normal((m, n))
    W = np.diag(10.0 ** rng.uniform(-4, 4, m))
    return np.block([[L @ L.T / n + np.eye(n), G.T], [G, -W]])


@pytest.mark.parametrize("seed", range(4))
def test_quasi_definite_backend_keeps_the_unpivoted_factor_and_solves(seed):
    rng = np.random.default_rng(seed)
    K = _quasi_definite(rng, 12 + seed, 9)
    rhs = rng.standard_normal((2, K.shape[0]))
    out = _native.dense_lblt_probe(K.shape[0], *_triplets(K), rhs, quasi_definite=True)
    assert out["status"] == "success" and out["unpivoted"]
    assert out["negative"] == 9 == int((np.linalg.eigvalsh(K) < 0).sum())
    assert rel_err(out["x"], np.linalg.solve(K, rhs.T).T) < 1e-10


@pytest.mark.parametrize("K, negative", [
    # diagonal signs (+, +) but indefinite: the second pivot turns negative
    (np.array([[1.0, 2.0], [2.0, 1.0]]), 1),
    # tiny leading pivot: multipliers of 1e12, far past the growth bound
    (np.array([[1e-12, 1.0, 0.0], [1.0, 1e-12, 1.0], [0.0, 1.0, 2.0]]), 1),
    # zero diagonal (a saddle point's constraint block)
    (np.array([[2.0, 1.0], [1.0, 0.0]]), 1),
])
def test_quasi_definite_backend_falls_back_to_bunch_kaufman(K, negative):
    rhs = np.arange(1.0, 1.0 + K.shape[0])[None, :]
    out = _native.dense_lblt_probe(K.shape[0], *_triplets(K), rhs, quasi_definite=True)
    assert out["status"] == "success" and not out["unpivoted"]
    assert out["negative"] == negative == int((np.linalg.eigvalsh(K) < 0).sum())
    assert rel_err(out["x"], np.linalg.solve(K, rhs.T).T) < 1e-10


def test_singular_and_non_finite_are_reported():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((6, 3))
    K = B @ B.T  # rank 3 of 6
    K[:, 5] = K[5, :] = 0.0
    out = _native.dense_lblt_probe(6, *_triplets(K), np.ones((1, 6)))
    assert out["status"] == "singular"
    r, c, v = _triplets(np.eye(4))
    v[1] = np.nan
    assert _native.dense_lblt_probe(4, r, c, v, np.ones((1, 4)))["status"] == "fatal_error"


def _dense_qp_batch():
    """KKT 50 + 65 = 115 rows, ~2/3 filled: the dense backend's side of the choice."""
    return random_problem_batch({"z": 5, "l": 60}, 50, batch=6, density=0.9, seed=4)


def _solve_and_grad(bt):
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [torch.tensor(v, requires_grad=True)
            for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    sol = pk.conic_solve(st, *vals, pk.SolveOptions(tol=1e-10, backward="sparse"))
    w = torch.linspace(-1.0, 1.0, bt.n, dtype=torch.float64)
    ((sol.x * w).sum() + sol.y.square().sum()).backward()
    return sol, [v.grad for v in vals]


def test_dense_and_feral_backends_agree_on_a_qp_batch(monkeypatch):
    bt = _dense_qp_batch()
    results = {}
    for backend in ("dense", "feral"):
        monkeypatch.setenv("POUNCE_LAYERS_KKT_BACKEND", backend)
        results[backend] = _solve_and_grad(bt)
    (sd, gd), (sf, gf) = results["dense"], results["feral"]
    assert all(s == "optimal" for s in sd.status + sf.status)
    xd, yd, xf = (t.detach().numpy() for t in (sd.x, sd.y, sf.x))
    for i, prob in enumerate(bt.problems):
        assert rel_err(xd[i], prob.x_star) < 1e-7
        assert rel_err(yd[i], prob.y_star) < 1e-7
    assert rel_err(xd, xf) < 1e-8
    for a, b in zip(gd, gf, strict=True):
        assert rel_err(a.numpy(), b.numpy()) < 1e-7
