"""CvxpyLayer(..., solver="pounce") against cvxpy + Clarabel, diffcp and finite differences.

Every cone cvxpy emits for DPP problems (zero, nonneg, SOC, PSD, exp, 3D power), a
parametrised quad_form objective, dual variables as outputs, gp=True, batching and
broadcasting. References: cvxpy + Clarabel at tight tolerance (solutions, duals, central
finite differences) and cvxpylayers' default layer (diffcp) at eps=1e-12, mode="dense".
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy import PounceSolver
from pounce_kkt import SolverError
from testing_helpers.cvxpy_problems import ALL_CONES, Case, gp

CASES = {**ALL_CONES, "gp": gp}
# The layer's tolerance in these tests; the exp cone stalls near 1e-8 KKT error whatever
# tol asks (shared/conventions.md), hence its looser 1e-5 below.
OURS = {"tol": 1e-10}
TIGHT = {"tol": 1e-12}
CLARABEL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12,
            "tol_ktratio": 1e-10, "max_iter": 500}
SCS = {"eps": 1e-14, "max_iters": 1_000_000, "acceleration_lookback": 0}
DIFFCP = {"eps": 1e-12, "mode": "dense", "max_iters": 100_000}
EXP_LIKE = {"exp", "gp"}


def _rtol(name: str) -> float:
    return 1e-5 if name in EXP_LIKE else 1e-6


def _assert_rel_close(actual, expected, rtol, what=""):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    err = np.linalg.norm(actual - expected) / max(1.0, np.linalg.norm(expected))
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def _with_duals(case: Case) -> list:
    """The case's variables followed by every constraint's dual variables."""
    return case.variables + [d for c in case.problem.constraints for d in c.dual_variables]


def _clarabel(case: Case, values, outputs) -> list[np.ndarray]:
    """Values of `outputs` (variables or dual variables of `case`) from cvxpy + Clarabel.

    Where Clarabel cannot certify its tight tolerances ("optimal_inaccurate"; its SOCP
    solutions are then off by ~1e-6), cvxpy + SCS at eps=1e-14 is used instead.
    """
    for p, v in zip(case.parameters, values, strict=True):
        p.value = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case.problem.solve(solver=cp.CLARABEL, gp=case.gp, **CLARABEL)
        if case.problem.status == cp.OPTIMAL_INACCURATE:
            case.problem.solve(solver=cp.SCS, gp=case.gp, **SCS)
    assert case.problem.status == cp.OPTIMAL, case.problem.status
    return _read(case, outputs)


def _read(case: Case, outputs) -> list[np.ndarray]:
    """Values of `outputs` (variables or dual variables) at the problem's last solve."""
    duals = {id(d): (c, i) for c in case.problem.constraints
             for i, d in enumerate(c.dual_variables)}
    out = []
    for v in outputs:
        if id(v) in duals:
            c, i = duals[id(v)]
            dv = c.dual_value
            out.append(np.asarray(dv[i] if isinstance(dv, list) else dv))
        else:
            out.append(np.asarray(v.value))
    return out


def _layer(case: Case, outputs=None, solver=None) -> CvxpyLayer:
    return CvxpyLayer(case.problem, case.parameters, outputs or case.variables,
                      solver=solver or "pounce", gp=case.gp)


def _stack(case: Case, seeds) -> list[torch.Tensor]:
    per_seed = [case.values(s) for s in seeds]
    return [torch.tensor(np.stack(vs)) for vs in zip(*per_seed, strict=True)]


def _loss_grads(layer, params, weights, solver_args):
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    out = layer(*ps, solver_args=solver_args)
    loss = sum((o * w).sum() for o, w in zip(out, weights, strict=True))
    loss.backward()
    return [p.grad for p in ps], out


