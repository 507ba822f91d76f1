"""PounceOptimizer against a tightly converged th.GaussNewton and central differences
through it: curve fit and an SE2 pose graph with an inconsistent loop closure, B=1 and 64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp, ProblemStructure, Request
from pounce_theseus.hessian import ExactHessian, GaussNewtonHessian, make_hessian
from testing_helpers.theseus_problems import (
    central_difference,
    curve_fit,
    pose_graph,
    solve_with,
    synthetic_pose_graph,
    tight_gauss_newton,
)

pytestmark = THESEUS_MARKS


def _loss_weights(sol: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape[1:], generator=g, dtype=v.dtype) for k, v in sol.items()}


def _per_element_loss(sol, weights) -> torch.Tensor:
    return sum((sol[k] * w).flatten(1).sum(1) for k, w in weights.items())


CASES = {
    # name: (builder, [(input key, index) to differentiate], finite-difference step)
    "curve_fit": (curve_fit, [("y", (0,)), ("y", (7,)), ("w", (3,))], 1e-3),
    # Gauss-Newton's own noise floor on the pose graph (~1e-10 in the loss) needs the
    # larger step; Richardson extrapolation keeps the truncation error O(h^4).
    "pose_graph": (pose_graph, [("loop", (0,)), ("odom_3", (1,)), ("loop_w", (0,))], 1e-2),
}



@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("case", list(CASES))
def test_solution_and_gradients_match_gauss_newton_and_finite_differences(case, batch_size):
    build, wrt, step = CASES[case]
    obj, inputs = build(batch_size)
    ref_obj, _ = build(batch_size)
    reference = tight_gauss_newton(ref_obj, max_iterations=30)
    with torch.no_grad():
        ref_sol, _ = solve_with(reference, inputs)

    leaves = {key: inputs[key].clone().requires_grad_(True) for key, _ in wrt}
    sol, info = solve_with(PounceOptimizer(obj, tol=1e-10), {**inputs, **leaves},
                           backward_mode="implicit")
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    for k in sol:
        assert torch.allclose(sol[k], ref_sol[k], atol=1e-6, rtol=0), k

    weights = _loss_weights(sol)
    grads = torch.autograd.grad(_per_element_loss(sol, weights).sum(), list(leaves.values()))
    grads = dict(zip(leaves, grads, strict=True))

    def ref_loss(inp):
        with torch.no_grad():
            s, _ = solve_with(reference, inp)
        return _per_element_loss(s, weights)

    for key, index in wrt:
        fd = central_difference(ref_loss, inputs, key, index, h=step)
        ours = grads[key][(slice(None), *index)]
        scale = fd.abs().max().clamp(min=1e-3)
        assert (ours - fd).abs().max() / scale < 1e-6, (key, index, ours[:4], fd[:4])


def test_theseus_implicit_mode_misses_second_order_terms():
    """Theseus' implicit mode (one Gauss-Newton step) is off on the inconsistent pose graph;
    the exact-Hessian implicit gradient is not (the reason PounceOptimizer exists)."""
    obj, inputs = pose_graph(4)
    ref_obj, _ = pose_graph(4)
    reference = tight_gauss_newton(ref_obj, max_iterations=30)
    w = inputs["loop_w"].clone().requires_grad_(True)
    sol, _ = solve_with(PounceOptimizer(obj, tol=1e-10), {**inputs, "loop_w": w})
    weights = _loss_weights(sol)
    (ours,) = torch.autograd.grad(_per_element_loss(sol, weights).sum(), w)
    w2 = inputs["loop_w"].clone().requires_grad_(True)
    th_sol, _ = solve_with(reference, {**inputs, "loop_w": w2}, backward_mode="implicit")
    (theirs,) = torch.autograd.grad(_per_element_loss(th_sol, weights).sum(), w2)

    def ref_loss(inp):
        with torch.no_grad():
            s, _ = solve_with(reference, inp)
        return _per_element_loss(s, weights)

    fd = central_difference(ref_loss, inputs, "loop_w", (0,), h=1e-2)
    assert (ours[:, 0] - fd).abs().max() < 1e-6 * fd.abs().max()
    assert (theirs[:, 0] - fd).abs().max() > 1e-3 * fd.abs().max()


def test_gradcheck_curve_fit():
    obj, inputs = curve_fit(2, n_points=6)
    opt = PounceOptimizer(obj, tol=1e-13)

    def fn(y, w):
        sol, _ = solve_with(opt, {**inputs, "y": y, "w": w})
        return sol["a"], sol["b"]

    y = inputs["y"].clone().requires_grad_(True)
    w = inputs["w"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (y, w), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["unroll", "truncated", "implicit"])
def test_backward_modes_give_the_implicit_gradient(mode):
    grads = {}
    for m in ("implicit", mode):
        obj, inputs = curve_fit(3)
        y = inputs["y"].clone().requires_grad_(True)
        kwargs = {"backward_mode": m}
        if m == "truncated":
            kwargs["backward_num_iterations"] = 5
        sol, _ = solve_with(PounceOptimizer(obj), {**inputs, "y": y}, **kwargs)
        (grads[m],) = torch.autograd.grad(sol["a"].sum() + sol["b"].sum(), y)
    assert torch.allclose(grads["implicit"], grads[mode], atol=1e-12)


def test_ignored_keys_warn_once():
    """LM's keys and a truncation length outside truncated mode warn once each; unroll
    itself is a mode of ours (tests/test_theseus_truncated_unroll.py), without a note.
    ``damping`` shapes the steps under unroll (tests/test_theseus_step_rule.py) and is
    ignored, with a note, under implicit."""
    obj, inputs = curve_fit(2)
    opt = PounceOptimizer(obj)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for mode in ("unroll", "unroll", "implicit", "implicit"):
            solve_with(opt, inputs, damping=1.0, adaptive_damping=True, backward_mode=mode,
                       backward_num_iterations=3)
    msgs = [str(r.message) for r in rec if "PounceOptimizer" in str(r.message)]
    assert sum("'damping'" in m for m in msgs) == 1
    assert any("'damping'" in m and "unroll or truncated" in m for m in msgs)
    assert sum("'adaptive_damping'" in m for m in msgs) == 1
    assert sum("'backward_num_iterations'" in m for m in msgs) == 1
    assert not any("implicit gradient" in m for m in msgs)


def test_dlm_mode_through_theseus_layer():
    obj, inputs = pose_graph(2, n_poses=8)
    y = inputs["loop"].clone().requires_grad_(True)
    sol, info = solve_with(PounceOptimizer(obj), {**inputs, "loop": y}, backward_mode="dlm")
    (g,) = torch.autograd.grad(sol["pose_3"][:, :2].sum(), y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_gauss_newton_hessian_gives_the_same_solution():
    obj, inputs = pose_graph(3)
    obj2, _ = pose_graph(3)
    with torch.no_grad():
        exact, _ = solve_with(PounceOptimizer(obj, tol=1e-10), inputs)
        gn, _ = solve_with(PounceOptimizer(obj2, tol=1e-10, hessian="gauss-newton"), inputs)
    for k in exact:
        assert torch.allclose(exact[k], gn[k], atol=1e-7)


def test_float32_objective():
    obj, _ = curve_fit(4, dtype=torch.float32)
    obj64, inputs64 = curve_fit(4)
    inputs = {k: v.float() for k, v in inputs64.items()}
    with torch.no_grad():
        sol, info = solve_with(PounceOptimizer(obj, tol=1e-6), inputs)
        ref, _ = solve_with(tight_gauss_newton(obj64), inputs64)
    assert sol["a"].dtype == torch.float32
    assert torch.allclose(sol["a"].double(), ref["a"], atol=1e-4)


def test_gauss_newton_hessian_keeps_the_exact_backward():
    grads = []
    for hessian in ("exact", "gauss-newton"):
        obj, inputs = pose_graph(2, n_poses=10)
        w = inputs["loop_w"].clone().requires_grad_(True)
        sol, _ = solve_with(PounceOptimizer(obj, tol=1e-12, hessian=hessian),
                            {**inputs, "loop_w": w})
        (g,) = torch.autograd.grad(_per_element_loss(sol, _loss_weights(sol)).sum(), w)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=1e-7, atol=1e-10)


def test_exact_hessian_forward_hybrid_rule():
    """hessian="exact" in an unconstrained forward solve: Gauss-Newton blocks at the first
    iterate, exact blocks once an element's objective stops falling by 20% per iterate,
    Gauss-Newton again for elements whose exact block is indefinite."""
    obj, inputs = curve_fit(3)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])

    def nlp(strategy):
        return BatchNlp(structure, strategy, [])

    def blocks(problem, x):
        # the Hessian callback of one solve covering the three elements
        (values,) = problem.serve([Request(np.arange(3), "hessian", x)])
        return structure.hess.dense(torch.as_tensor(values).view(3, -1))

    def dense(strategy, x):
        return blocks(nlp(strategy), x)

    hybrid = nlp(make_hessian("exact"))
    x0 = np.zeros(6)
    got = blocks(hybrid, x0)
    assert torch.allclose(got, dense(GaussNewtonHessian(), x0), rtol=1e-12, atol=0)

    def errors(delta):
        structure.chart.apply(delta)
        return obj.error()

    jac = torch.autograd.functional.jacobian(errors, structure.chart.zeros(3))  # (B,m,B,n)
    structure.chart.restore()
    jac = torch.stack([jac[b, :, b] for b in range(3)])
    assert torch.allclose(got, jac.transpose(1, 2) @ jac, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(got, dense(ExactHessian(), x0), rtol=1e-6, atol=0)

    x1 = x0 + 1e-9  # no progress: exact blocks (positive definite here)
    got = blocks(hybrid, x1)
    assert torch.allclose(got, dense(ExactHessian(), x1), rtol=1e-12, atol=0)

    x2 = np.array([3.0, -3.0, 0.5, 2.0, -1.0, 4.0])  # objective up; two indefinite blocks
    exact = dense(ExactHessian(), x2)
    indefinite = torch.linalg.eigvalsh(exact).min(dim=1).values < 0
    assert indefinite.tolist() == [False, True, True]
    got = blocks(hybrid, x2)
    want = torch.where(indefinite[:, None, None], dense(GaussNewtonHessian(), x2), exact)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("vectorize", [True, False])
def test_gauss_newton_blocks_from_seeded_jacobian_products(vectorize):
    """J'J assembled from the coloured products J v_s (GaussNewtonPattern) equals J'J of an
    explicit Jacobian, with Theseus' error rows grouped by schema (vectorised) or not."""
    obj, inputs = pose_graph(2, n_poses=6)
    if vectorize:
        th.Vectorize(obj)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    nlp = BatchNlp(structure, make_hessian("exact"), [])
    x = np.random.default_rng(0).normal(size=(2, structure.n)) * 0.1
    got = structure.hess.dense(
        GaussNewtonHessian().values(nlp.evaluate(x), nlp.layout(), 1.0, None).detach()
    )

    def errors(delta):
        structure.chart.apply(delta)
        return obj.error()

    delta = torch.as_tensor(x).view(2, -1)
    jac = torch.autograd.functional.jacobian(errors, delta)
    structure.chart.restore()
    jac = torch.stack([jac[b, :, b] for b in range(2)])
    want = jac.transpose(1, 2) @ jac
    mask = structure.hess.dense(torch.ones(2, structure.hess.nnz, dtype=torch.float64)) > 0
    assert structure.gauss_newton_pattern() is not None
    assert torch.allclose(got, torch.where(mask, want, 0.0), rtol=1e-10, atol=1e-10)
    assert torch.allclose(want, torch.where(mask, want, 0.0), rtol=0, atol=1e-12)


