"""Kept answers for curved-cone problems (pounce_kkt/kept_newton.py): a call after the first
starts each item from its previous answer and refines it by Newton on the new values.

References: the closed-form solution and derivative of min q'x s.t. ||x|| <= r; for a
cvxpylayers SOCP, the interior-point path of the same layer class (engine="ipm") and central
differences through it at tol 1e-12, and Clarabel through cvxpy.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
import pounce_kkt as pk
from pounce_cvxpy import last_solve_info
from pounce_kkt import kept_newton
from pounce_kkt.kept_newton import KEPT_ENGINE
from testing_helpers.conic_problems import random_problem_batch

N = 5


def _ball_structure(n: int = N) -> pk.ConicStructure:
    """min q'x s.t. ||x|| <= r in SCS form: s = b - A x = (r, x), A = [0; -I], b = (r, 0)."""
    indptr = np.arange(n + 1)
    indices = np.arange(1, n + 1)
    return pk.ConicStructure(n, n + 1, indptr, indices, {"q": [n + 1]})


def _ball_values(q: np.ndarray, r: np.ndarray):
    B, n = q.shape
    A = -np.ones((B, n))
    b = np.zeros((B, n + 1))
    b[:, 0] = r
    return None, torch.tensor(q), torch.tensor(A), torch.tensor(b)


def test_ball_items_answered_from_kept_answers_match_the_closed_form():
    rng = np.random.default_rng(0)
    B = 4
    st = _ball_structure()
    q0 = rng.standard_normal((B, N))
    r = np.array([1.0, 2.0, 0.5, 3.0])
    first = pk.conic_solve(st, *_ball_values(q0, r))
    assert first.engine == ["ipm"] * B
    for eps in (1e-3, 0.2):
        q = q0 * (1 + eps * rng.standard_normal(q0.shape))
        P, qt, A, b = _ball_values(q, r)
        qt.requires_grad_(True)
        b.requires_grad_(True)
        sol = pk.conic_solve(st, P, qt, A, b)
        assert sol.engine == [KEPT_ENGINE] * B
        assert sol.status == ["optimal"] * B
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        u = q / qn
        np.testing.assert_allclose(sol.x.detach().numpy(), -r[:, None] * u, atol=1e-12)
        w = torch.tensor(rng.standard_normal((B, N)))
        (sol.x * w).sum().backward()
        wn = w.numpy()
        # x = -r q/|q|: dx/dq = -r (I - u u')/|q|, dx/dr = -u. The backward's 1e-8 floor on
        # H's central-path parameter (docs/design.md) leaves ~1e-7 on either engine.
        gq = -r[:, None] * (wn - u * (u * wn).sum(1, keepdims=True)) / qn
        np.testing.assert_allclose(qt.grad.numpy(), gq, rtol=0, atol=3e-7)
        np.testing.assert_allclose(b.grad[:, 0].numpy(), -(u * wn).sum(1), rtol=0, atol=3e-7)


def test_a_kkt_solve_that_fails_sends_the_items_to_the_ipm():
    """refine's KKT solve raising RuntimeError (a K the backward's path cannot factor) during
    the kept answers' Newton steps: every item goes to the IPM, with the closed-form x."""
    from pounce_kkt.conic import _solve_native

    rng = np.random.default_rng(2)
    B = 3
    st = _ball_structure()
    q = rng.standard_normal((B, N))
    r = np.ones(B)
    pk.conic_solve(st, *_ball_values(q, r))
    P, qt, A, b = _ball_values(q * 1.01, r)
    v = {"P": P, "q": qt, "A": A, "b": b}

    def unfactorable(P, A):
        def solve(*args):
            raise RuntimeError("the KKT matrix could not be factored")
        return solve

    x, _, _, ok, status, _, _, engine = kept_newton.solve(
        st, pk.SolveOptions(), v, (None, None, None), _solve_native, unfactorable)
    assert engine == ["ipm"] * B and status == ["optimal"] * B and bool(ok.all())
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(x.numpy(), -u, atol=1e-8)


