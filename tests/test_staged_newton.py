"""Curved cones on a cold call (pounce_kkt/staged_newton.py): a short interior-point stage
finished by Newton steps, the full solve for the items the steps leave short.

References: closed forms (softmax(-c) and its Jacobian for the entropy problem; x = -r q/|q|
and its Jacobian for min q'x s.t. ||x|| <= r), the same structure with the stage off, and
Clarabel through cvxpy at 1e-11.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

import pounce_kkt as pk
from pounce_kkt import staged_newton
from pounce_kkt.refine import NATIVE_STEPS_ENV, REFINE_STEPS
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import suite_batch
from testing_helpers.reference_solvers import check_against_clarabel

IPM = pk.SolveOptions(engine="ipm")
MIN_WORK = staged_newton.STAGE_MIN_WORK


MIN_SEEDED = staged_newton.SEED_MIN_BATCH


@pytest.fixture(autouse=True)
def _stage_small_batches(monkeypatch):
    """The route's tests use small batches: the batch-size gates down (their own tests
    below)."""
    monkeypatch.setattr(staged_newton, "STAGE_MIN_WORK", 0)
    monkeypatch.setattr(staged_newton, "SEED_MIN_BATCH", 16)


def _entropy_structure(k: int) -> pk.ConicStructure:
    """min c'x - sum(entr(x)) s.t. sum(x) = 1 over v = (x, t): row 0 the equality, then per
    i the exp block s = (t_i, x_i, 1) = b - A v (t_i <= entr(x_i))."""
    indptr, indices = [0], []
    for i in range(k):
        indices += [0, 2 + 3 * i]
        indptr.append(len(indices))
    for i in range(k):
        indices.append(1 + 3 * i)
        indptr.append(len(indices))
    return pk.ConicStructure(2 * k, 1 + 3 * k, np.array(indptr), np.array(indices),
                             {"z": 1, "ep": k})


def _entropy_values(c: np.ndarray):
    B, k = c.shape
    A = np.tile(np.array([1.0, -1.0] * k + [-1.0] * k), (B, 1))
    b = np.zeros((B, 1 + 3 * k))
    b[:, 0] = 1.0
    b[:, 3::3] = 1.0
    q = np.concatenate([c, -np.ones((B, k))], axis=1)
    return None, torch.tensor(q), torch.tensor(A), torch.tensor(b)


def test_entropy_items_through_the_stage_match_the_closed_form_and_its_jacobian():
    rng = np.random.default_rng(0)
    B, k = 4, 12
    st = _entropy_structure(k)
    c = rng.standard_normal((B, k))
    P, q, A, b = _entropy_values(c)
    q.requires_grad_(True)
    sol = pk.conic_solve(st, P, q, A, b, IPM)
    assert sol.status == ["optimal"] * B
    # The stage answered: it kept its length and each item spent at most its iterations and
    # refinement's step budget.
    assert staged_newton.stage_iterations(st) == staged_newton.STAGE_ITERATIONS
    assert int(sol.iterations.max()) <= staged_newton.STAGE_ITERATIONS + REFINE_STEPS
    p = np.exp(-c) / np.exp(-c).sum(1, keepdims=True)
    np.testing.assert_allclose(sol.x[:, :k].detach().numpy(), p, atol=1e-9)
    w = rng.standard_normal((B, k))
    (sol.x[:, :k] * torch.tensor(w)).sum().backward()
    # d softmax(-c) / dc = -(diag(p) - p p').
    want = -(p * w - p * (p * w).sum(1, keepdims=True))
    # Within the ~1e-7 the backward's H floor leaves on exp cones (docs/design.md).
    np.testing.assert_allclose(q.grad[:, :k].numpy(), want, atol=1e-6)
    # The same items with the stage off: the same x and gradient.
    off = _entropy_structure(k)
    staged_newton.set_stage_iterations(off, 0)
    P, q_off, A, b = _entropy_values(c)
    q_off.requires_grad_(True)
    full = pk.conic_solve(off, P, q_off, A, b, IPM)
    (full.x[:, :k] * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(sol.x.detach().numpy(), full.x.detach().numpy(), atol=1e-9)
    np.testing.assert_allclose(q.grad.numpy(), q_off.grad.numpy(), atol=1e-8)
    # The stage answered: 2 IPM iterations and the Newton steps, fewer than the full IPM's.
    assert int(sol.iterations.sum()) < int(full.iterations.sum())


def test_small_batches_of_small_problems_skip_the_stage_with_python_steps(monkeypatch):
    """STAGE_MIN_WORK holds where the Newton steps run in Python; with native steps (the
    default for exp cones) every batch size is staged."""
    monkeypatch.setattr(staged_newton, "STAGE_MIN_WORK", MIN_WORK)
    k = 12
    st = _entropy_structure(k)  # n + m = 61
    small = np.random.default_rng(4).standard_normal((MIN_WORK // 61, k))
    assert staged_newton.applies(st, IPM, (None, None, None), 1)
    monkeypatch.setenv(NATIVE_STEPS_ENV, "off")
    assert not staged_newton.applies(st, IPM, (None, None, None), small.shape[0])
    assert staged_newton.applies(st, IPM, (None, None, None), small.shape[0] + 1)
    off = _entropy_structure(k)
    staged_newton.set_stage_iterations(off, 0)
    a = pk.conic_solve(st, *_entropy_values(small), IPM)
    b = pk.conic_solve(off, *_entropy_values(small), IPM)
    assert torch.equal(a.x, b.x) and torch.equal(a.iterations, b.iterations)


def _ball_structure(n: int) -> pk.ConicStructure:
    """min q'x s.t. ||x|| <= r in SCS form: s = b - A x = (r, x), A = [0; -I], b = (r, 0)."""
    return pk.ConicStructure(n, n + 1, np.arange(n + 1), np.arange(1, n + 1), {"q": [n + 1]})


