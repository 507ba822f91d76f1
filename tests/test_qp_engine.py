"""The QP forward's engines (`SolveOptions.engine`, rust/core/src/options.rs, qp_sessions.rs
and kept_active_set.rs): POUNCE's active set agrees with the IPM, leaves refinement nothing
to do, gives the gradients of central differences through the existing KKT adjoint, starts
each batch item from its previous answer on the same structure (its active rows kept, or
its session warm; not across a fork), and reaches the native side through cvxpylayers'
`solver_args` and qpth's `QPFunction`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
import pounce_kkt as pk
from pounce_cvxpy import last_solve_info
from pounce_cvxpy.qpth import QPFunction
from pounce_kkt.refine import refine
from testing_helpers.conic_problems import random_problem_batch

CONES = {"z": 2, "l": 12}


def _batch(seed=1, batch=4, n=12):
    """QPs with 2 equality and 12 inequality rows, about half of them active: with n = 12
    at most n rows bind, so the dual is unique too (n = 8 gives items with 10 active rows,
    whose duals the two engines pick differently on the optimal face)."""
    return random_problem_batch(CONES, n, batch=batch, seed=seed)


def _structure(bt):
    return pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                             bt.p_indptr, bt.p_indices)


def _values(bt, eps=0.0, seed=0):
    """P, q, A, b of the batch, every entry but P's moved by eps times a standard normal."""
    rng = np.random.default_rng(seed)

    def moved(a):
        return torch.tensor(a + eps * rng.standard_normal(a.shape))

    return torch.tensor(bt.p_values), moved(bt.q), moved(bt.a_values), moved(bt.b)


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))


def test_active_set_equals_the_ipm_and_leaves_refinement_nothing_to_do():
    bt = _batch()
    vals = _values(bt)
    ipm = pk.conic_solve(_structure(bt), *vals, pk.SolveOptions(tol=1e-12, engine="ipm"))
    st = _structure(bt)
    act = pk.conic_solve(st, *vals, pk.SolveOptions(engine="active_set", refine=False))
    assert ipm.engine == ["ipm"] * bt.batch
    assert act.engine == ["active_set"] * bt.batch
    assert act.info.engine == act.engine
    for key in ("x", "y", "s"):
        assert _rel(getattr(act, key), getattr(ipm, key)) < 1e-9, key
    # Inactive nonneg rows have y = 0 exactly, and the fixtures have active ones too.
    y_nn = act.y[:, 2:]
    assert bool((y_nn == 0).any()) and bool((y_nn > 0).any())

    calls = []

    def solve(*args):
        calls.append(args)
        raise AssertionError("refinement stepped from an active-set point")

    P, q, A, b = vals
    ok = torch.ones(bt.batch, dtype=torch.bool)
    r = refine(st, P, q, A, b, act.x, act.y, act.s, ok, solve)
    assert not calls and int(r.steps.max()) == 0
    assert float(r.before.max()) < 1e-13, r.before


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_active_set_gradients_match_central_differences(backward):
    bt = _batch(seed=3, batch=2)
    st = _structure(bt)
    opts = pk.SolveOptions(engine="active_set", backward=backward)
    P, q, A, b = (t.clone().requires_grad_() for t in _values(bt))
    sol = pk.conic_solve(st, P, q, A, b, opts)
    assert sol.engine[0].startswith("active_set")
    rng = np.random.default_rng(5)
    w = [torch.tensor(rng.standard_normal(t.shape)) for t in (sol.x, sol.y, sol.s)]

    def loss(P, q, A, b):
        s = pk.conic_solve(st, P, q, A, b, opts)
        return sum((wi * t).sum() for wi, t in zip(w, (s.x, s.y, s.s), strict=True))

    loss(P, q, A, b).backward()
    h = 1e-6
    with torch.no_grad():
        for name, t in (("P", P), ("q", q), ("A", A), ("b", b)):
            for _ in range(6):
                d = torch.tensor(rng.standard_normal(t.shape))
                args = {"P": P, "q": q, "A": A, "b": b}
                plus = loss(**{**args, name: t + h * d})
                minus = loss(**{**args, name: t - h * d})
                fd = float((plus - minus) / (2 * h))
                an = float((t.grad * d).sum())
                assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd)), (name, fd, an)