def test_a_failed_check_goes_to_the_ipm_and_errors_name_the_callers_item():
    rng = np.random.default_rng(1)
    B = 3
    st = _ball_structure()
    q = rng.standard_normal((B, N))
    r = np.ones(B)
    pk.conic_solve(st, *_ball_values(q, r))
    # Item 1 becomes infeasible (r < 0): its kept answer cannot be refined to optimality.
    bad = r.copy()
    bad[1] = -1.0
    nan = pk.SolveOptions(on_failure="nan")
    sol = pk.conic_solve(st, *_ball_values(q, bad), nan)
    assert sol.engine == [KEPT_ENGINE, "ipm", KEPT_ENGINE]
    assert sol.status[1] == "primal_infeasible" and sol.status[0] == sol.status[2] == "optimal"
    assert torch.isnan(sol.x[1]).all()
    x = sol.x.detach().numpy()
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(x[[0, 2]], -u[[0, 2]], atol=1e-12)
    pk.conic_solve(st, *_ball_values(q, r))
    with pytest.raises(pk.SolverError) as err:
        pk.conic_solve(st, *_ball_values(q, bad))
    assert err.value.batch_index == 1
    assert err.value.statuses[1] == "primal_infeasible"


def test_kept_answers_need_the_same_p_and_are_off_under_ipm_or_without_refinement():
    bt = random_problem_batch({"l": 3, "q": [4]}, 5, batch=2, seed=1)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = (torch.tensor(bt.p_values), torch.tensor(bt.q), torch.tensor(bt.a_values),
            torch.tensor(bt.b))
    first = pk.conic_solve(st, *vals)
    again = pk.conic_solve(st, *vals)
    assert again.engine == [KEPT_ENGINE] * 2
    assert torch.allclose(again.x, first.x, atol=1e-12, rtol=0)
    moved_p = (vals[0] * 1.01, *vals[1:])
    assert pk.conic_solve(st, *moved_p).engine == ["ipm"] * 2
    assert pk.conic_solve(st, *moved_p, pk.SolveOptions(engine="ipm")).engine == ["ipm"] * 2
    assert pk.conic_solve(st, *moved_p, pk.SolveOptions(refine=False)).engine == ["ipm"] * 2
    assert pk.conic_solve(st, *moved_p).engine == [KEPT_ENGINE] * 2


def _socp_layer(n: int, m: int):
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + c @ x), [cp.norm(x, 2) <= 1])
    return prob, [A, b, c], x


