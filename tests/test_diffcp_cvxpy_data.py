"""pounce_cvxpy.diffcp on the data cvxpy itself produces, against diffcp 1.1.9.

A diffcp user's script builds its data with `diffcp.utils.scs_data_from_cvxpy_problem` or
`problem.get_problem_data(cp.SCS)` (cone dicts with cvxpy's `pnd` key, empty lists, `z`).
The same script runs twice, with `import diffcp` and with `from pounce_cvxpy import diffcp`;
the reference is diffcp with SCS at eps=1e-12 in mode="dense". Tolerances: solution 1e-8,
D and DT 1e-6, relative to max(1, |reference|_inf).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import cvxpy as cp
import diffcp as real_diffcp
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pounce_cvxpy import diffcp as pounce_diffcp
from pounce_cvxpy import solver_args
from testing_helpers.compare import rel_err

# The programs (each with a unique, strictly complementary solution: cvxpy's auxiliary
# variables are pinned, the SOC constraints are written as cp.SOC on affine arguments).
PROGRAMS = textwrap.dedent('''
    import cvxpy as cp
    import numpy as np

    def lp(rng):
        n, m = 6, 14
        x = cp.Variable(n)
        G = rng.standard_normal((m, n))
        h = G @ rng.standard_normal(n) + rng.uniform(0.1, 1, m)
        return cp.Problem(cp.Minimize(rng.standard_normal(n) @ x),
                          [G @ x <= h, cp.sum(x) == 1, x <= 5, x >= -5])

    def qp(rng):
        n = 6
        x = cp.Variable(n)
        F, g = rng.standard_normal((8, n)), rng.standard_normal(8)
        return cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + rng.standard_normal(n) @ x),
                          [x >= -0.3, cp.sum(x) == 1])

    def socp(rng):
        n = 5
        x = cp.Variable(n)
        return cp.Problem(cp.Minimize(rng.standard_normal(n) @ x),
                          [cp.SOC(cp.Constant(1.0), x - 0.1 * rng.standard_normal(n)),
                           cp.SOC(2 + x[0], rng.standard_normal((3, n)) @ x), x[1] >= -0.5])

    def exp(rng):
        y = cp.Variable(6)
        return cp.Problem(cp.Minimize(-cp.sum(cp.entr(y)) + rng.uniform(0, 1, 6) @ y),
                          [cp.sum(y) == 1, y[0] >= 0.3])

    def psd(rng):
        k = 4
        X = cp.Variable((k, k), PSD=True)
        C, B = rng.standard_normal((k, k)), rng.standard_normal((k, k))
        C, B = C + C.T, B @ B.T
        return cp.Problem(cp.Minimize(cp.trace(C @ X)),
                          [cp.trace(X) == 1, cp.trace(B @ X) <= 1.2 * np.trace(B) / k])

    def mixed(rng):  # LP + SOC + PSD rows
        n = 5
        x, X = cp.Variable(n), cp.Variable((3, 3), PSD=True)
        C = rng.standard_normal((3, 3))
        return cp.Problem(cp.Minimize(rng.standard_normal(n) @ x + cp.trace((C + C.T) @ X)),
                          [cp.SOC(1 + X[0, 0], x), cp.trace(X) == 1, x >= -1])

    def logistic(rng):  # logistic regression with an l2-norm term: exp + SOC + LP rows
        n, N = 5, 30
        X, labels = rng.standard_normal((N, n)), (rng.random(N) > 0.5).astype(float)
        beta = cp.Variable(n)
        loss = cp.sum(cp.logistic(X @ beta) - cp.multiply(labels, X @ beta)) / N
        return cp.Problem(cp.Minimize(loss + 0.1 * cp.norm(beta, 2)))
''')

# A user's script: data from cvxpy, then solve, D and DT, as diffcp's README does.
USER_SCRIPT = PROGRAMS + textwrap.dedent('''
    import json
    import sys
    import diffcp

    def scs_data(problem, how):
        if how == "utils":
            return diffcp.utils.scs_data_from_cvxpy_problem(problem)
        data = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})[0]
        dims = cp.reductions.solvers.conic_solvers.scs_conif.dims_to_solver_dict(data["dims"])
        return data["A"], data["b"], data["c"], dims

    out = {}
    for name, how in [("lp", "utils"), ("qp", "get_problem_data"), ("socp", "utils"),
                      ("exp", "get_problem_data"), ("psd", "utils"), ("mixed", "utils"),
                      ("logistic", "utils")]:
        rng = np.random.default_rng(0)
        A, b, c, cone_dict = scs_data(globals()[name](rng), how)
        x, y, s, D, DT = diffcp.solve_and_derivative(
            A, b, c, cone_dict, mode="dense", eps=1e-12, max_iters=200_000)
        dA = A.copy()
        dA.data = rng.standard_normal(A.nnz)
        dx, dy, ds = D(dA, rng.standard_normal(b.size), rng.standard_normal(c.size))
        gA, gb, gc = DT(*(rng.standard_normal(k) for k in (c.size, b.size, b.size)))
        out[name] = {"cones": {k: v for k, v in cone_dict.items()},
                     **{k: np.asarray(v).tolist() for k, v in dict(
                         x=x, y=y, s=s, dx=dx, dy=dy, ds=ds, gA=gA.toarray(), gb=gb,
                         gc=gc).items()}}
    print(json.dumps(out))
''')


def _run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs() -> tuple[dict, dict]:
    swapped = USER_SCRIPT.replace("import diffcp\n", "from pounce_cvxpy import diffcp\n")
    assert swapped != USER_SCRIPT
    return _run(USER_SCRIPT), _run(swapped)


# Measured with eps=1e-12 (tol 1e-12) after the core's solution refinement (without it the
# PSD and mixed solutions were 1.2e-8 / 1.0e-8 off, the logistic one 2e-5, whatever the tol);
# the SOC D and DT match since the backward takes the active-set derivative
# (pounce_kkt/active_set.py; before it they were 1.8e-6 / 6.6e-6 off).
CASES = [
    ("lp", "solution", ()), ("lp", "D", ()), ("lp", "DT", ()),
    ("qp", "solution", ()), ("qp", "D", ()), ("qp", "DT", ()),
    ("socp", "solution", ()), ("socp", "D", ()), ("socp", "DT", ()),
    ("exp", "solution", ()), ("exp", "D", ()), ("exp", "DT", ()),
    ("psd", "solution", ()), ("psd", "D", ()), ("psd", "DT", ()),
    ("mixed", "solution", ()), ("mixed", "D", ()), ("mixed", "DT", ()),
    ("logistic", "solution", ()), ("logistic", "D", ()), ("logistic", "DT", ()),
]
KEYS = {"solution": ("x", "y", "s"), "D": ("dx", "dy", "ds"), "DT": ("gA", "gb", "gc")}
TOL = {"solution": 1e-8, "D": 1e-6, "DT": 1e-6}


@pytest.mark.parametrize("program,what", [pytest.param(p, w, marks=m) for p, w, m in CASES])
def test_a_diffcp_script_on_cvxpy_data_matches_diffcp(runs, program, what):
    ref, ours = (r[program] for r in runs)
    assert "pnd" in ours["cones"], "cvxpy 1.9 writes 'pnd' into every SCS cone dict"
    for key in KEYS[what]:
        err = rel_err(ours[key], ref[key])
        assert err <= TOL[what], f"{program} {key}: relative error {err:.1e} > {TOL[what]:.0e}"


def _data(problem: cp.Problem):
    return real_diffcp.utils.scs_data_from_cvxpy_problem(problem)


def _program(name: str) -> cp.Problem:
    namespace: dict = {}
    exec(PROGRAMS, namespace)  # noqa: S102 - the test's own program text, shared with the script
    return namespace[name](np.random.default_rng(0))


def test_every_cone_dict_cvxpy_writes_is_accepted():
    """cvxpy's keys (pnd, empty lists, z) and SCS's (f, ed=0, bu/bl/cs empty) are read."""
    A, b, c, cd = _data(_program("exp"))
    assert cd["pnd"] == [] and "z" in cd
    x = pounce_diffcp.solve_only(A, b, c, cd)[0]
    scs_style = {k: v for k, v in cd.items() if k not in ("z", "pnd")}
    scs_style.update(f=cd["z"], ed=0, bu=[], bl=[], cs=[], p=[])
    x2 = pounce_diffcp.solve_only(A, b, c, scs_style)[0]
    assert np.array_equal(x, x2)  # the same data gives the same bits, whatever came before


@pytest.mark.parametrize("key,value,names", [
    ("pnd", [0.3, 0.7], "PowConeND"), ("bu", [1.0], "box"), ("cs", [2], "complex PSD"),
    ("typo", 3, "unknown cone keys"),
])
def test_a_cone_we_cannot_solve_is_named(key, value, names):
    A, b, c, cd = _data(_program("lp"))
    with pytest.raises(ValueError, match=names):
        pounce_diffcp.solve_only(A, b, c, dict(cd, **{key: value}))


def test_get_problem_data_with_P_matches_scs():
    """cvxpy's default SCS data keeps a quadratic objective as P: solve it with P."""
    data = _program("qp").get_problem_data(cp.SCS)[0]
    assert data.get("P") is not None
    cd = cp.reductions.solvers.conic_solvers.scs_conif.dims_to_solver_dict(data["dims"])
    A, b, c, P = data["A"], data["b"], data["c"], data["P"]
    ref = real_diffcp.solve_only(A.copy(), b, c, cd, P=P, eps=1e-12, max_iters=200_000)
    ours = pounce_diffcp.solve_only(A, b, c, cd, P=P, eps=1e-12)
    for u, v in zip(ours, ref, strict=True):
        assert rel_err(u, v) <= 1e-8