def test_active_set_gradcheck():
    bt = _batch(seed=4, batch=1)
    st = _structure(bt)
    opts = pk.SolveOptions(engine="active_set")

    def f(P, q, A, b):
        sol = pk.conic_solve(st, P, q, A, b, opts)
        return sol.x, sol.y, sol.s

    ins = tuple(t.clone().requires_grad_() for t in _values(bt))
    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_first_call_steps_gradcheck():
    """Every evaluation on a new handle: `auto`'s active-set steps from no rows answer it
    (checked), and its gradients pass gradcheck (float64, central differences)."""
    bt = _batch(seed=5, batch=2)

    def f(P, q, A, b):
        sol = pk.conic_solve(_structure(bt), P, q, A, b)
        assert sol.engine == ["active_set_steps"] * 2
        return sol.x, sol.y, sol.s

    ins = tuple(t.clone().requires_grad_() for t in _values(bt))
    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_each_item_starts_from_its_previous_call():
    bt = _batch(seed=2, batch=5)
    st = _structure(bt)
    opts = pk.SolveOptions(engine="active_set")
    first = pk.conic_solve(st, *_values(bt), opts)
    assert first.engine == ["active_set"] * bt.batch
    for eps, engines in ((1e-3, {"active_set_kept"}),
                         (0.3, {"active_set_kept", "active_set_warm"})):
        vals = _values(bt, eps=eps, seed=10)
        warm = pk.conic_solve(st, *vals, opts)
        assert set(warm.engine) <= engines, warm.engine
        ipm = pk.conic_solve(_structure(bt), *vals, pk.SolveOptions(tol=1e-12, engine="ipm"))
        assert _rel(warm.x, ipm.x) < 1e-9 and _rel(warm.y, ipm.y) < 1e-9
    # The larger move changed some active sets (the kept rows' steps or the session moved
    # them; the rust tests hold the session's warm path).
    assert bool(((first.y > 1e-9) != (warm.y > 1e-9)).any())
    # Another structure (handle) has its own sessions.
    assert pk.conic_solve(_structure(bt), *_values(bt), opts).engine == ["active_set"] * 5


def test_auto_takes_the_active_set_for_items_that_moved_little():
    bt = _batch(seed=6, batch=3)
    st = _structure(bt)

    def engines(eps, seed):
        return pk.conic_solve(st, *_values(bt, eps, seed)).engine

    # A first call: active-set steps from no rows (kept_active_set.rs solve_cold), the IPM's
    # answer.
    assert engines(0.0, 0) == ["active_set_steps"] * 3
    first = pk.conic_solve(_structure(bt), *_values(bt), pk.SolveOptions(engine="ipm"))
    steps = pk.conic_solve(_structure(bt), *_values(bt))  # a new handle: no kept rows
    assert steps.engine == ["active_set_steps"] * 3
    assert _rel(steps.x, first.x) < 1e-7 and _rel(steps.y, first.y) < 1e-7
    assert engines(1e-4, 1) == ["active_set_kept"] * 3
    assert engines(1e-4, 2) == ["active_set_kept"] * 3
    # A 100% move: active-set steps from the kept rows (kept_active_set.rs solve_from) where
    # they reach an optimal set within their budget, the IPM elsewhere; the IPM's answer.
    far = engines(1.0, 3)
    assert set(far) <= {"ipm", "active_set_kept"}, far
    got = pk.conic_solve(_structure(bt), *_values(bt, 1.0, 3), pk.SolveOptions(engine="ipm"))
    again = pk.conic_solve(st, *_values(bt, 1.0, 3))
    assert _rel(again.x, got.x) < 1e-7 and _rel(again.y, got.y) < 1e-7
    # Conic problems run the IPM, then start from their kept answers (kept_newton.py).
    soc = random_problem_batch({"l": 3, "q": [4]}, 5, batch=2, seed=1)
    st_soc = _structure(soc)
    assert pk.conic_solve(st_soc, *_values(soc)).engine == ["ipm"] * 2
    assert pk.conic_solve(st_soc, *_values(soc)).engine == ["newton_kept"] * 2
    ipm = pk.SolveOptions(engine="ipm")
    assert pk.conic_solve(st_soc, *_values(soc), ipm).engine == ["ipm"] * 2