def test_vectorised_errors_and_exact_hessian_on_a_robust_se3_graph():
    """On a vectorised robust SE3 pose graph (Theseus' pose_graph_synthetic), the errors the
    solver evaluates (each schema's vectorised error, its pose slots gathered from the
    chart's stacked retraction) equal objective.error(), and the exact Hessian values equal
    the dense autograd Hessian of the error metric in the tangent chart."""
    obj, inputs, _, _ = synthetic_pose_graph(8, 2, dims=3)
    th.Vectorize(obj)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    nlp = BatchNlp(structure, ExactHessian(), [])
    x = np.random.default_rng(1).normal(size=(2, structure.n)) * 0.05
    ev = nlp.evaluate(x)
    with torch.no_grad():
        structure.chart.apply(torch.as_tensor(x))
        want_e = obj.error()
        structure.chart.restore()
    assert torch.allclose(ev.e.detach(), want_e, rtol=0, atol=1e-13)
    got = structure.hess.dense(nlp.hessian_values(ev, 1.0, None))

    def metric(delta):
        structure.chart.apply(delta)
        return obj.error_metric().sum()

    for b in range(2):
        def element(d, b=b):
            full = torch.as_tensor(x).clone()
            full = torch.cat([full[:b], d.unsqueeze(0), full[b + 1 :]])
            return metric(full)

        want = torch.autograd.functional.hessian(element, torch.as_tensor(x[b]))
        structure.chart.restore()
        assert torch.allclose(got[b], want, rtol=1e-9, atol=1e-9 * want.abs().max())