def _weights(outputs, batch, seed=7):
    r = np.random.default_rng(seed)
    return [torch.tensor(r.standard_normal((batch, *v.shape))) for v in outputs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_duals_match_clarabel(name):
    case = CASES[name]()
    outputs = _with_duals(case)
    seeds = (0, 1, 2)
    result = _layer(case, outputs)(*_stack(case, seeds), solver_args=OURS)
    for b, seed in enumerate(seeds):
        ref = _clarabel(case, case.values(seed), outputs)
        for k, (got, want) in enumerate(zip(result, ref, strict=True)):
            _assert_rel_close(got[b].numpy(), want, _rtol(name), f"{name} output {k} item {b}")


@pytest.mark.parametrize("name", ["qp", "socp", "exp", "psd", "gp"])
def test_gradients_match_diffcp(name):
    """diffcp is the reference where it applies: it ignores power cones and rejects a
    parametrised quad_form objective, so those two are checked by finite differences only."""
    case, ref_case = CASES[name](), CASES[name]()
    seeds = (0, 1)
    params = _stack(case, seeds)
    weights = _weights(_with_duals(case), len(seeds))
    ours, _ = _loss_grads(_layer(case, _with_duals(case)), params, weights, OURS)
    ref_layer = CvxpyLayer(ref_case.problem, ref_case.parameters, _with_duals(ref_case),
                           gp=ref_case.gp)
    theirs, _ = _loss_grads(ref_layer, params, weights, DIFFCP)
    for k, (g, r) in enumerate(zip(ours, theirs, strict=True)):
        _assert_rel_close(g.numpy(), r.numpy(), 1e-5, f"{name} d/dparam{k}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_central_differences(name):
    """<grad, v> against (f(p + h v) - f(p - h v)) / 2h along random directions v.

    f is the layer's forward at tol=1e-12: Clarabel's tightest solutions still move by
    ~1e-7 between neighbouring parameters (its iteration count changes), which at any h
    small enough for the truncation error swamps a 1e-5 comparison.
    """
    case = CASES[name]()
    outputs = _with_duals(case)
    layer = _layer(case, outputs)
    values = case.values(4)
    weights = _weights(outputs, 1)
    grads, _ = _loss_grads(layer, [torch.tensor(v)[None] for v in values], weights, TIGHT)
    r = np.random.default_rng(11)
    h = 1e-4
    for _ in range(2):
        dirs = [r.standard_normal(np.shape(v)) for v in values]
        if case.gp:  # positive parameters: move relatively
            dirs = [d * v for d, v in zip(dirs, values, strict=True)]
        if name == "quad_form":  # keep the PSD parameter symmetric
            dirs[0] = dirs[0] + dirs[0].T

        def f(t, dirs=dirs):
            ps = [torch.tensor(v + t * d)[None] for v, d in zip(values, dirs, strict=True)]
            out = layer(*ps, solver_args=TIGHT)
            return sum(float((w * o).sum()) for w, o in zip(weights, out, strict=True))

        fd = (f(h) - f(-h)) / (2 * h)
        an = sum(float((g[0].numpy() * d).sum()) for g, d in zip(grads, dirs, strict=True))
        norm = max(1.0, sum(float(np.linalg.norm(g.numpy()) * np.linalg.norm(d))
                            for g, d in zip(grads, dirs, strict=True)))
        assert abs(an - fd) <= 1e-5 * norm, f"{name}: analytic {an:.10g} vs FD {fd:.10g}"


@pytest.mark.parametrize("name", ["qp", "socp", "exp", "psd", "power"])
def test_gradcheck_float64(name):
    case = CASES[name]()
    layer = _layer(case, _with_duals(case))
    params = tuple(t.requires_grad_(True) for t in _stack(case, (5,)))
    # Non-polyhedral cones: the solution is accurate to ~1e-9, which a step of 1e-6 would
    # turn into 1e-3 of finite-difference noise; 3e-4 keeps noise and truncation ~1e-5.
    curved = name in ("socp", "exp", "power")
    eps = 3e-4 if curved else 1e-6

    def fn(*ps):
        return layer(*ps, solver_args=TIGHT)

    assert torch.autograd.gradcheck(fn, params, eps=eps, atol=1e-5, rtol=1e-4 if curved else 1e-5)


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_gp_with_non_unique_primal_gradcheck(backward):
    """min 1/(xy) s.t. a xy <= b: only the product xy is determined (in log variables the
    optimum is a line, so the KKT matrix is singular); the dual and xy are unique and
    differentiable (the shape of cvxpylayers' own test_gp_dual_gradcheck)."""
    x, y = cp.Variable(pos=True), cp.Variable(pos=True)
    a, b = cp.Parameter(pos=True), cp.Parameter(pos=True)
    con = a * (x * y) <= b
    prob = cp.Problem(cp.Minimize(1 / (x * y)), [con])
    layer = CvxpyLayer(prob, parameters=[a, b], variables=[x, y, con.dual_variables[0]],
                       gp=True, solver="pounce")

    def fn(a_t, b_t):
        xo, yo, dual = layer(a_t, b_t, solver_args={**TIGHT, "backward": backward})
        return xo * yo, dual

    params = (torch.tensor(2.0, dtype=torch.float64, requires_grad=True),
              torch.tensor(1.0, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_batched_and_broadcast_parameters():
    """Mixed batched / unbatched parameters equal per-item solves; a broadcast parameter's
    gradient is the sum of the per-item gradients."""
    case = CASES["qp"]()
    layer = _layer(case)
    seeds = (0, 1, 2)
    q, G = (torch.tensor(np.stack([case.values(s)[i] for s in seeds])) for i in (0, 1))
    h, F, g = (torch.tensor(v) for v in case.values(0)[2:])
    ps = [q, G, h, F, g]
    ps = [p.requires_grad_(True) for p in ps]
    (x,) = layer(*ps, solver_args=OURS)
    w = torch.tensor(np.random.default_rng(3).standard_normal(x.shape))
    (x * w).sum().backward()
    assert x.shape == (3, 4)
    grad_h = torch.zeros_like(h)
    for b in range(3):
        item = [q[b].detach(), G[b].detach(), h.detach(), F.detach(), g.detach()]
        item = [p.clone().requires_grad_(True) for p in item]
        (xb,) = layer(*item, solver_args=OURS)
        torch.testing.assert_close(x[b], xb, rtol=1e-8, atol=1e-8)
        (xb * w[b]).sum().backward()
        torch.testing.assert_close(q.grad[b], item[0].grad, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(G.grad[b], item[1].grad, rtol=1e-6, atol=1e-8)
        grad_h += item[2].grad
    torch.testing.assert_close(h.grad, grad_h, rtol=1e-6, atol=1e-8)
    _assert_rel_close(x[1].detach().numpy(), _clarabel(case, [q[1].detach().numpy(),
                      G[1].detach().numpy(), *case.values(0)[2:]], case.variables)[0], 1e-6)
    ref = CASES["qp"]()
    ref_layer = CvxpyLayer(ref.problem, ref.parameters, ref.variables)
    theirs, (x_ref,) = _loss_grads(ref_layer, ps, [w], DIFFCP)
    _assert_rel_close(x.detach().numpy(), x_ref.detach().numpy(), 1e-6, "x vs diffcp")
    for k, (p, r) in enumerate(zip(ps, theirs, strict=True)):
        _assert_rel_close(p.grad.numpy(), r.numpy(), 1e-5, f"d/dparam{k} vs diffcp")


def _box_case():
    """min ||x - t||^2 s.t. lo <= x <= hi: infeasible where lo > hi."""
    x = cp.Variable(2)
    t, lo, hi = cp.Parameter(2), cp.Parameter(2), cp.Parameter(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - t)), [x >= lo, x <= hi])
    t_ = torch.tensor([[0.5, 2.0], [0.5, 2.0], [-3.0, 0.2]], dtype=torch.float64)
    lo_ = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    hi_ = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    return CvxpyLayer(prob, [t, lo, hi], [x], solver="pounce"), (t_, lo_, hi_)


def test_failure_raises_naming_batch_index_and_status():
    import diffcp

    layer, params = _box_case()
    with pytest.raises(SolverError, match=r"batch item 1: status 'primal_infeasible'") as err:
        layer(*params)
    assert (err.value.batch_index, err.value.status) == (1, "primal_infeasible")
    # Code written for cvxpylayers' default solver catches diffcp.SolverError.
    assert isinstance(err.value, diffcp.SolverError)


def test_failure_nan_leaves_other_items_untouched():
    layer, params = _box_case()
    ps = [p.clone().requires_grad_(True) for p in params]
    (x,) = layer(*ps, solver_args={"on_failure": "nan"})
    assert torch.isnan(x[1]).all() and torch.isfinite(x[[0, 2]]).all()
    x[[0, 2]].sum().backward()
    for p in ps:
        assert torch.all(p.grad[1] == 0) and torch.isfinite(p.grad).all()
    for b in (0, 2):
        item = [p[b].detach().clone().requires_grad_(True) for p in params]
        (xb,) = layer(*item)
        torch.testing.assert_close(x[b], xb, rtol=1e-9, atol=1e-9)
        xb.sum().backward()
        for p, q in zip(ps, item, strict=True):
            torch.testing.assert_close(p.grad[b], q.grad, rtol=1e-7, atol=1e-9)


def test_float32_in_float32_out():
    case = CASES["socp"]()
    layer = _layer(case)
    p64 = _stack(case, (0, 1))
    p32 = [p.float().requires_grad_(True) for p in p64]
    (x32,) = layer(*p32)
    assert x32.dtype == torch.float32
    x32.sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in p32)
    (x64,) = layer(*p64)
    torch.testing.assert_close(x32.double(), x64, rtol=1e-5, atol=1e-5)


class _RecordingSolver(PounceSolver):
    def solve_torch_batch(self, P, q, A, dims, solver_args, needs_grad):
        out = super().solve_torch_batch(P, q, A, dims, solver_args, needs_grad)
        self.record = (needs_grad, out[2])
        return out


def test_no_backward_work_without_gradients():
    case = CASES["qp"]()
    solver = _RecordingSolver()
    layer = _layer(case, solver=solver)
    params = _stack(case, (0,))
    layer(*params)
    assert solver.record == (False, None)
    with torch.no_grad():
        layer(*[p.requires_grad_(True) for p in params])
    assert solver.record == (False, None)
    layer(*params)
    assert solver.record[0] is True and solver.record[1] is not None


def test_warm_start_repeats_the_solution():
    case = CASES["socp"]()
    solver = PounceSolver(warm_start=True, **TIGHT)
    layer = _layer(case, solver=solver)
    params = _stack(case, (0, 1))
    (cold,) = _layer(CASES["socp"](), solver=PounceSolver(**TIGHT))(*params)
    (first,) = layer(*params)
    assert 2 in solver._calls().warm
    (second,) = layer(*params)
    torch.testing.assert_close(first, cold, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(second, cold, rtol=1e-7, atol=1e-7)
    moved = [p * 1.01 for p in params]
    (warm,) = layer(*moved)
    (ref,) = _layer(CASES["socp"](), solver=PounceSolver(**TIGHT))(*moved)
    torch.testing.assert_close(warm, ref, rtol=1e-7, atol=1e-7)


def test_unconstrained_problem():
    """No constraints (m = 0): x = M^-1 p / 2 for min x'Mx - p'x, so dL/dp = M^-1 w / 2."""
    x, p = cp.Variable(2), cp.Parameter(2)
    M = np.array([[2.0, 0.5], [0.5, 1.0]])
    prob = cp.Problem(cp.Minimize(cp.quad_form(x, M) - p @ x))
    p_t = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    (x_t,) = CvxpyLayer(prob, [p], [x], solver="pounce")(p_t)
    w = torch.tensor([0.3, -0.7], dtype=torch.float64)
    (x_t * w).sum().backward()
    Minv = np.linalg.inv(M)
    np.testing.assert_allclose(x_t.detach().numpy(), Minv @ p_t.detach().numpy() / 2, atol=1e-9)
    np.testing.assert_allclose(p_t.grad.numpy(), Minv @ w.numpy() / 2, atol=1e-9)
    p.value = np.array([1.0, -2.0])
    prob.solve(solver="POUNCE")
    np.testing.assert_allclose(x.value, Minv @ p.value / 2, atol=1e-9)


def test_one_solver_instance_per_layer():
    solver = PounceSolver()
    _layer(CASES["qp"](), solver=solver)
    with pytest.raises(ValueError, match="one PounceSolver"):
        _layer(CASES["socp"](), solver=solver)


def test_cvxpy_solve_reports_infeasible_and_warm_starts():
    x = cp.Variable(2)
    lo = cp.Parameter(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, x <= 1])
    lo.value = np.array([2.0, 0.0])
    prob.solve(solver="POUNCE")
    assert prob.status == cp.INFEASIBLE
    lo.value = np.array([0.5, -1.0])
    prob.solve(solver="POUNCE", **TIGHT)
    prob.solve(solver="POUNCE", warm_start=True, **TIGHT)
    np.testing.assert_allclose(x.value, [0.5, 0.0], atol=1e-8)
    lo.value = np.array([0.25, 0.5])
    prob.solve(solver="POUNCE", warm_start=True, **TIGHT)
    np.testing.assert_allclose(x.value, [0.25, 0.5], atol=1e-8)


def test_layer_solver_args_reach_the_solver():
    case = CASES["socp"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="pounce",
                       solver_args={"max_iter": 1, "on_failure": "nan"})
    (x,) = layer(*_stack(case, (0,)))
    assert torch.isnan(x).all()  # one interior-point iteration cannot reach optimality
    (x,) = layer(*_stack(case, (0,)), solver_args={"max_iter": 200})
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_cvxpy_solve_with_pounce_matches_clarabel(name):
    case = CASES[name]()
    outputs = _with_duals(case)
    values = case.values(2)
    ref = _clarabel(case, values, outputs)
    ref_value = case.problem.value
    case.problem.solve(solver="POUNCE", gp=case.gp, **TIGHT)
    assert case.problem.status == cp.OPTIMAL
    assert abs(case.problem.value - ref_value) <= _rtol(name) * max(1.0, abs(ref_value))
    for k, (got, want) in enumerate(zip(_read(case, outputs), ref, strict=True)):
        _assert_rel_close(got, want, _rtol(name), f"{name} output {k}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_device_is_preserved():
    case = CASES["qp"]()
    params = [p.cuda().requires_grad_(True) for p in _stack(case, (0,))]
    (x,) = _layer(case)(*params)
    assert x.device == params[0].device
    x.sum().backward()
    assert all(p.grad.device == params[0].device for p in params)


@pytest.mark.parametrize("name", ["qp", "socp"])
def test_device_is_preserved_on_a_simulated_device(name):
    """CvxpyLayer(solver="pounce") with float32 parameters on another device (simulated:
    tests/simulated_device.py, CPU-backed, refuses cross-device ops and numpy): solutions
    and gradients come back on that device and dtype, equal to a CPU run."""
    from simulated_device import SIM_DEVICE, SimulatedDevice, on_cpu

    case = CASES[name]()
    layer = _layer(case)
    values = case.values(0)

    def run(to_device):
        ps = [torch.tensor(v, dtype=torch.float32) for v in values]
        ps = [(p.to(SIM_DEVICE) if to_device else p).requires_grad_(True) for p in ps]
        out = layer(*ps)
        sum((o * o).sum() for o in out).backward()
        return list(out), [p.grad for p in ps]

    ref_out, ref_grads = run(False)
    with SimulatedDevice():
        out, grads = run(True)
        for t, ref in zip(out + grads, ref_out + ref_grads, strict=True):
            assert t.device == SIM_DEVICE and t.dtype == torch.float32
            assert torch.allclose(on_cpu(t), ref, rtol=1e-6, atol=1e-7)
