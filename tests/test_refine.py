"""Solution refinement (pounce_kkt/refine.py) through the core's forward.

References: the exact solution (x*, y*) every testing_helpers family is built around (and
the one it gives the SOC+exp epigraph fixture of tests/test_conic_backward.py). Relative
errors |a - b|_inf / max(1, |b|_inf).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pounce_kkt as pk
from pounce_kkt.conic import _kkt_vjp
from pounce_kkt.refine import refine, residual
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import CONE_SUITE, soc_epigraph, stack_batch, suite_batch

TARGET = 1e-9


def _structure_values(bt):
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [None if v is None else torch.tensor(v)
            for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    return st, vals


@pytest.mark.parametrize("family", list(CONE_SUITE))
def test_refined_solution_is_exact_to_1e9_at_the_default_tol(family):
    """Without refinement these families end 3e-8 (LP/QP at 1e-8) to 5e-5 (SOC+exp+power,
    "optimal_inaccurate") off x*, y* (benchmarks/refine_accuracy.py)."""
    bt = suite_batch(family, batch=4)
    st, vals = _structure_values(bt)
    sol = pk.conic_solve(st, *vals, pk.SolveOptions(on_inaccurate="ignore"))
    assert set(sol.status) == {"optimal"}
    for i, p in enumerate(bt.problems):
        assert rel_err(sol.x[i], p.x_star) < TARGET, (family, i, rel_err(sol.x[i], p.x_star))
        assert rel_err(sol.y[i], p.y_star) < TARGET, (family, i, rel_err(sol.y[i], p.y_star))
        assert rel_err(sol.s[i], p.s_star) < TARGET, (family, i)


def test_soc_exp_epigraph_fixture_is_exact():
    """The SOC+exp epigraph problems POUNCE leaves ~1e-5 off ("optimal_inaccurate"). Their
    solution is the exp family's: x = (x*, x*'Px*/2), and the original rows keep y*."""
    base = suite_batch("exp", batch=2).problems
    bt = stack_batch([soc_epigraph(p) for p in base])
    st, vals = _structure_values(bt)
    raw, _ = pk.conic_forward(st, *vals, pk.SolveOptions(refine=False, on_inaccurate="ignore"))
    sol, _ = pk.conic_forward(st, *vals, pk.SolveOptions(on_inaccurate="ignore"))
    assert set(sol.status) == {"optimal"}
    for i, p in enumerate(base):
        Pd = p.P.toarray()
        x_star = np.append(p.x_star, 0.5 * p.x_star @ (0.5 * (Pd + Pd.T)) @ p.x_star)
        r0, n = p.cones.get("z", 0) + p.cones.get("l", 0), p.n
        keep = np.r_[0:r0, r0 + n + 2:bt.m]
        assert rel_err(raw.x[i], x_star) > 1e-7  # what refinement has to mend
        assert rel_err(sol.x[i], x_star) < TARGET, rel_err(sol.x[i], x_star)
        assert rel_err(sol.y[i, keep], p.y_star) < TARGET, rel_err(sol.y[i, keep], p.y_star)


def _refine_direct(family, perturb):
    bt = suite_batch(family, batch=3)
    st, vals = _structure_values(bt)
    P, q, A, b = vals
    x, y, s = (torch.tensor(np.stack([getattr(p, k) for p in bt.problems]))
               for k in ("x_star", "y_star", "s_star"))
    x, y, s = perturb(x, y, s)
    ok = torch.tensor([True, False, True])

    def solve(xc, yc, sc, rx, ry, items):
        _, dq, _, db = _kkt_vjp(st, "dense", P, A, xc, yc, sc, items, rx, ry, None)
        return -dq, db

    return bt, st, vals, (x, y, s), ok, refine(st, P, q, A, b, x, y, s, ok, solve)


@pytest.mark.parametrize("family", ["qp", "socp", "psd", "power"])
def test_refinement_never_returns_a_worse_point(family):
    """From points 1e-4 off (x, y and s perturbed independently): the residual never rises,
    the exact solution is recovered, and an item not ok is handed back untouched."""
    rng = np.random.default_rng(0)

    def perturb(x, y, s):
        return tuple(t + 1e-4 * torch.tensor(rng.standard_normal(t.shape)) for t in (x, y, s))

    bt, st, vals, (x, y, s), ok, r = _refine_direct(family, perturb)
    assert (r.after[ok] <= r.before[ok]).all()
    assert (r.steps[ok] >= 1).all() and r.steps[1] == 0
    assert torch.equal(r.x[1], x[1]) and torch.equal(r.y[1], y[1]) and torch.equal(r.s[1], s[1])
    for i in (0, 2):
        p = bt.problems[i]
        assert rel_err(r.x[i], p.x_star) < TARGET and rel_err(r.y[i], p.y_star) < TARGET
    np.testing.assert_allclose(r.after[ok].numpy(), residual(st, *vals, r.x, r.y, r.s)[ok])


def test_an_exact_point_is_left_as_it_is():
    bt, st, vals, (x, y, s), ok, r = _refine_direct("socp", lambda *t: t)
    assert (r.before[ok] < 1e-14).all() and (r.steps == 0).all()
    assert torch.equal(r.x, x)
    assert torch.allclose(r.y, y, rtol=0, atol=1e-15) and torch.allclose(r.s, s, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["qp", "socp", "exp", "psd", "power"])
def test_layer_gradcheck_at_the_default_tol(name):
    """gradcheck with a 1e-6 step at the default tol (1e-8): finite differences of two nearby
    solves need them accurate to ~1e-12, which refinement gives (without it the SOCP case
    fails here, and cvxpylayers' own exp-cone gradcheck failed at 1e-8)."""
    import warnings

    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401  (registers "pounce")
    from testing_helpers.cvxpy_problems import ALL_CONES

    case = ALL_CONES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="pounce")
    params = [torch.tensor(v, dtype=torch.float64).requires_grad_() for v in case.values(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", pk.InaccurateSolutionWarning)
        assert torch.autograd.gradcheck(lambda *p: layer(*p), params, eps=1e-6, atol=1e-5,
                                        rtol=1e-5)


def test_block_operators_match_the_dense_ones():
    """The block-sparse numpy operators (refine.BlockOperators) against the dense Torch ones
    on a sparse pattern with P, for the whole batch and for a subset (take)."""
    import scipy.sparse as sp

    from pounce_kkt.refine import BlockOperators, KktOperators, _sparse_operators

    rng = np.random.default_rng(3)
    n, m, B = 20, 30, 5
    A0 = sp.random(m, n, density=0.05, random_state=4, format="csc")
    P0 = sp.csc_matrix(np.triu(np.ones((n, n))) * (rng.random((n, n)) < 0.05) + np.eye(n))
    st = pk.ConicStructure.from_scipy(A0, {"z": 2, "l": m - 2}, P=P0)
    assert _sparse_operators(st)
    A = torch.tensor(rng.standard_normal((B, st.nnz_a)))
    P = torch.tensor(rng.standard_normal((B, st.nnz_p)))
    dense = KktOperators(st, P, A)
    block = BlockOperators(st, P.numpy(), A.numpy())
    x, y = torch.tensor(rng.standard_normal((B, n))), torch.tensor(rng.standard_normal((B, m)))
    for ops_d, ops_b, idx in ((dense, block, np.arange(B)), (dense.take(torch.tensor([0, 2, 4])),
                                                          block.take(np.array([0, 2, 4])),
                                                          np.array([0, 2, 4]))):
        xi, yi = x[idx], y[idx]
        np.testing.assert_allclose(ops_b.p(xi.numpy()), ops_d.p(xi).numpy(), rtol=0, atol=1e-13)
        np.testing.assert_allclose(ops_b.a(xi.numpy()), ops_d.a(xi).numpy(), rtol=0, atol=1e-13)
        np.testing.assert_allclose(ops_b.at(yi.numpy()), ops_d.at(yi).numpy(), rtol=0,
                                   atol=1e-13)
    assert block.take(np.arange(B)) is block


@pytest.mark.parametrize("family", ["exp", "socp", "mixed_soc_exp_pow"])
def test_numpy_and_torch_refinement_agree(family, monkeypatch):
    """Curved cones refine on numpy arrays (CPU float64): the same steps and the same point
    as on Torch tensors (refine._numpy_start forced off), from points 1e-4 off."""
    import pounce_kkt.refine as refine_mod

    rng = np.random.default_rng(1)
    noise = {}

    def perturb(x, y, s):
        if not noise:
            noise.update({k: 1e-4 * torch.tensor(rng.standard_normal(t.shape))
                          for k, t in zip("xys", (x, y, s), strict=True)})
        return x + noise["x"], y + noise["y"], s + noise["s"]

    *_, r_np = _refine_direct(family, perturb)
    monkeypatch.setattr(refine_mod, "_numpy_start", lambda *a: False)
    *_, r_t = _refine_direct(family, perturb)
    assert torch.equal(r_np.steps, r_t.steps) and (r_np.steps[[0, 2]] >= 1).all()
    for a, b in ((r_np.x, r_t.x), (r_np.y, r_t.y), (r_np.s, r_t.s), (r_np.after, r_t.after)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, equal_nan=True)