def test_ball_items_through_the_stage_match_the_closed_form_and_its_jacobian():
    rng = np.random.default_rng(1)
    B, n = 5, 6
    st = _ball_structure(n)
    qv = rng.standard_normal((B, n))
    r = rng.uniform(0.5, 3.0, B)
    b = np.zeros((B, n + 1))
    b[:, 0] = r
    q, bt = torch.tensor(qv, requires_grad=True), torch.tensor(b, requires_grad=True)
    sol = pk.conic_solve(st, None, q, torch.tensor(-np.ones((B, n))), bt, IPM)
    assert sol.status == ["optimal"] * B
    assert staged_newton.stage_iterations(st) == staged_newton.STAGE_ITERATIONS
    u = qv / np.linalg.norm(qv, axis=1, keepdims=True)
    np.testing.assert_allclose(sol.x.detach().numpy(), -r[:, None] * u, atol=1e-10)
    w = rng.standard_normal((B, n))
    (sol.x * torch.tensor(w)).sum().backward()
    # x = -r u: dx/dq = -(r / |q|)(I - u u'), dx/dr = -u.
    qn = np.linalg.norm(qv, axis=1, keepdims=True)
    want_q = -(r[:, None] / qn) * (w - u * (u * w).sum(1, keepdims=True))
    np.testing.assert_allclose(q.grad.numpy(), want_q, atol=1e-7)
    np.testing.assert_allclose(bt.grad[:, 0].numpy(), -(u * w).sum(1), atol=1e-7)


def _logistic_batch(B: int):
    """bench_peers' l2 logistic regression (20 samples, 5 features) in SCS form: the
    structure, the P, q, A, b values of B random data matrices, and the cvxpy problem."""
    r = np.random.default_rng(5)
    labels = np.sign(r.standard_normal(20))
    w = cp.Variable(5)
    X = cp.Parameter((20, 5))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-cp.multiply(labels, X @ w))) / 20
                                  + 0.1 * cp.sum_squares(w)))
    vals = [r.standard_normal((20, 5)) for _ in range(B)]
    datas = []
    for v in vals:
        X.value = v
        data, _, inverse = prob.get_problem_data(cp.SCS)
        datas.append(data)
    # Where w sits in the canonical x: the last reduction's variable offsets.
    w_at = [i.var_offsets for i in inverse if hasattr(i, "var_offsets")][-1][w.id]

    def csc(M):
        M = sp.csc_matrix(M)
        M.sort_indices()
        return M

    def full(P):  # cvxpy hands SCS the upper triangle
        return csc(P + P.T - sp.diags(P.diagonal()))

    A0, P0 = csc(datas[0]["A"]), full(datas[0]["P"])
    cones = dims_to_solver_dict(datas[0]["dims"])
    st = pk.ConicStructure(A0.shape[1], A0.shape[0], A0.indptr, A0.indices,
                           {k: cones[k] for k in ("z", "l", "q", "ep")},
                           P0.indptr, P0.indices)
    Ps, As = [], []
    for d in datas:
        A, P = csc(d["A"]), full(d["P"])
        assert (A.indices == A0.indices).all() and (P.indices == P0.indices).all()
        As.append(A.data)
        Ps.append(P.data)
    values = tuple(torch.tensor(np.stack(t)) for t in
                   (Ps, [d["c"] for d in datas], As, [d["b"] for d in datas]))
    return st, values, prob, X, (w, w_at), vals