def _with_infeasible_item(bt, item=1):
    """The batch's values with item `item` made infeasible: its equality rows 0 and 1 get
    the same coefficients (an entry of one row with no partner in the other is zeroed) and
    ask a'x = 1 and a'x = -1 at once."""
    P, q, A, b = (t.clone() for t in _values(bt))
    cols = np.repeat(np.arange(bt.n), np.diff(bt.a_indptr))
    slot = {(int(r), int(c)): k for k, (r, c) in enumerate(zip(bt.a_indices, cols, strict=True))}
    shared = 0
    for c in range(bt.n):
        k0, k1 = slot.get((0, c)), slot.get((1, c))
        if k0 is not None and k1 is not None:
            A[item, k1] = A[item, k0]
            shared += 1
        elif k0 is not None or k1 is not None:
            A[item, k0 if k0 is not None else k1] = 0.0
    assert shared > 0
    b[item, 0], b[item, 1] = 1.0, -1.0
    return P, q, A, b


def test_an_infeasible_item_goes_to_the_ipm_and_is_certified():
    bt = _batch(seed=7, batch=3)
    st = _structure(bt)
    P, q, A, b = _with_infeasible_item(bt)
    act = pk.conic_solve(st, P, q, A, b, pk.SolveOptions(engine="active_set", on_failure="nan"))
    ipm = pk.conic_solve(_structure(bt), P, q, A, b,
                         pk.SolveOptions(engine="ipm", on_failure="nan"))
    assert act.status[1] == ipm.status[1] == "primal_infeasible"
    assert act.engine[1] == "ipm"
    assert act.engine[0] == act.engine[2] == "active_set"
    assert _rel(act.x[[0, 2]], ipm.x[[0, 2]]) < 1e-7


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_the_condensed_ipm_kkt_matches_the_full_dense_one(monkeypatch, backward):
    """The IPM's KKT condensed on its x block (rust/core/src/condensed_backend.rs: the
    default policy, and forced) gives the statuses, solutions and gradients of the full
    dense factor (POUNCE_LAYERS_KKT_BACKEND=dense), the infeasible item certified by each."""
    bt = _batch(seed=7, batch=3)
    vals = _with_infeasible_item(bt)
    opts = pk.SolveOptions(engine="ipm", on_failure="nan", backward=backward)
    out = {}
    for kkt in ("dense", "auto", "condensed"):
        monkeypatch.setenv("POUNCE_LAYERS_KKT_BACKEND", kkt)
        P, q, A, b = (t.clone().requires_grad_() for t in vals)
        sol = pk.conic_solve(_structure(bt), P, q, A, b, opts)
        w = torch.tensor(np.random.default_rng(4).standard_normal(sol.x.shape))
        (w * torch.nan_to_num(sol.x)).sum().backward()
        out[kkt] = (sol, [t.grad[[0, 2]] for t in (P, q, A, b)])
    ref, ref_g = out["dense"]
    assert list(ref.status) == ["optimal", "primal_infeasible", "optimal"]
    for kkt in ("auto", "condensed"):
        sol, g = out[kkt]
        assert list(sol.status) == list(ref.status), kkt
        for key in ("x", "y", "s"):
            got, want = (getattr(r, key).detach()[[0, 2]] for r in (sol, ref))
            assert _rel(got, want) < 1e-7, (kkt, key)
        for gi, ri in zip(g, ref_g, strict=True):
            assert _rel(gi, ri) < 1e-6, kkt


