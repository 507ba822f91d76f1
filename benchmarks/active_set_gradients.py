"""Gradients of layers with kinks against their exact ones (the active-set backward).

    .venv/bin/python benchmarks/active_set_gradients.py

Prints, for CvxpyLayer(solver="pounce") at the default tol and cvxpylayers' default layer
(diffcp, eps=1e-12, mode="dense"), the max relative error |a - b|_inf / max(1, |b|_inf) of
the solution and of the gradient against closed forms: the "ReLU Layers" notebook layer at
its starting weights (torch.relu), a clipping layer with inputs within 1e-5 of the bounds
(torch.clamp) and a sparsemax layer (its closed-form Jacobian); then the near-degenerate QPs
of testing_helpers (a non-binding row with slack 3e-4..7e-4) through the core against
central differences (h = 1e-6) of tol=1e-12 solves.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pounce_cvxpy  # noqa: E402,F401  (registers "pounce")
import pounce_kkt as pk  # noqa: E402
from testing_helpers.conic_problems import near_degenerate_qp_batch  # noqa: E402
from testing_helpers.reference_solvers import sparsemax as sparsemax_closed_form  # noqa: E402

DT = torch.float64
DIFFCP = {"eps": 1e-12, "mode": "dense", "max_iters": 100_000}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def layer_errors(prob, params, var, inputs, exact_fn, G) -> dict:
    out = {}
    for name, kw, args in (("pounce", {"solver": "pounce"}, {}),
                           ("diffcp", {}, {"solver_args": DIFFCP})):
        layer = CvxpyLayer(prob, params, [var], **kw)
        ins = [t.clone().requires_grad_() for t in inputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = layer(*ins, **args)[0]
        grads = torch.autograd.grad((sol * G).sum(), ins)
        ref_in = [t.clone().requires_grad_() for t in inputs]
        ref = exact_fn(*ref_in)
        ref_grads = torch.autograd.grad((ref * G).sum(), ref_in)
        out[name] = (_rel(sol.detach(), ref.detach()),
                     max(_rel(a, b) for a, b in zip(grads, ref_grads, strict=True)))
    return out


def relu() -> dict:
    torch.manual_seed(0)
    d, B = 20, 60
    W, b = 1e-3 * torch.randn(d, d, dtype=DT), 1e-3 * torch.randn(d, dtype=DT)
    X = torch.randn(B, d, dtype=DT)
    z, Wt = cp.Variable(d), cp.Variable((d, d))
    Wp, bp, xp = cp.Parameter((d, d)), cp.Parameter(d), cp.Parameter(d)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(z - Wt @ xp - bp)), [z >= 0, Wt == Wp])
    return layer_errors(prob, [Wp, bp, xp], z, [W.repeat(B, 1, 1), b.repeat(B, 1), X],
                        lambda Wr, br, x: torch.relu((Wr @ x[:, :, None])[:, :, 0] + br),
                        torch.randn(B, d, dtype=DT))


def clip() -> dict:
    rng = np.random.default_rng(1)
    n, B = 12, 16
    x, zp = cp.Variable(n), cp.Parameter(n)
    z = rng.uniform(-1, 1, (B, n))
    side = rng.random((B, n)) < 0.3
    z[side] = np.where(rng.random(side.sum()) < 0.5, -0.5, 0.5) + rng.uniform(-1e-5, 1e-5,
                                                                              side.sum())
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - zp)), [x >= -0.5, x <= 0.5])
    return layer_errors(prob, [zp], x, [torch.tensor(z)], lambda t: torch.clamp(t, -0.5, 0.5),
                        torch.randn(B, n, dtype=DT))


def sparsemax() -> dict:
    rng = np.random.default_rng(2)
    n, B = 10, 12
    x, zp = cp.Variable(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - zp)), [cp.sum(x) == 1, x >= 0])
    return layer_errors(prob, [zp], x, [torch.tensor(0.3 * rng.standard_normal((B, n)))],
                        sparsemax_closed_form, torch.randn(B, n, dtype=DT))


def near_degenerate_qps(B: int = 16, h: float = 1e-6) -> float:
    bt = near_degenerate_qp_batch(batch=B)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [torch.tensor(v) for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    rng = np.random.default_rng(4)
    g = [torch.tensor(rng.standard_normal((B, k))) for k in (st.n, st.m, st.m)]
    _, state = pk.conic_forward(st, *vals)
    grads = pk.conic_vjp(state, *g)
    tight = pk.SolveOptions(tol=1e-12, max_iter=500)

    def loss(t, d):
        sol = pk.conic_solve(st, *[v + t * dv for v, dv in zip(vals, d, strict=True)], tight)
        return ((g[0] * sol.x).sum(1) + (g[1] * sol.y).sum(1) + (g[2] * sol.s).sum(1)).numpy()

    worst = 0.0
    for _ in range(3):
        d = [torch.tensor(rng.standard_normal(v.shape)) for v in vals]
        d[0] *= 0.1  # keep P positive definite
        fd = (loss(h, d) - loss(-h, d)) / (2 * h)
        an = sum((gi * di).sum(1) for gi, di in zip(grads, d, strict=True)).numpy()
        worst = max(worst, float((np.abs(an - fd) / np.maximum(1.0, np.abs(fd))).max()))
    return worst


def main() -> None:
    torch.set_num_threads(1)  # the box is shared: intra-op threads only add contention
    print(f"{'layer':10} {'solver':7} {'solution':>9} {'gradient':>9}")
    for name, fn in (("relu", relu), ("clip", clip), ("sparsemax", sparsemax)):
        for solver, (e_sol, e_grad) in fn().items():
            print(f"{name:10} {solver:7} {e_sol:9.1e} {e_grad:9.1e}")
    print(f"near-degenerate QPs (16 items, 3 directions): gradient vs central differences "
          f"{near_degenerate_qps():.1e}")


if __name__ == "__main__":
    main()
