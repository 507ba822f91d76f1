"""pounce_cvxpy.diffcp against diffcp 1.1.9 itself.

References: diffcp with SCS at eps=1e-12 in mode="dense" (linear objectives; diffcp's dense
mode rejects P), and for P and power cones, which diffcp cannot differentiate, central finite
differences through diffcp.solve_only (SCS at eps=1e-12). Tolerances: solutions 1e-6,
derivatives (D and DT) 1e-4, all relative to max(1, |reference|_inf).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import diffcp as real_diffcp
import numpy as np
import pytest
import scipy.sparse as sp

import pounce_kkt
from pounce_cvxpy import diffcp as pounce_diffcp
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import LINEAR_CONE_CASES, linear_cone_program

REF = {"mode": "dense", "eps": 1e-12, "solve_method": "SCS", "max_iters": 200_000}


CASES = LINEAR_CONE_CASES  # the families compared with diffcp


def _random_like(A: sp.csc_matrix, rng) -> sp.csc_matrix:
    dA = A.copy()
    dA.data = rng.standard_normal(A.nnz)
    return dA


def _pattern(M: sp.spmatrix) -> set:
    return set(zip(*M.nonzero(), strict=True))


def _assert_close(ours, ref, tol, what):
    err = rel_err(ours, ref)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


# socp_psd seed 0: POUNCE's own PSD+SOC dual stalls ~5e-6 from the unique y* (200 iterations,
# "optimal_inaccurate" at tol=1e-12); the core's solution refinement (pounce_kkt/refine.py)
# brings it to the diffcp reference.
@pytest.mark.parametrize("case,seed", [(c, seed) for c in CASES for seed in (0, 1)])
def test_solution_D_and_DT_match_diffcp(case, seed):
    A, b, c, cone_dict, *_ = linear_cone_program(seed, **CASES[case])
    ref = real_diffcp.solve_and_derivative(A.copy(), b, c, cone_dict, **REF)
    ours = pounce_diffcp.solve_and_derivative(A, b, c, cone_dict, **REF)
    for name, u, v in zip("xys", ours[:3], ref[:3], strict=True):
        _assert_close(u, v, 1e-6, f"{case} {name}")

    rng = np.random.default_rng(100 + seed)
    dA, db, dc = _random_like(A, rng), rng.standard_normal(b.size), rng.standard_normal(c.size)
    for name, u, v in zip(("dx", "dy", "ds"), ours[3](dA, db, dc), ref[3](dA, db, dc), strict=True):
        _assert_close(u, v, 1e-4, f"{case} D -> {name}")

    gx, gy, gs = (rng.standard_normal(k) for k in (c.size, b.size, b.size))
    (dA_o, db_o, dc_o), (dA_r, db_r, dc_r) = ours[4](gx, gy, gs), ref[4](gx, gy, gs)
    assert sp.issparse(dA_o) and dA_o.shape == A.shape
    assert _pattern(dA_o) <= _pattern(A), "dA left A's pattern"
    _assert_close(dA_o.toarray(), dA_r.toarray(), 1e-4, f"{case} DT -> dA")
    _assert_close(db_o, db_r, 1e-4, f"{case} DT -> db")
    _assert_close(dc_o, dc_r, 1e-4, f"{case} DT -> dc")


def test_batch_mixes_structures_and_matches_single_calls():
    problems = [linear_cone_program(seed, **CASES[case])[:4]
                for seed, case in ((0, "lp"), (1, "socp"), (2, "lp"), (3, "exp"))]
    As, bs, cs, cds = (list(t) for t in zip(*problems, strict=True))
    xs, ys, ss, D_batch, DT_batch = pounce_diffcp.solve_and_derivative_batch(
        As, bs, cs, cds, n_jobs_forward=1, mode="dense", eps=1e-12)
    rng = np.random.default_rng(7)
    dAs = [_random_like(A, rng) for A in As]
    dbs = [rng.standard_normal(b.size) for b in bs]
    dcs = [rng.standard_normal(c.size) for c in cs]
    dxs, dys, dss = D_batch(dAs, dbs, dcs)
    g = [tuple(rng.standard_normal(k) for k in (c.size, b.size, b.size))
         for b, c in zip(bs, cs, strict=True)]
    dAs_T, dbs_T, dcs_T = DT_batch(*(list(t) for t in zip(*g, strict=True)))
    only = pounce_diffcp.solve_only_batch(As, bs, cs, cds, eps=1e-12)
    for i, (A, b, c, cd) in enumerate(problems):
        x, y, s, D, DT = real_diffcp.solve_and_derivative(A.copy(), b, c, cd, **REF)
        for u, v in zip((xs[i], ys[i], ss[i]), (x, y, s), strict=True):
            _assert_close(u, v, 1e-6, f"item {i} solution")
        for u in (only[0][i], only[1][i], only[2][i]):
            assert u.shape in {(c.size,), (b.size,)}
        _assert_close(only[0][i], x, 1e-6, f"item {i} solve_only_batch x")
        for u, v in zip((dxs[i], dys[i], dss[i]), D(dAs[i], dbs[i], dcs[i]), strict=True):
            _assert_close(u, v, 1e-4, f"item {i} D")
        dA_r, db_r, dc_r = DT(*g[i])
        _assert_close(dAs_T[i].toarray(), dA_r.toarray(), 1e-4, f"item {i} DT dA")
        _assert_close(dbs_T[i], db_r, 1e-4, f"item {i} DT db")
        _assert_close(dcs_T[i], dc_r, 1e-4, f"item {i} DT dc")


def test_batch_with_shared_structure_and_warm_start():
    A, b, c, cd, *_ = linear_cone_program(4, **CASES["socp"])
    rng = np.random.default_rng(3)
    bs = [b + 0.01 * rng.standard_normal(b.size) for _ in range(3)]
    xs, ys, ss = pounce_diffcp.solve_only_batch([A] * 3, bs, [c] * 3, [cd] * 3, eps=1e-12)
    warm = list(zip(xs, ys, ss, strict=True))
    xs2, _, _ = pounce_diffcp.solve_only_batch([A] * 3, bs, [c] * 3, [cd] * 3,
                                               warm_starts=warm, eps=1e-12)
    for i in range(3):
        x_ref, _, _ = real_diffcp.solve_only(A.copy(), bs[i], c, cd, eps=1e-12,
                                             solve_method="SCS", max_iters=200_000)
        _assert_close(xs[i], x_ref, 1e-6, f"item {i}")
        _assert_close(xs2[i], x_ref, 1e-6, f"warm-started item {i}")


def _qp(seed: int):
    """A QP with SOC and nonneg rows; returns (A, b, c, cone_dict, P_full)."""
    rng = np.random.default_rng(seed)
    n, cone_dict = 6, {"z": 1, "l": 6, "q": [3]}
    m = 10
    A = sp.csc_matrix(rng.standard_normal((m, n)))
    L = rng.standard_normal((n, n))
    P = sp.csc_matrix(L @ L.T / n + 0.1 * np.eye(n))
    x0 = rng.standard_normal(n)
    s0 = np.concatenate([[0.0], rng.uniform(-0.5, 1.0, 6), [2.0, 0.3, -0.4]])
    c = rng.standard_normal(n)
    return A, A @ x0 + s0, c, cone_dict, P


def _scs_solution(A, b, c, cd, P, **extra):
    return np.concatenate(real_diffcp.solve_only(A.copy(), b, c, cd, P=P, eps=1e-12,
                                                 solve_method="SCS", max_iters=200_000, **extra))


@pytest.mark.parametrize("triangle", ["upper", "full"])
def test_quadratic_objective_matches_scs_and_finite_differences(triangle):
    A, b, c, cd, P_full = _qp(0)
    P = sp.triu(P_full).tocsc() if triangle == "upper" else P_full
    x, y, s, D, DT = pounce_diffcp.solve_and_derivative(A, b, c, cd, P=P, mode="lsqr", eps=1e-12)
    ref = _scs_solution(A, b, c, cd, P)
    _assert_close(np.concatenate([x, y, s]), ref, 1e-6, "solution with P")
    assert np.sum(np.abs(s[1:7]) < 1e-7) >= 1, "fixture should have an active inequality"

    rng = np.random.default_rng(5)
    dA, db, dc = _random_like(A, rng), rng.standard_normal(b.size), rng.standard_normal(c.size)
    dP = P.copy()
    dP.data = rng.standard_normal(P.nnz)
    h = 1e-5
    fd = (_scs_solution(A + h * dA, b + h * db, c + h * dc, cd, P + h * dP)
          - _scs_solution(A - h * dA, b - h * db, c - h * dc, cd, P - h * dP)) / (2 * h)
    _assert_close(np.concatenate(D(dA, db, dc, dP=dP)), fd, 1e-4, "D with dP vs finite diff")

    # DT is the adjoint of D: <DT(g), v> = <g, D(v)>, with dP on P's own pattern.
    g = [rng.standard_normal(k) for k in (c.size, b.size, b.size)]
    gA, gb, gc, gP = DT(*g, return_dP=True)
    assert gP.shape == P.shape and _pattern(gP) <= _pattern(P)
    lhs = (gA.multiply(dA).sum() + gb @ db + gc @ dc + gP.multiply(dP).sum())
    rhs = sum(gi @ di for gi, di in zip(g, D(dA, db, dc, dP=dP), strict=True))
    assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(rhs))


def test_lower_triangle_entries_of_P_are_ignored_like_scs():
    A, b, c, cd, P_full = _qp(1)
    P_tampered = P_full.tolil()
    P_tampered[3, 0] += 5.0  # below the diagonal: SCS reads only the upper triangle
    P_tampered = P_tampered.tocsc()
    x1 = pounce_diffcp.solve_only(A, b, c, cd, P=P_tampered, eps=1e-12)[0]
    x2 = pounce_diffcp.solve_only(A, b, c, cd, P=sp.triu(P_full).tocsc(), eps=1e-12)[0]
    _assert_close(x1, x2, 1e-8, "tampered lower triangle")
    _assert_close(x1, _scs_solution(A, b, c, cd, P_tampered)[:c.size], 1e-6, "vs SCS")


def test_power_cone_key_is_solved_and_differentiated():
    """diffcp ignores 'p' in its derivative; we differentiate it (checked by finite diffs)."""
    A, b, c, cd, *_ = linear_cone_program(3, n=6, z=1, p=(0.3, 0.7))
    x, y, s, D, DT = pounce_diffcp.solve_and_derivative(A, b, c, cd)
    sol = np.concatenate([x, y, s])
    ref = np.concatenate(real_diffcp.solve_only(A.copy(), b, c, cd, eps=1e-12,
                                                solve_method="SCS", max_iters=200_000))
    _assert_close(sol, ref, 1e-6, "power-cone solution vs SCS")
    rng = np.random.default_rng(2)
    dA, db, dc = _random_like(A, rng), rng.standard_normal(b.size), rng.standard_normal(c.size)
    h = 1e-5

    def solve(t):
        return np.concatenate(pounce_diffcp.solve_only(A + t * dA, b + t * db, c + t * dc, cd,
                                                       eps=1e-11))

    fd = (solve(h) - solve(-h)) / (2 * h)
    _assert_close(np.concatenate(D(dA, db, dc)), fd, 1e-4, "power-cone D vs finite diff")


def test_failures_raise_a_diffcp_SolverError():
    A, b, c, cd, *_ = linear_cone_program(0, **CASES["lp"])
    A_bad = sp.vstack([A, sp.csc_matrix(([1.0, -1.0], ([0, 1], [0, 0])), shape=(2, A.shape[1]))])
    b_bad = np.concatenate([b, [-1.0, -1.0]])  # x0 <= -1 and x0 >= 1
    cd_bad = dict(cd, l=cd["l"] + 2)
    with pytest.raises(real_diffcp.SolverError) as info:
        pounce_diffcp.solve_and_derivative(A_bad.tocsc(), b_bad, c, cd_bad)
    assert isinstance(info.value, pounce_kkt.SolverError)
    assert "infeasible" in str(info.value)
    with pytest.raises(real_diffcp.SolverError) as info:
        pounce_diffcp.solve_only_batch([A, A_bad.tocsc()], [b, b_bad], [c, c], [cd, cd_bad])
    assert info.value.batch_index == 1

    # raise_on_error=False: the failed item is NaN (its D too, its DT zero), the other intact.
    xs, _, _, D, DT = pounce_diffcp.solve_and_derivative_batch(
        [A_bad.tocsc(), A], [b_bad, b], [c, c], [cd_bad, cd], raise_on_error=False, eps=1e-12)
    assert np.isnan(xs[0]).all()
    _assert_close(xs[1], real_diffcp.solve_only(A.copy(), b, c, cd, eps=1e-12)[0], 1e-6, "x")
    dxs, _, _ = D([A_bad, A], [b_bad, b], [c, c])
    assert np.isnan(dxs[0]).all() and np.isfinite(dxs[1]).all()
    dAs, dbs, dcs = DT([c, c], [b_bad, b], [b_bad, b])
    assert not dAs[0].toarray().any() and not dbs[0].any() and not dcs[0].any()


def test_clear_errors_for_unsupported_input():
    A, b, c, cd, *_ = linear_cone_program(0, **CASES["lp"])
    with pytest.raises(ValueError, match="'pnd'"):
        pounce_diffcp.solve_and_derivative(A, b, c, dict(cd, pnd=[0.5, 0.5]))
    with pytest.raises(ValueError, match="mode"):
        pounce_diffcp.solve_and_derivative(A, b, c, cd, mode="newton")
    with pytest.raises(ValueError, match="unknown"):
        pounce_diffcp.solve_and_derivative(A, b, c, cd, epss=1e-3)
    A_nan = A.copy()
    A_nan.data[0] = np.nan
    with pytest.raises(ValueError, match="A"):
        pounce_diffcp.solve_and_derivative(A_nan, b, c, cd)


def test_user_input_is_not_modified():
    A, b, c, cd, *_ = linear_cone_program(1, **CASES["socp"])
    A.data[0] = 0.0  # an explicit zero: diffcp would eliminate it in place
    before = (A.data.copy(), A.indices.copy(), b.copy(), c.copy(), dict(cd))
    x, y, s, D, DT = pounce_diffcp.solve_and_derivative(A, b, c, cd)
    dA, _, _ = DT(np.ones(c.size), np.zeros(b.size), np.zeros(b.size))
    assert np.array_equal(A.data, before[0]) and np.array_equal(A.indices, before[1])
    assert np.array_equal(b, before[2]) and np.array_equal(c, before[3]) and cd == before[4]
    assert dA.nnz == A.nnz, "dA keeps A's full stored pattern, explicit zeros included"


USER_SCRIPT = textwrap.dedent('''
    import json
    import numpy as np
    import scipy.sparse as sp
    import diffcp

    rng = np.random.default_rng(0)
    m, n = 12, 5
    A = sp.csc_matrix(rng.standard_normal((m, n)))
    active = np.arange(m) < n
    s = np.where(active, 0.0, rng.uniform(0.5, 1.5, m))
    y = np.where(active, rng.uniform(0.5, 1.5, m), 0.0)
    b = A @ rng.standard_normal(n) + s
    c = -A.T @ y
    cone_dict = {diffcp.POS: m}

    x, y, s, D, DT = diffcp.solve_and_derivative(A, b, c, cone_dict, mode="dense", eps=1e-12)
    dA = A.copy()
    dA.data = rng.standard_normal(A.nnz)
    dx, dy, ds = D(dA, 0.1 * np.ones(m), np.zeros(n))
    gA, gb, gc = DT(c, np.zeros(m), np.zeros(m))
    xs, ys, ss, D_batch, DT_batch = diffcp.solve_and_derivative_batch(
        [A, A], [b, b + 0.1], [c, c], [cone_dict, cone_dict], mode="dense", eps=1e-12)
    gAs, gbs, gcs = DT_batch([c, c], [np.zeros(m)] * 2, [np.zeros(m)] * 2)
    x_only, _, _ = diffcp.solve_only(A, b, c, cone_dict, eps=1e-12)
    try:
        diffcp.solve_and_derivative(A, rng.standard_normal(m), c, {diffcp.ZERO: m}, eps=1e-12)
        failure = "none"
    except diffcp.SolverError:
        failure = "SolverError"
    out = {"x": x, "y": y, "s": s, "dx": dx, "dy": dy, "ds": ds, "gA": gA.toarray(), "gb": gb,
           "gc": gc, "x1": xs[1], "gb1": gbs[1], "x_only": x_only}
    print(json.dumps({**{k: np.asarray(v).tolist() for k, v in out.items()}, "failure": failure}))
''')


def test_a_diffcp_script_runs_unchanged_but_for_its_import_line():
    swapped = USER_SCRIPT.replace("import diffcp\n", "from pounce_cvxpy import diffcp\n")
    assert swapped != USER_SCRIPT
    runs = []
    for text in (USER_SCRIPT, swapped):
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", text], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ref, ours = runs
    assert ours["failure"] == ref["failure"] == "SolverError"
    for key in ("x", "y", "s", "x1", "x_only"):
        _assert_close(ours[key], ref[key], 1e-6, key)
    for key in ("dx", "dy", "ds", "gA", "gb", "gc", "gb1"):
        _assert_close(ours[key], ref[key], 1e-4, key)


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_both_core_adjoints_give_diffcps_derivatives(backward):
    """D and DT go through the core's dense Torch adjoint or its native sparse one."""
    A, b, c, cd, *_ = linear_cone_program(5, **CASES["socp"])
    ref = real_diffcp.solve_and_derivative(A.copy(), b, c, cd, **REF)
    ours = pounce_diffcp.solve_and_derivative(A, b, c, cd, eps=1e-12, backward=backward)
    rng = np.random.default_rng(11)
    dA, db, dc = _random_like(A, rng), rng.standard_normal(b.size), rng.standard_normal(c.size)
    for name, u, v in zip(("dx", "dy", "ds"), ours[3](dA, db, dc), ref[3](dA, db, dc),
                          strict=True):
        _assert_close(u, v, 1e-4, f"{backward} D -> {name}")
    g = [rng.standard_normal(k) for k in (c.size, b.size, b.size)]
    for name, u, v in zip(("dA", "db", "dc"), ours[4](*g), ref[4](*g), strict=True):
        u, v = (w.toarray() if sp.issparse(w) else w for w in (u, v))
        _assert_close(u, v, 1e-4, f"{backward} DT -> {name}")