@pytest.fixture
def fresh_warnings():
    solver_args._warned.clear()
    yield
    solver_args._warned.clear()


def test_a_loose_scs_eps_keeps_the_accurate_default(fresh_warnings):
    """eps=1e-5 (a first-order setting) gives the same solve as no eps at all."""
    A, b, c, cd = _data(_program("exp"))
    with pytest.warns(UserWarning, match="'eps'"):
        loose = pounce_diffcp.solve_and_derivative(A, b, c, cd, eps=1e-5)
    default = pounce_diffcp.solve_and_derivative(A, b, c, cd)
    for u, v in zip(loose[:3], default[:3], strict=True):
        assert np.array_equal(u, v)
    ref = real_diffcp.solve_and_derivative(A.copy(), b, c, cd, mode="dense", eps=1e-12,
                                           max_iters=200_000)
    g = [np.ones(k) for k in (c.size, b.size, b.size)]
    assert rel_err(loose[4](*g)[2], ref[4](*g)[2]) <= 1e-6


def test_diffcp_keywords_give_one_warning_at_the_users_line(fresh_warnings):
    A, b, c, cd = _data(_program("lp"))
    kwargs = dict(eps=1e-9, max_iters=10_000, verbose=True, acceleration_lookback=0,
                  normalize=True, use_indirect=False, solve_method="SCS", mode="dense",
                  derivative_kwargs={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pounce_diffcp.solve_and_derivative(A, b, c, cd, **kwargs)
    ours = [w for w in caught if "options written for another solver" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    for key in ("eps", "max_iters", "verbose", "acceleration_lookback", "normalize",
                "use_indirect", "mode"):
        assert repr(key) in str(ours[0].message)
    assert "'solve_method'" not in str(ours[0].message), "diffcp's default SCS is not news"
    assert ours[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same keys a second time: silent
        pounce_diffcp.solve_only(A, b, c, cd, eps=1e-9, max_iters=10_000)


def test_clarabel_and_ecos_tolerances_cap_the_tol(fresh_warnings):
    """diffcp passes Clarabel's and ECOS's keywords on: their tolerances cap ours."""
    A, b, c, cd = _data(_program("socp"))
    with pytest.warns(UserWarning, match="tol_gap_abs"):
        ours = pounce_diffcp.solve_only(A, b, c, cd, solve_method="Clarabel", tol_gap_abs=1e-13,
                                        tol_gap_rel=1e-13, tol_feas=1e-13, tol_ktratio=1e-13)
    tight = pounce_diffcp.solve_only(A, b, c, cd, tol=1e-13)
    for u, v in zip(ours, tight, strict=True):
        assert np.array_equal(u, v)
    with pytest.warns(UserWarning, match="feastol"):
        pounce_diffcp.solve_only(A, b, c, cd, solve_method="ECOS", feastol=1e-10, abstol=1e-10,
                                 reltol=1e-10)


def test_a_layer_warning_points_past_cvxpylayers_and_torch(fresh_warnings):
    from cvxpylayers.torch import CvxpyLayer

    x, p = cp.Variable(2), cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x >= 0]),
                       parameters=[p], variables=[x], solver="pounce")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(torch.tensor([1.0, -1.0], dtype=torch.float64),
              solver_args={"eps": 1e-5, "acceleration_lookback": 0})
    ours = [w for w in caught if "options written for another solver" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__, [
        (w.filename, str(w.message)) for w in caught]


def test_sparse_dA_from_DT_keeps_cvxpys_pattern():
    A, b, c, cd = _data(_program("mixed"))
    *_, DT = pounce_diffcp.solve_and_derivative(A, b, c, cd)
    gA, _, _ = DT(np.ones(c.size), np.zeros(b.size), np.zeros(b.size))
    assert sp.issparse(gA) and gA.shape == A.shape and gA.nnz == sp.csc_matrix(A).nnz


def _dual_cone_data(A, b, cd):
    """The same program with every exp cone written as SCS's dual exponential cone ("ed")
    and every power cone as a dual power cone (negative alpha): s in K_ep iff T s in K_ed,
    row for row, so the solution is (x, T^-T y, T s)."""
    m = b.size
    T = np.eye(m)
    first = cd.get("z", 0) + cd.get("l", 0) + sum(cd.get("q", []))
    first += sum(k * (k + 1) // 2 for k in cd.get("s", []))
    for r in range(first, first + 3 * cd.get("ep", 0), 3):  # (x, y, z) -> (-y, -x, z / e)
        T[r:r + 3, r:r + 3] = [[0, -1, 0], [-1, 0, 0], [0, 0, 1 / np.e]]
    first += 3 * cd.get("ep", 0)
    for j, a in enumerate(cd.get("p", [])):  # (x, y, z) -> (a x, (1 - a) y, z)
        r = first + 3 * j
        T[r, r], T[r + 1, r + 1] = a, 1 - a
    dual = {k: v for k, v in cd.items() if k != "ep"}
    dual.update(ed=cd.get("ep", 0), p=[-a for a in cd.get("p", [])])
    return sp.csc_matrix(T @ A.toarray()), T @ b, dual, T


def test_dual_exponential_cones_match_diffcp():
    """'ed' rows are solved as exponential cones on mapped rows; diffcp/SCS solve and
    differentiate them natively."""
    A0, b0, c, cd0 = _data(_program("exp"))
    A, b, cd, T = _dual_cone_data(A0, b0, cd0)
    assert cd["ed"] > 0 and "ep" not in cd
    ref = real_diffcp.solve_and_derivative(A.copy(), b, c, cd, mode="dense", eps=1e-12,
                                           max_iters=200_000)
    ours = pounce_diffcp.solve_and_derivative(A, b, c, cd, eps=1e-12)
    for name, u, v in zip("xys", ours[:3], ref[:3], strict=True):
        assert rel_err(u, v) <= 1e-8, name
    primal = pounce_diffcp.solve_only(A0, b0, c, cd0, eps=1e-12)
    assert rel_err(ours[2], T @ primal[2]) <= 1e-8
    rng = np.random.default_rng(3)
    dA = A.copy()
    dA.data = rng.standard_normal(A.nnz)
    db, dc = rng.standard_normal(b.size), rng.standard_normal(c.size)
    for u, v in zip(ours[3](dA, db, dc), ref[3](dA, db, dc), strict=True):
        assert rel_err(u, v) <= 1e-6
    g = [rng.standard_normal(k) for k in (c.size, b.size, b.size)]
    (gA, gb, gc), (gA_r, gb_r, gc_r) = ours[4](*g), ref[4](*g)
    assert rel_err(gA.toarray(), gA_r.toarray()) <= 1e-6
    assert rel_err(gb, gb_r) <= 1e-6 and rel_err(gc, gc_r) <= 1e-6
    assert gA.nnz == A.nnz


def test_dual_power_cones_are_the_mapped_primal_program():
    """A negative alpha (SCS's dual power cone): the same solution, D and DT as the primal
    power-cone program it maps to (diffcp does not differentiate power cones)."""
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(-cp.sum(cp.log(x)) + x @ np.array([0.3, 0.5, 0.8])),
                         [cp.PowCone3D(x[0], x[1], x[2] - 0.1, 0.35), x <= 3])
    A0, b0, c, cd0 = _data(problem)
    assert cd0["p"]
    A, b, cd, T = _dual_cone_data(A0, b0, cd0)
    ours = pounce_diffcp.solve_and_derivative(A, b, c, cd)
    primal = pounce_diffcp.solve_and_derivative(A0, b0, c, cd0)
    T_inv_t = np.linalg.inv(T).T
    assert rel_err(ours[0], primal[0]) <= 1e-9
    assert rel_err(ours[1], T_inv_t @ primal[1]) <= 1e-9
    assert rel_err(ours[2], T @ primal[2]) <= 1e-9
    scs = real_diffcp.solve_only(A.copy(), b, c, cd, eps=1e-12, max_iters=200_000)
    assert rel_err(ours[0], scs[0]) <= 1e-7
    rng = np.random.default_rng(4)
    dA0 = A0.copy()
    dA0.data = rng.standard_normal(A0.nnz)
    db0, dc = rng.standard_normal(b0.size), rng.standard_normal(c.size)
    dA = sp.csc_matrix(T @ dA0.toarray())
    dx, dy, ds = ours[3](dA, T @ db0, dc)
    dx0, dy0, ds0 = primal[3](dA0, db0, dc)
    assert rel_err(dx, dx0) <= 1e-8 and rel_err(dy, T_inv_t @ dy0) <= 1e-8
    assert rel_err(ds, T @ ds0) <= 1e-8
    g = [rng.standard_normal(k) for k in (c.size, b.size, b.size)]
    gA, gb, gc = ours[4](*g)
    gA0, gb0, gc0 = primal[4](g[0], np.linalg.solve(T, g[1]), T.T @ g[2])
    assert rel_err(gA.toarray(), T_inv_t @ gA0.toarray()) <= 1e-8
    assert rel_err(gb, T_inv_t @ gb0) <= 1e-8 and rel_err(gc, gc0) <= 1e-8


def test_a_warm_start_in_the_users_rows_with_dual_cones():
    A0, b0, c, cd0 = _data(_program("exp"))
    A, b, cd, _ = _dual_cone_data(A0, b0, cd0)
    cold = pounce_diffcp.solve_only(A, b, c, cd, eps=1e-12)
    xs, _, _ = pounce_diffcp.solve_only_batch([A, A], [b, b], [c, c], [cd, cd], eps=1e-12,
                                              warm_starts=[cold, cold])
    for x in xs:
        assert rel_err(x, cold[0]) <= 1e-8
