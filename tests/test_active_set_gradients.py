"""Gradients at kinks and near-active constraints (the active-set backward, issue 12 point 3).

An interior-point adjoint smooths the derivative over a band ~sqrt(tol) around every kink;
the core takes it at the active set of ``w = s - y`` instead (pounce_kkt/active_set.py).
References: closed forms (torch.relu, torch.clamp, sparsemax's Jacobian), central
differences of tight (tol=1e-12) solves, and cvxpylayers' default layer (diffcp, eps=1e-12).
Every layer runs at the default tolerance. Errors: |a - b|_inf / max(1, |b|_inf).
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
import pounce_kkt as pk
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import near_degenerate_qp_batch
from testing_helpers.reference_solvers import sparsemax, sparsemax_jacobian_vjp

DT = torch.float64


def _grads(out, weights, params):
    return torch.autograd.grad((out * weights).sum(), params)


def _max_rel(got, want):
    return max(rel_err(g.detach().numpy(), w.detach().numpy()) for g, w in zip(got, want,
                                                                           strict=True))


def test_relu_layer_of_the_cvxpylayers_notebook():
    """cvxpylayers' "ReLU Layers" notebook: z = argmin |z - W~x - b|^2, z >= 0, W~ = W, at its
    starting weights 1e-3 randn (about 2% of pre-activations within 1e-4 of the kink). Before
    the active-set backward: 1.7e-1 off torch.relu's gradient (8e-2 at tol=1e-10)."""
    torch.manual_seed(0)
    d, B = 20, 60
    W = (1e-3 * torch.randn(d, d, dtype=DT)).requires_grad_()
    b = (1e-3 * torch.randn(d, dtype=DT)).requires_grad_()
    z, Wt = cp.Variable(d), cp.Variable((d, d))
    Wp, bp, xp = cp.Parameter((d, d)), cp.Parameter(d), cp.Parameter(d)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(z - Wt @ xp - bp)), [z >= 0, Wt == Wp])
    layer = CvxpyLayer(prob, [Wp, bp, xp], [z], solver="pounce")
    X = torch.randn(B, d, dtype=DT)
    near = ((X @ W.T + b).abs() < 1e-4).double().mean()
    assert near > 0.01, near
    G = torch.randn(B, d, dtype=DT)
    out = layer(W.repeat(B, 1, 1), b.repeat(B, 1), X)[0]
    exact = torch.relu(X @ W.T + b)
    assert _max_rel([out], [exact]) < 1e-8
    assert _max_rel(_grads(out, G, (W, b)), _grads(exact, G, (W, b))) < 1e-5


def test_clipping_layer_near_both_bounds():
    """x = argmin |x - z|^2 s.t. lo <= x <= hi with z within 1e-5 of the bounds: the
    gradient of torch.clamp."""
    rng = np.random.default_rng(1)
    n, B = 12, 16
    x, zp = cp.Variable(n), cp.Parameter(n)
    lo, hi = -0.5, 0.5
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - zp)), [x >= lo, x <= hi]),
                       [zp], [x], solver="pounce")
    z = rng.uniform(-1, 1, (B, n))
    side = rng.random((B, n)) < 0.3
    z[side] = np.where(rng.random(side.sum()) < 0.5, lo, hi) + rng.uniform(-1e-5, 1e-5,
                                                                            side.sum())
    z = torch.tensor(z).requires_grad_()
    G = torch.randn(B, n, dtype=DT)
    out = layer(z)[0]
    exact = torch.clamp(z, lo, hi)
    assert _max_rel([out], [exact]) < 1e-8
    assert _max_rel(_grads(out, G, (z,)), _grads(exact, G, (z,))) < 1e-6


def test_sparsemax_layer_matches_its_closed_form_and_diffcp():
    rng = np.random.default_rng(2)
    n, B = 10, 12
    x, zp = cp.Variable(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - zp)), [cp.sum(x) == 1, x >= 0])
    ours = CvxpyLayer(prob, [zp], [x], solver="pounce")
    theirs = CvxpyLayer(prob, [zp], [x])
    z = torch.tensor(0.3 * rng.standard_normal((B, n))).requires_grad_()
    G = torch.randn(B, n, dtype=DT)
    out = ours(z)[0]
    (g_ours,) = _grads(out, G, (z,))
    exact = sparsemax(z.detach())
    support = (exact > 0).sum(-1)
    assert (support >= 2).all() and (support < n).all(), support  # kinked: some zero, some not
    assert _max_rel([out], [exact]) < 1e-8
    assert rel_err(g_ours.numpy(), sparsemax_jacobian_vjp(exact, G).numpy()) < 1e-7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs(z, solver_args={"eps": 1e-12, "mode": "dense", "max_iters": 100_000})[0]
    (g_ref,) = _grads(ref, G, (z,))
    assert rel_err(g_ours.numpy(), g_ref.numpy()) < 1e-6


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_near_degenerate_qp_batch_matches_central_differences(backward):
    """A non-binding row with slack 3e-4..7e-4 (issue 12: 3e-3..7e-2 off before); central
    differences through tol=1e-12 solves, the gradient at the default tol."""
    bt = near_degenerate_qp_batch(batch=6)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [torch.tensor(v) for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    rng = np.random.default_rng(4)
    g = [torch.tensor(rng.standard_normal((6, k))) for k in (st.n, st.m, st.m)]
    _, state = pk.conic_forward(st, *vals, pk.SolveOptions(backward=backward))
    grads = pk.conic_vjp(state, *g)
    tight = pk.SolveOptions(tol=1e-12, max_iter=500)

    def loss(t, dirs):
        sol = pk.conic_solve(st, *[v + t * d for v, d in zip(vals, dirs, strict=True)], tight)
        return ((g[0] * sol.x).sum(1) + (g[1] * sol.y).sum(1) + (g[2] * sol.s).sum(1)).numpy()

    # The solution map is piecewise affine, so central differences are exact up to the tight
    # solves' own noise (an inactive row's y ~ 1e-10 at tol=1e-12, i.e. ~1e-10 / h) as long
    # as no row changes side: h = 1e-5 moves the 3e-4 slack by ~1e-5.
    h = 1e-5
    for _ in range(2):
        dirs = [torch.tensor(rng.standard_normal(v.shape)) for v in vals]
        dirs[0] *= 0.1  # keep P positive definite
        fd = (loss(h, dirs) - loss(-h, dirs)) / (2 * h)
        an = sum((gi * di).sum(1) for gi, di in zip(grads, dirs, strict=True)).numpy()
        err = np.abs(an - fd) / np.maximum(1.0, np.abs(fd))
        assert err.max() < 1e-4, err