def test_large_sparse_program_matches_its_planted_solution_and_adjoint_identity():
    """n=2000, m=3000 with ~3 nonzeros per column: the native sparse adjoint, no dense KKT.
    (diffcp/SCS is no reference at this size: it takes minutes here.)"""
    rng = np.random.default_rng(0)
    n, m = 2000, 3000
    # Rows 0..n-1 are active with a diagonally dominant block, so x* is the unique vertex.
    R = sp.random(m, n, density=3 / n, random_state=rng, format="csc")
    A = (0.2 * R + sp.vstack([sp.eye(n), sp.csc_matrix((m - n, n))])).tocsc()
    active = np.arange(m) < n
    s_star = np.where(active, 0.0, rng.uniform(0.5, 1.5, m))
    y_star = np.where(active, rng.uniform(0.5, 1.5, m), 0.0)
    x_star = rng.standard_normal(n)
    b, c = A @ x_star + s_star, -A.T @ y_star
    x, y, s, D, DT = pounce_diffcp.solve_and_derivative(A, b, c, {"l": m}, eps=1e-10)
    _assert_close(np.concatenate([x, y, s]), np.concatenate([x_star, y_star, s_star]), 1e-6,
                  "large LP vs planted solution")
    dA, db, dc = _random_like(A, rng), rng.standard_normal(m), rng.standard_normal(n)
    g = [rng.standard_normal(k) for k in (n, m, m)]
    gA, gb, gc = DT(*g)
    lhs = gA.multiply(dA).sum() + gb @ db + gc @ dc
    rhs = sum(gi @ di for gi, di in zip(g, D(dA, db, dc), strict=True))
    assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(rhs))