def test_items_a_one_iteration_stage_leaves_short_end_optimal_through_the_full_solve():
    B = 8
    st, values, prob, X, w, vals = _logistic_batch(B)
    staged_newton.set_stage_iterations(st, 1)
    sol = pk.conic_solve(st, *values, IPM)
    assert sol.status == ["optimal"] * B
    # One IPM iteration leaves most of these items beyond Newton's reach (measured: 21 of
    # 64 accepted): they went to the full solve, and the structure's stage doubled.
    assert staged_newton.stage_iterations(st) == 2
    off, values_off = _logistic_batch(B)[:2]
    staged_newton.set_stage_iterations(off, 0)
    ref = pk.conic_solve(off, *values_off, IPM)
    np.testing.assert_allclose(sol.x.numpy(), ref.x.numpy(), atol=1e-9)
    w, at = w
    for i in range(B):
        X.value = vals[i]
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11,
                   tol_feas=1e-11)
        assert prob.status == "optimal"
        np.testing.assert_allclose(sol.x[i, at:at + 5].numpy(), w.value, atol=1e-7)
    # The next call stages at the doubled length, and its answers are the same.
    again = pk.conic_solve(st, *values, IPM)
    assert again.status == ["optimal"] * B
    np.testing.assert_allclose(again.x.numpy(), ref.x.numpy(), atol=1e-9)


def _psd_projection(k: int, B: int, seed: int):
    """The projection onto the PSD cone as a cvxpy problem (min ||X - A||_F^2, X PSD) and
    B random symmetric k x k values of A: (problem, X, A, values)."""
    X = cp.Variable((k, k), PSD=True)
    Ap = cp.Parameter((k, k))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - Ap)))
    R = np.random.default_rng(seed).standard_normal((B, k, k))
    return prob, X, Ap, (R + R.transpose(0, 2, 1)) / 2


def _eigenvalue_clip(vals: np.ndarray) -> np.ndarray:
    """The closed-form projection of symmetric matrices onto the PSD cone: V max(lam, 0) V'."""
    lam, V = np.linalg.eigh(vals)
    return np.einsum("bij,bj,bkj->bik", V, np.maximum(lam, 0), V)


def test_psd_projections_through_the_stage_match_the_eigenvalue_clip(monkeypatch):
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401  (registers "pounce")
    from pounce_cvxpy import last_solve_info

    B = 3
    prob, X, Ap, vals = _psd_projection(4, B, seed=6)
    g = np.random.default_rng(7).standard_normal(vals.shape)

    def run():
        layer = CvxpyLayer(prob, [Ap], [X], solver="pounce")
        a = torch.tensor(vals, requires_grad=True)
        (x,) = layer(a, solver_args={"engine": "ipm"})
        (x * torch.tensor(g)).sum().backward()
        return x.detach().numpy(), a.grad.numpy(), last_solve_info(layer)

    x, grad, info = run()
    assert info.status == ["optimal"] * B
    np.testing.assert_allclose(x, _eigenvalue_clip(vals), atol=1e-9)
    monkeypatch.setenv(staged_newton.STAGE_ENV, "off")
    x_off, grad_off, info_off = run()
    # The stage answered (fewer iterations than the full solve's), with its x and gradient.
    assert int(info.iterations.sum()) < int(info_off.iterations.sum())
    np.testing.assert_allclose(x, x_off, atol=1e-9)
    np.testing.assert_allclose(grad, grad_off, atol=1e-8)


@pytest.mark.parametrize("batch", [8, 24])  # 24: seeded size (per-item P: through the stage)
@pytest.mark.parametrize("family", ["socp", "exp", "power", "psd", "mixed_soc_exp_pow"])
def test_suite_families_through_the_stage_match_the_full_solve(family, batch):
    bt = suite_batch(family, batch=batch, seed=1)

    def run(length):
        st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                               bt.p_indptr, bt.p_indices)
        staged_newton.set_stage_iterations(st, length)
        vals = [None if a is None else torch.tensor(a, requires_grad=True)
                for a in (bt.p_values, bt.q, bt.a_values, bt.b)]
        sol = pk.conic_solve(st, *vals, IPM)
        g = np.random.default_rng(3)
        (sol.x * torch.tensor(g.standard_normal(sol.x.shape))).sum().backward()
        grads = [v.grad.numpy() for v in vals if v is not None]
        return sol, grads

    on, g_on = run(staged_newton.STAGE_ITERATIONS)
    off, g_off = run(0)
    assert on.status == off.status == ["optimal"] * batch
    np.testing.assert_allclose(on.x.detach().numpy(), off.x.detach().numpy(), atol=1e-8)
    for a, b in zip(g_on, g_off, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6 * max(1.0, np.abs(b).max()))