@pytest.mark.parametrize("move", [1e-3, 0.1])
def test_cvxpylayer_socp_kept_answers_match_clarabel_and_the_ipm_gradients(move):
    n = m = 6
    B = 5
    rng = np.random.default_rng(3)
    prob, params, var = _socp_layer(n, m)
    layer = CvxpyLayer(prob, params, [var], solver="pounce")
    ipm = CvxpyLayer(prob, params, [var], solver="pounce")
    v0 = [rng.standard_normal((B, m, n)), rng.standard_normal((B, m)),
          rng.standard_normal((B, n))]
    layer(*(torch.tensor(v) for v in v0))
    v1 = [v * (1 + move * rng.standard_normal(v.shape)) for v in v0]
    w = torch.tensor(rng.standard_normal((B, n)))

    def run(lay, vals, args):
        ps = [torch.tensor(v, requires_grad=True) for v in vals]
        (x,) = lay(*ps, solver_args=args)
        (x * w).sum().backward()
        return x.detach().numpy(), [p.grad.numpy() for p in ps]

    x, grads = run(layer, v1, {})
    assert last_solve_info(layer).engine == [KEPT_ENGINE] * B
    tight = {"engine": "ipm", "tol": 1e-12}
    x_ipm, g_ipm = run(ipm, v1, tight)
    np.testing.assert_allclose(x, x_ipm, atol=1e-10)
    for g, gi in zip(grads, g_ipm, strict=True):
        np.testing.assert_allclose(g, gi, atol=1e-7 * max(1.0, np.abs(gi).max()))
    # Clarabel: its x is off by up to 5e-5 on this family (a flat objective; at 1e-11 it
    # stalls, "inaccurate"), so the check is on the objective: ours feasible and no worse.
    for i in range(B):
        for p, v in zip(params, v1, strict=True):
            p.value = v[i]
        prob.solve(solver=cp.CLARABEL)
        assert prob.status == "optimal"
        A_i, b_i, c_i = (v[i] for v in v1)
        def obj(z, A_i=A_i, b_i=b_i, c_i=c_i):
            return np.linalg.norm(A_i @ z - b_i) + c_i @ z

        # Ours meets its residual within 1e-10 (kept_newton.STOP_FRACTION); Clarabel's x may
        # sit further outside the ball: both compared on their projections onto it.
        assert np.linalg.norm(x[i]) <= 1 + 1e-10
        xo = x[i] / max(1.0, np.linalg.norm(x[i]))
        xc = var.value / max(1.0, np.linalg.norm(var.value))
        assert obj(xo) <= obj(xc) + 1e-10
        np.testing.assert_allclose(x[i], var.value, rtol=0, atol=1e-3)
    # Central differences through the interior-point path along a random direction.
    d = [rng.standard_normal(v.shape) for v in v1]
    h = 1e-5

    def loss(t):
        with torch.no_grad():
            (xx,) = ipm(*(torch.tensor(v + t * dv) for v, dv in zip(v1, d, strict=True)),
                        solver_args=tight)
        return float((xx * w).sum())

    fd = (loss(h) - loss(-h)) / (2 * h)
    g_dot = sum(float((g * dv).sum()) for g, dv in zip(grads, d, strict=True))
    assert abs(g_dot - fd) <= 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("engine", ["auto", "active_set"])
def test_a_failed_check_backs_off_under_auto(engine, monkeypatch):
    # The move gate off, so that "auto" checks the far item (the gate is tested below).
    monkeypatch.setattr(kept_newton, "KEPT_MAX_MOVE", float("inf"))
    rng = np.random.default_rng(4)
    B = 3
    st = _ball_structure()
    opts = pk.SolveOptions(engine=engine)
    q = rng.standard_normal((B, N))
    r = np.ones(B)
    pk.conic_solve(st, *_ball_values(q, r), opts)
    # Item 1's optimum moves to the antipode: Newton from its kept answer does not get there.
    q[1] = -q[1]
    first = pk.conic_solve(st, *_ball_values(q, r), opts)
    assert first.engine == [KEPT_ENGINE, "ipm", KEPT_ENGINE]
    # Its kept answer is now the IPM's (it would pass): "auto" skips one call after a first
    # failure, "active_set" checks every call.
    again = pk.conic_solve(st, *_ball_values(q, r), opts)
    assert again.engine[1] == ("ipm" if engine == "auto" else KEPT_ENGINE)
    third = pk.conic_solve(st, *_ball_values(q, r), opts)
    assert third.engine == [KEPT_ENGINE] * B
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    for sol in (first, again, third):
        np.testing.assert_allclose(sol.x.detach().numpy(), -u, atol=1e-10)


def test_soc_items_that_moved_far_go_to_the_ipm_unchecked():
    rng = np.random.default_rng(5)
    B = 3
    st = _ball_structure()
    q = rng.standard_normal((B, N))
    r = np.ones(B)
    pk.conic_solve(st, *_ball_values(q, r))
    q[1] = -q[1]  # moved by ~1.3 of its values' size, above KEPT_MAX_MOVE
    assert pk.conic_solve(st, *_ball_values(q, r)).engine == [KEPT_ENGINE, "ipm", KEPT_ENGINE]
    # Not checked, so not backed off: the next call takes its (IPM) answer.
    again = pk.conic_solve(st, *_ball_values(q, r))
    assert again.engine == [KEPT_ENGINE] * B
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(again.x.detach().numpy(), -u, atol=1e-10)
