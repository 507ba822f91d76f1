"""The native Newton steps (ConicProblem.newton_steps; the core's newton_steps.rs and
cone_snap.rs) and the adjoint's native H against refine.py's own loop and
active_set.limit_scaling, which are their specification, on every cone.

References: refine.py's loop on the same points through the same sparse KKT solve (Python
projections and H, pounce_kkt/cones/), and the exact solution (x*, y*, s*) each
testing_helpers family is built around. Relative errors |a - b|_inf / max(1, |b|_inf).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pounce_kkt as pk
import pounce_kkt.refine as refine_mod
from pounce_kkt.conic import SolveOptions, _refine_kkt_solve
from pounce_kkt.refine import NATIVE_STEPS_ENV, refine
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import suite_batch

SPARSE = SolveOptions(backward="sparse")


def _setup(family, batch=3, seed=1):
    bt = suite_batch(family, batch=batch, seed=seed)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    P, q, A, b = (None if v is None else torch.tensor(v)
                  for v in (bt.p_values, bt.q, bt.a_values, bt.b))
    star = [torch.tensor(np.stack([getattr(p, k) for p in bt.problems]))
            for k in ("x_star", "y_star", "s_star")]
    return bt, st, (P, q, A, b), star


def _both(st, vals, x, y, s, ok, **kw):
    """refine through the native steps, and refine.py's loop on the same KKT solve."""
    P, q, A, b = vals
    solve = _refine_kkt_solve(st, SPARSE, P, A)
    assert solve.native_steps is not None
    native = refine(st, P, q, A, b, x, y, s, ok, solve, **kw)

    def python_solve(*args):  # the same solve without the native steps attached
        return solve(*args)

    return native, refine(st, P, q, A, b, x, y, s, ok, python_solve, **kw)