def test_the_stage_solves_a_psd_item_the_full_solve_leaves_at_its_iteration_limit():
    bt = suite_batch("psd", batch=8, seed=2)  # item 2: the full IPM stops at 200 iterations
    vals = [None if a is None else torch.tensor(a) for a in (bt.p_values, bt.q, bt.a_values,
                                                               bt.b)]

    def structure(length):
        st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                               bt.p_indptr, bt.p_indices)
        staged_newton.set_stage_iterations(st, length)
        return st

    nan = pk.SolveOptions(engine="ipm", on_failure="nan")
    assert pk.conic_solve(structure(0), *vals, nan).status[2] == "iteration_limit"
    sol = pk.conic_solve(structure(staged_newton.STAGE_ITERATIONS), *vals, IPM)
    assert sol.status == ["optimal"] * 8
    for i, prob in enumerate(bt.problems):
        assert rel_err(sol.x[i].numpy(), prob.x_star) < 1e-7
        assert check_against_clarabel(sol.x[i].numpy(), prob, 1e-7) or i != 2


def _seed_counts(engine: list[str]) -> tuple[int, int]:
    """(items answered from a seed's answer, items through the stage)."""
    return engine.count(staged_newton.SEED_ENGINE), engine.count("ipm")


def test_entropy_items_from_the_seeds_answers_match_the_closed_form_and_its_jacobian(
        monkeypatch):
    rng = np.random.default_rng(10)
    B, k = 32, 12
    c = rng.standard_normal((B, k))
    w = rng.standard_normal((B, k))

    def run(seeds):
        monkeypatch.setenv(staged_newton.SEEDS_ENV, str(seeds))
        st = _entropy_structure(k)
        P, q, A, b = _entropy_values(c)
        q.requires_grad_(True)
        sol = pk.conic_solve(st, P, q, A, b, IPM)
        (sol.x[:, :k] * torch.tensor(w)).sum().backward()
        return sol, q.grad.numpy()

    sol, grad = run(staged_newton.SEEDS)
    assert sol.status == ["optimal"] * B
    # Unrelated items (iid c) all answered from the seeds' answers: the seeds through the
    # stage, every other item by at most refinement's step budget.
    assert _seed_counts(sol.engine) == (B - staged_newton.SEEDS, staged_newton.SEEDS)
    seeded = np.array([e == staged_newton.SEED_ENGINE for e in sol.engine])
    assert int(sol.iterations[torch.from_numpy(seeded)].max()) <= REFINE_STEPS
    p = np.exp(-c) / np.exp(-c).sum(1, keepdims=True)
    np.testing.assert_allclose(sol.x[:, :k].detach().numpy(), p, atol=1e-9)
    want = -(p * w - p * (p * w).sum(1, keepdims=True))
    np.testing.assert_allclose(grad[:, :k], want, atol=1e-6)
    # Without seeds every item goes through the stage: the same x and gradient.
    staged, grad_staged = run(0)
    assert _seed_counts(staged.engine) == (0, B)
    np.testing.assert_allclose(sol.x.detach().numpy(), staged.x.detach().numpy(), atol=1e-9)
    np.testing.assert_allclose(grad, grad_staged, atol=1e-8)


def test_psd_projections_from_the_seeds_answers_match_the_eigenvalue_clip():
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401  (registers "pounce")
    from pounce_cvxpy import last_solve_info

    B = 24
    prob, X, Ap, vals = _psd_projection(4, B, seed=11)
    layer = CvxpyLayer(prob, [Ap], [X], solver="pounce")
    (x,) = layer(torch.tensor(vals), solver_args={"engine": "ipm"})
    info = last_solve_info(layer)
    assert info.status == ["optimal"] * B
    assert _seed_counts(info.engine) == (B - staged_newton.SEEDS, staged_newton.SEEDS)
    np.testing.assert_allclose(x.numpy(), _eigenvalue_clip(vals), atol=1e-9)


def test_soc_only_items_are_not_seeded():
    rng = np.random.default_rng(12)
    B, n = 24, 6
    b = np.zeros((B, n + 1))
    b[:, 0] = rng.uniform(0.5, 3.0, B)
    qv = rng.standard_normal((B, n))
    sol = pk.conic_solve(_ball_structure(n), None, torch.tensor(qv),
                         torch.tensor(-np.ones((B, n))), torch.tensor(b), IPM)
    assert _seed_counts(sol.engine) == (0, B)
    want = -b[:, :1] * qv / np.linalg.norm(qv, axis=1, keepdims=True)
    np.testing.assert_allclose(sol.x.numpy(), want, atol=1e-9)


