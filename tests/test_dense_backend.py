"""The dense Bunch-Kaufman backend (rust/core/src/dense_backend.rs) that POUNCE's QP IPM and
the KKT adjoint use for small, filled KKT systems: the end-to-end results against feral on
the same batch. Its inertia and solves are the Rust unit tests in
rust/core/tests/dense_backend.rs."""

from __future__ import annotations

import torch

import pounce_kkt as pk
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import random_problem_batch


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