FAMILIES = ["socp", "exp", "psd", "power", "mixed_soc_exp_pow", "qp", "lp"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("noise", [1e-4, 1e-2])
def test_native_steps_take_refine_pys_steps(family, noise):
    """From the exact solution perturbed (x, y, s independently): the native steps keep the
    same number of steps per item as refine.py's loop, end on the same point to 1e-9 and
    at the exact solution; the item not ok comes back untouched with NaN residuals."""
    bt, st, vals, (x, y, s) = _setup(family)
    rng = np.random.default_rng(5)
    x, y, s = (t + noise * torch.tensor(rng.standard_normal(t.shape)) for t in (x, y, s))
    ok = torch.tensor([True, False, True])
    nat, py = _both(st, vals, x, y, s, ok)
    assert torch.equal(nat.steps, py.steps), (nat.steps, py.steps)
    assert (nat.steps[[0, 2]] >= 1).all() and nat.steps[1] == 0
    for a, b in ((nat.x, py.x), (nat.y, py.y), (nat.s, py.s)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(nat.before, py.before, rtol=1e-9, atol=1e-15, equal_nan=True)
    assert torch.isnan(nat.before[1]) and torch.isnan(nat.after[1])
    assert torch.equal(nat.x[1], x[1]) and torch.equal(nat.y[1], y[1])
    assert torch.equal(nat.s[1], s[1])
    for i in (0, 2):
        p = bt.problems[i]
        assert rel_err(nat.x[i], p.x_star) < 1e-9, rel_err(nat.x[i], p.x_star)
        assert rel_err(nat.y[i], p.y_star) < 1e-9
        assert nat.after[i] <= nat.before[i]
    # `after` is the residual of the returned point, as refine.py computes it.
    np.testing.assert_allclose(nat.after[[0, 2]].numpy(),
                               refine_mod.residual(st, *vals, nat.x, nat.y, nat.s)[[0, 2]],
                               rtol=1e-6, atol=1e-14)


def test_native_steps_honour_target_floor_and_budget():
    """A one-step budget stops every item after one step, as refine.py's loop does; a
    target above the start's residual takes no step."""
    _, st, vals, (x, y, s) = _setup("exp")
    rng = np.random.default_rng(2)
    x, y, s = (t + 1e-3 * torch.tensor(rng.standard_normal(t.shape)) for t in (x, y, s))
    ok = torch.ones(3, dtype=torch.bool)
    nat, py = _both(st, vals, x, y, s, ok, max_steps=1)
    assert (nat.steps == 1).all() and torch.equal(nat.steps, py.steps)
    torch.testing.assert_close(nat.x, py.x, rtol=0, atol=1e-12)
    nat, py = _both(st, vals, x, y, s, ok, target=1.0, floor=1.0)
    assert (nat.steps == 0).all() and torch.equal(nat.steps, py.steps)


def test_newton_steps_names_a_bad_argument():
    _, st, (P, q, A, b), (x, y, s) = _setup("exp")
    args = [P, A, q, b, x, y, s]
    arrays = [None if t is None else t.numpy().copy() for t in args]
    ok = np.ones(3, dtype=bool)
    with pytest.raises(ValueError, match=r"`x` has shape"):
        bad = list(arrays)
        bad[4] = bad[4][:, :-1].copy()
        st.native.newton_steps(*bad, ok, target=1e-14, floor=1e-15, max_steps=8)
    bad = list(arrays)
    bad[5] = bad[5].copy()
    bad[5][2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`y` contains a non-finite value .* at \[2, 1\]"):
        st.native.newton_steps(*bad, ok, target=1e-14, floor=1e-15, max_steps=8)
    # ...but a non-finite row of an item not ok is no error: that item is handed back.
    out = st.native.newton_steps(*bad, np.array([True, True, False]), target=1e-14,
                                 floor=1e-15, max_steps=8)
    assert np.isnan(out["y"][2, 1]) and not out["failed"].any()


@pytest.mark.parametrize("name", ["exp", "socp", "psd", "power"])
def test_layer_answers_and_gradients_equal_with_and_without_native_steps(name, monkeypatch):
    """Through CvxpyLayer on new data every call (the kept-answer Newton path and the
    stage's): the native steps run (spied, not replaced) and the answers and gradients
    equal those of refine.py's loop."""
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401  (registers "pounce")
    from testing_helpers.cvxpy_problems import ALL_CONES

    case = ALL_CONES[name]()
    calls = []
    real = refine_mod._native_refine

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(refine_mod, "_native_refine", spy)

    def run(env):
        monkeypatch.setenv(NATIVE_STEPS_ENV, env)
        layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="pounce")
        out = []
        for call in range(3):  # a batch of 8 new items per call
            draws = [case.values(10 * call + k) for k in range(8)]
            params = [torch.tensor(np.stack(v), dtype=torch.float64).requires_grad_()
                      for v in zip(*draws, strict=True)]
            sol = layer(*params)
            sum(x.sum() for x in sol).backward()
            out.append((torch.cat([x.detach().reshape(-1) for x in sol]),
                        torch.cat([p.grad.reshape(-1) for p in params])))
        return out

    native = run("on")
    assert calls
    del calls[:]
    python = run("off")
    assert not calls
    for (xn, gn), (xp, gp) in zip(native, python, strict=True):
        torch.testing.assert_close(xn, xp, rtol=0, atol=1e-8)
        torch.testing.assert_close(gn, gp, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("qp", "lp")])
def test_native_h_at_the_snap_equals_limit_scaling(family):
    """The adjoint with H computed natively at the snapped pairs of (s, y) (h_diag =
    h_blocks = None, s given) equals the adjoint with active_set.limit_scaling's H, from
    points 1e-3 off the solution (so the snap moves them)."""
    from pounce_kkt.active_set import limit_scaling

    _, st, (P, q, A, b), (x, y, s) = _setup(family)
    rng = np.random.default_rng(9)
    x, y, s = (t + 1e-3 * torch.tensor(rng.standard_normal(t.shape)) for t in (x, y, s))
    g = [rng.standard_normal(t.shape) for t in (x, y, s)]
    ok = np.array([True, True, False])
    arr = [None if t is None else t.numpy() for t in (P, A)]
    hd, hb = limit_scaling(s, y, st.cones)
    given = st.native.adjoint(*arr, hd.numpy(), hb.numpy(), x.numpy(), y.numpy(), *g, ok)
    native = st.native.adjoint(*arr, None, None, x.numpy(), y.numpy(), *g, ok, s=s.numpy())
    assert native["solved"] == given["solved"] == [True, True, False]
    # A power block's H divides by psi1 = x^a y^(1-a) - |z| ~ 1e-8 (the push inside the
    # cone): the two implementations' rounding of x^a y^(1-a) (1e-16) moves H by 1e-8
    # relative there, as it would move either one's.
    tol = 1e-7 if "p" in bt_cones(st) else 1e-9
    for k in ("dq", "dA", "db"):
        scale = max(1.0, np.abs(given[k]).max())
        np.testing.assert_allclose(native[k], given[k], rtol=0, atol=tol * scale)
    assert np.abs(given["db"][:2]).max() > 1e-3  # not a trivial comparison


def bt_cones(st) -> set[str]:
    """The cone kinds present in a structure."""
    c = st.cones
    return {k for k, v in (("q", c.q), ("s", c.s), ("ep", c.ep), ("p", c.p)) if v}


def test_native_h_takes_one_form():
    _, st, (P, q, A, b), (x, y, s) = _setup("exp")
    z = [np.zeros(t.shape) for t in (x, y, s)]
    with pytest.raises(ValueError, match="either `h_diag` and `h_blocks`, or `s`"):
        st.native.adjoint(None if P is None else P.numpy(), A.numpy(), None, None, x.numpy(),
                          y.numpy(), *z, np.ones(3, dtype=bool))


def test_an_item_that_fails_natively_comes_back_as_given(monkeypatch):
    """An item whose native steps fail (a panic, through the test hook) is handed back as
    given with NaN residuals; the other items are refined to the exact solution."""
    bt, st, vals, (x, y, s) = _setup("exp")
    rng = np.random.default_rng(3)
    x, y, s = (t + 1e-4 * torch.tensor(rng.standard_normal(t.shape)) for t in (x, y, s))
    P, q, A, b = vals
    solve = _refine_kkt_solve(st, SPARSE, P, A)
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "item:1")
    r = refine(st, P, q, A, b, x, y, s, torch.ones(3, dtype=torch.bool), solve)
    assert torch.equal(r.x[1], x[1]) and torch.equal(r.y[1], y[1]) and torch.equal(r.s[1], s[1])
    assert torch.isnan(r.after[1]) and r.steps[1] == 0
    for i in (0, 2):
        assert r.steps[i] >= 1 and rel_err(r.x[i], bt.problems[i].x_star) < 1e-9