def _entropy_ridge_structure(k: int) -> pk.ConicStructure:
    """The entropy problem plus 1/2 sum_i p_i x_i^2 (P diagonal on x)."""
    e = _entropy_structure(k)
    indptr = np.concatenate([np.arange(k + 1), np.full(k, k)])
    return pk.ConicStructure(2 * k, 1 + 3 * k, e.a_indptr, e.a_indices, {"z": 1, "ep": k},
                             indptr, np.arange(k))


def test_batches_with_per_item_p_go_through_the_stage_and_a_shared_p_is_seeded():
    rng = np.random.default_rng(13)
    B, k = 24, 8
    c = rng.standard_normal((B, k))
    _, q, A, b = _entropy_values(c)
    p_rows = rng.uniform(0.5, 2.0, (B, k))  # a P per item: the stage certifies each

    def solve(st, p):
        return pk.conic_solve(st, torch.tensor(p), q, A, b, IPM)

    st = _entropy_ridge_structure(k)
    off = _entropy_ridge_structure(k)
    staged_newton.set_stage_iterations(off, 0)
    first = solve(st, p_rows)
    assert first.status == ["optimal"] * B and _seed_counts(first.engine) == (0, B)
    np.testing.assert_allclose(first.x.numpy(), solve(off, p_rows).x.numpy(), atol=1e-9)
    same = np.tile(p_rows[:1], (B, 1))
    seeded = solve(st, same)
    assert _seed_counts(seeded.engine) == (B - staged_newton.SEEDS, staged_newton.SEEDS)
    np.testing.assert_allclose(seeded.x.numpy(), solve(off, same).x.numpy(), atol=1e-9)


@pytest.mark.parametrize("bad", [5, None])  # one item's P, or the shared P
def test_a_nonconvex_p_names_the_callers_batch_index(bad):
    B, k = 24, 8
    _, q, A, b = _entropy_values(np.random.default_rng(15).standard_normal((B, k)))
    p = np.ones((B, k))
    if bad is None:
        p[:, 3] = -1.0
    else:
        p[bad, 3] = -1.0
    with pytest.raises(ValueError, match=f"at batch index {0 if bad is None else bad}"):
        pk.conic_solve(_entropy_ridge_structure(k), torch.tensor(p), q, A, b, IPM)


@pytest.mark.parametrize("on_failure", ["raise", "nan"])
def test_a_seed_the_full_solve_leaves_at_its_iteration_limit_goes_through_the_stage(
        on_failure):
    bt = suite_batch("psd", batch=8, seed=2)  # item 2: the full IPM stops at 200 iterations
    order = np.roll(np.arange(8), -2).tolist() * 3  # 24 items, that one first: a seed
    vals = [None if a is None else torch.tensor(a[order])
            for a in (bt.p_values, bt.q, bt.a_values, bt.b)]
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    nan = pk.SolveOptions(engine="ipm", on_failure="nan")
    assert staged_newton.SEEDS >= 1  # seed 0 is item 0, whose full solve stops short:
    off = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                            bt.p_indptr, bt.p_indices)
    staged_newton.set_stage_iterations(off, 0)
    first = [None if t is None else t[:1] for t in vals]
    assert pk.conic_solve(off, *first, nan).status == ["iteration_limit"]
    sol = pk.conic_solve(st, *vals, pk.SolveOptions(engine="ipm", on_failure=on_failure))
    assert sol.status == ["optimal"] * 24
    for i, j in enumerate(order):
        assert rel_err(sol.x[i].numpy(), bt.problems[j].x_star) < 1e-7


def test_batches_below_the_seed_gate_go_through_the_stage(monkeypatch):
    monkeypatch.setattr(staged_newton, "SEED_MIN_BATCH", MIN_SEEDED)
    c = np.random.default_rng(14).standard_normal((MIN_SEEDED, 12))
    below = pk.conic_solve(_entropy_structure(12), *_entropy_values(c[1:]), IPM)
    assert _seed_counts(below.engine) == (0, MIN_SEEDED - 1)
    at = pk.conic_solve(_entropy_structure(12), *_entropy_values(c), IPM)
    assert _seed_counts(at.engine) == (MIN_SEEDED - staged_newton.SEEDS, staged_newton.SEEDS)
    np.testing.assert_allclose(at.x[1:].numpy(), below.x.numpy(), atol=1e-9)
