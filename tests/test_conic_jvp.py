"""pounce_kkt.conic_jvp: the forward-mode derivative of the conic solve.

References: central finite differences of the native forward (tol=1e-12) along random data
directions, and the adjoint identity <g, J v> = <J^T g, v> against conic_vjp. Both KKT paths
(dense Torch, native sparse) are run and compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pounce_kkt as pk
from testing_helpers.conic_problems import suite_batch

FD_FAMILIES = ["lp", "qp", "socp", "exp", "power", "psd"]
# The mixed family stops at "optimal_inaccurate" (~1e-9) at tol=1e-12: too noisy for central
# differences, still a fair point for the identities below, which need no accuracy.
FAMILIES = [*FD_FAMILIES, "mixed_soc_exp_pow"]
PATHS = ["dense", "sparse"]
TIGHT = pk.SolveOptions(tol=1e-12, max_iter=500)


def _setup(family: str, batch: int = 2, seed: int = 1):
    bt = suite_batch(family, batch=batch, seed=seed)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [None if v is None else torch.tensor(v) for v in (bt.p_values, bt.q, bt.a_values,
                                                              bt.b)]
    return st, vals


def _directions(vals, seed: int):
    rng = np.random.default_rng(seed)
    return [None if v is None else torch.tensor(rng.standard_normal(tuple(v.shape)))
            for v in vals]


def _state(st, vals, path: str, **kw):
    options = pk.SolveOptions(tol=1e-12, max_iter=500, backward=path, **kw)
    return pk.conic_forward(st, *vals, options)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().amax() / b.abs().amax().clamp_min(1.0))


@pytest.mark.parametrize("family", FD_FAMILIES)
def test_jvp_matches_central_differences(family):
    st, vals = _setup(family)
    h = 1e-5  # measured: forward noise ~1e-10/h vs curvature ~h^2 balance near here

    def solve(t, dirs):
        shifted = [None if v is None else v + t * d for v, d in zip(vals, dirs, strict=True)]
        sol = pk.conic_solve(st, *shifted, TIGHT)
        return torch.cat([sol.x, sol.y, sol.s], dim=1)

    states = {path: _state(st, vals, path)[1] for path in PATHS}
    for seed in (0, 1):
        dirs = _directions(vals, seed)
        fd = (solve(h, dirs) - solve(-h, dirs)) / (2 * h)
        for path, state in states.items():
            jv = torch.cat(pk.conic_jvp(state, *dirs), dim=1)
            # Largest error measured over these families: 3e-6 (SOCP), the FD noise floor.
            assert _rel(jv, fd) < 2e-5, (family, path, seed, _rel(jv, fd))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_adjoint_identity_against_conic_vjp(family, path):
    st, vals = _setup(family, batch=3)
    _, state = _state(st, vals, path)
    dirs = _directions(vals, 2)
    rng = np.random.default_rng(3)
    g = [torch.tensor(rng.standard_normal((3, k))) for k in (st.n, st.m, st.m)]
    jv = pk.conic_jvp(state, *dirs)
    jtg = pk.conic_vjp(state, *g)
    lhs = sum((gi * ji).sum(1) for gi, ji in zip(g, jv, strict=True))
    rhs = sum((gi * di).sum(1) for gi, di in zip(jtg, dirs, strict=True) if gi is not None)
    err = ((lhs - rhs).abs() / rhs.abs().clamp_min(1.0)).max()
    # The active-set H (pounce_kkt/active_set.py) holds eigenvalues ~1e8 next to O(1) ones in
    # a dense PSD block, which costs its O(1) eigenvalues ~1e-8: measured 1.3e-8 (PSD, dense).
    assert err < 3e-8, (family, path, lhs, rhs)


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_and_sparse_paths_agree(family):
    st, vals = _setup(family, batch=3)
    dirs = _directions(vals, 4)
    dense = pk.conic_jvp(_state(st, vals, "dense")[1], *dirs)
    sparse = pk.conic_jvp(_state(st, vals, "sparse")[1], *dirs)
    for name, a, b in zip(("dx", "dy", "ds"), dense, sparse, strict=True):
        assert _rel(a, b) < 1e-8, (family, name, _rel(a, b))


def test_ds_is_consistent_and_zero_on_zero_rows():
    """ds = db - dA x - A dx exactly (linearised A x + s = b) and 0 on zero-cone rows."""
    st, vals = _setup("socp", batch=2)
    _, state = _state(st, vals, "sparse")
    dP, dq, dA, db = _directions(vals, 5)
    dx, dy, ds = pk.conic_jvp(state, dP, dq, dA, db)
    ar, ac = st.a_rows, st.a_cols
    lin = torch.zeros_like(ds).index_add_(1, ar, dA * state.x[:, ac] + state.A * dx[:, ac])
    assert _rel(ds + lin, db) < 1e-12
    assert (ds[:, :st.cones.z] == 0).all() and st.cones.z > 0


def test_none_and_unbatched_directions_broadcast():
    st, vals = _setup("qp", batch=2)
    _, state = _state(st, vals, "dense")
    dq = torch.tensor(np.random.default_rng(6).standard_normal(st.n))
    full = pk.conic_jvp(state, None, dq.expand(2, -1), None, None)
    bcast = pk.conic_jvp(state, dq=dq)
    for a, b in zip(full, bcast, strict=True):
        assert torch.equal(a, b)
    zero = pk.conic_jvp(state)
    assert all(not t.any() for t in zero)


def test_dtype_and_unbatched_call_follow_the_solution():
    st, vals = _setup("lp", batch=1)
    one = [None if v is None else v[0].to(torch.float32) for v in vals]
    sol, state = pk.conic_forward(st, *one, TIGHT)
    dx, dy, ds = pk.conic_jvp(state, dq=torch.ones(st.n))
    assert dx.shape == sol.x.shape == (st.n,) and dy.shape == ds.shape == (st.m,)
    assert dx.dtype == dy.dtype == ds.dtype == torch.float32


def test_unsolved_item_is_nan_and_others_untouched():
    st, vals = _setup("lp", batch=2)
    P, q, A, b = vals
    bad_b = b.clone()
    bad_b[1] = -1e3 * bad_b[1].abs() - 1e3  # all nonneg rows: A x <= hugely negative
    opts = dict(on_failure="nan")
    _, state = _state(st, [P, q, A, bad_b], "sparse", **opts)
    assert not bool(state.ok[1]), state.status
    _, ref_state = _state(st, [P, q[:1], A[:1], b[:1]], "sparse", **opts)
    dirs = _directions(vals, 7)
    out = pk.conic_jvp(state, *dirs)
    ref = pk.conic_jvp(ref_state, *(None if d is None else d[:1] for d in dirs))
    for a, r in zip(out, ref, strict=True):
        assert torch.isnan(a[1]).all()
        assert _rel(a[:1], r) < 1e-12


def test_bad_directions_raise_naming_the_array():
    st, vals = _setup("lp", batch=2)
    _, state = _state(st, vals, "dense")
    with pytest.raises(ValueError, match="dA"):
        pk.conic_jvp(state, dA=torch.ones(2, st.nnz_a + 1))
    with pytest.raises(ValueError, match="db"):
        pk.conic_jvp(state, db=torch.ones(3, st.m))
    with pytest.raises(ValueError, match="dq"):
        pk.conic_jvp(state, dq=torch.full((st.n,), float("nan")))
    with pytest.raises(ValueError, match="dP"):
        pk.conic_jvp(state, dP=torch.ones(2, 3))