def test_D_directions_off_the_pattern_raise_and_dP_defaults_to_zero():
    """D takes dA (dP) on the stored pattern of A (of P), names the offending array and item;
    a P problem's D without dP equals D with a zero dP."""
    A, b, c, cd, P_full = _qp(2)
    A = A.tolil()
    A[0, 0] = 0.0  # drop one stored entry of A's pattern
    A = A.tocsc()
    A.eliminate_zeros()
    x, y, s, D, DT = pounce_diffcp.solve_and_derivative(A, b, c, cd, P=P_full, eps=1e-12)
    rng = np.random.default_rng(9)
    dA, db, dc = _random_like(A, rng), rng.standard_normal(b.size), rng.standard_normal(c.size)
    off = dA.tolil()
    off[0, 0] = 1.0
    with pytest.raises(ValueError, match="dA"):
        D(off.tocsc(), db, dc)
    with pytest.raises(ValueError, match="dA"):
        D(sp.csc_matrix(np.ones((2, 2))), db, dc)
    zero_P = P_full.copy()
    zero_P.data[:] = 0.0
    for u, v in zip(D(dA, db, dc), D(dA, db, dc, dP=zero_P), strict=True):
        assert np.array_equal(u, v)
    # Batched: the error names the batch item.
    _, _, _, D_batch, _ = pounce_diffcp.solve_and_derivative_batch(
        [A, A], [b, b], [c, c], [cd, cd], eps=1e-12)
    with pytest.raises(ValueError, match=r"dA \(batch item 1\)"):
        D_batch([dA, off.tocsc()], [db, db], [dc, dc])