def test_engine_is_checked():
    with pytest.raises(ValueError, match="engine must be one of"):
        pk.SolveOptions(engine="simplex")
    bt = _batch()
    with pytest.raises(ValueError, match="`engine` must be"):
        bt.solve_native(engine="simplex")


def _qp_layer(n=6, m=8):
    x = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [G @ x <= h])
    rng = np.random.default_rng(0)
    B = 4
    Gv = rng.standard_normal((B, m, n))
    hv = rng.random((B, m))
    qv = 3 * rng.standard_normal((B, n))
    return prob, [q, G, h], x, [torch.tensor(v, requires_grad=True) for v in (qv, Gv, hv)]


@pytest.mark.parametrize("engine", ["active_set", "ipm"])
def test_the_engine_reaches_the_native_solve_through_solver_args(engine):
    prob, params, x, vals = _qp_layer()
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="pounce",
                       solver_args={"engine": engine})
    (sol,) = layer(*vals)
    info = last_solve_info(layer)
    assert info.engine == [engine] * 4
    ref = CvxpyLayer(prob, parameters=params, variables=[x], solver="pounce",
                     solver_args={"engine": "ipm", "tol": 1e-12})
    (xr,) = ref(*vals)
    assert _rel(sol.detach(), xr.detach()) < 1e-8
    # And per call, over the layer's own.
    layer(*vals, solver_args={"engine": "ipm"})
    assert last_solve_info(layer).engine == ["ipm"] * 4


def test_qpfunction_takes_the_engine_option():
    _, _, _, (qv, Gv, hv) = _qp_layer()
    Q = torch.eye(6, dtype=torch.float64)
    e = torch.empty(0, dtype=torch.float64)
    out = {}
    for engine in ("active_set", "ipm"):
        fn = QPFunction(options=pk.SolveOptions(engine=engine))
        q = qv.detach().clone().requires_grad_()
        out[engine] = (fn(Q, q, Gv.detach(), hv.detach(), e, e), q)
        out[engine][0].sum().backward()
    assert _rel(out["active_set"][0].detach(), out["ipm"][0].detach()) < 1e-7
    assert _rel(out["active_set"][1].grad, out["ipm"][1].grad) < 1e-6


def test_a_forked_child_does_not_reuse_the_parents_sessions(tmp_path):
    script = tmp_path / "fork_sessions.py"
    script.write_text(textwrap.dedent('''
        import os, signal, sys
        import numpy as np, torch
        import pounce_kkt as pk
        from testing_helpers.conic_problems import random_problem_batch
        signal.alarm(120)
        WARM = {"active_set_kept", "active_set_warm"}  # from the item's previous answer
        bt = random_problem_batch({"z": 2, "l": 12}, 8, batch=8, seed=1)
        st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                               bt.p_indptr, bt.p_indices)
        vals = [torch.tensor(a) for a in (bt.p_values, bt.q, bt.a_values, bt.b)]
        opts = pk.SolveOptions(engine="active_set")
        assert pk.conic_solve(st, *vals, opts).engine == ["active_set"] * 8
        moved = [vals[0]] + [v + 1e-4 for v in vals[1:]]
        pid = os.fork()
        if pid == 0:
            try:
                sol = pk.conic_solve(st, *moved, opts)
                assert sol.engine == ["active_set"] * 8, sol.engine
                again = pk.conic_solve(st, *vals, opts)
                assert set(again.engine) <= WARM, again.engine
                ref = pk.conic_solve(st, *vals, pk.SolveOptions(engine="ipm", tol=1e-12))
                assert float((again.x - ref.x).abs().max()) < 1e-8
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
            os._exit(0)
        _, code = os.waitpid(pid, 0)
        assert code == 0, code
        assert set(pk.conic_solve(st, *moved, opts).engine) <= WARM
        print("ALL OK")
    '''))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=180, cwd=root, env=env)
    assert out.returncode == 0 and "ALL OK" in out.stdout, out.stdout + out.stderr
