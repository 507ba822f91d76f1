"""Bounds and general constraints: solutions and implicit gradients against scipy
references (bounded least_squares; an angle parametrisation of points on a circle),
with central differences through the reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import Constraint, PounceOptimizer
from testing_helpers.theseus_problems import central_difference, curve_fit, solve_with

pytestmark = THESEUS_MARKS

# Analytic Jacobians below: scipy's default 2-point Jacobian limits the solution to ~1e-8.
TOLS = {"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15}
# MINPACK's LM for the unconstrained reference: trf stalls near |J'r| ~ 1e-8 there.
TIGHT = {**TOLS, "method": "lm"}
# dogbox lands exactly on an active bound; trf's iterates stay strictly inside, which
# shows up as ~1e-6 relative noise in finite differences.
BOUNDED = {**TOLS, "method": "dogbox"}
B_UPPER = -1.7  # below the unconstrained b (in [-1.5, -1]), so the bound is active


def _scipy_bounded_fit(x, y, w, upper):
    """Per element: argmin_{a, b <= upper} 1/2 |w (a exp(b x) - y)|^2 (scipy TRF)."""
    out = []
    for xb, yb, wb, ub in zip(x, y, w, upper, strict=True):
        def resid(p, xb=xb, yb=yb, wb=wb):
            return wb * (p[0] * np.exp(p[1] * xb) - yb)

        def jac(p, xb=xb, wb=wb):
            e = np.exp(p[1] * xb)
            return np.stack([wb * e, wb * p[0] * xb * e], 1)

        res = so.least_squares(
            resid, np.array([1.0, ub - 0.1]), jac=jac,
            bounds=([-np.inf, -np.inf], [np.inf, ub]), **BOUNDED,
        )
        out.append(res.x)
    return np.array(out)


def test_bounded_curve_fit_holds_the_bound_and_matches_scipy():
    bsz = 3
    obj, inputs = curve_fit(bsz)
    upper = torch.full((bsz, 1), B_UPPER, dtype=torch.float64, requires_grad=True)
    opt = PounceOptimizer(obj, tol=1e-12, bounds={"b": (None, upper)})
    y = inputs["y"].clone().requires_grad_(True)
    sol, info = solve_with(opt, {**inputs, "y": y})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    # held exactly, not 1e-9 inside
    assert torch.equal(sol["b"].detach(), upper.detach())

    x, w = inputs["x"].numpy(), inputs["w"].numpy()
    ref = _scipy_bounded_fit(x, inputs["y"].numpy(), w, upper.detach().numpy()[:, 0])
    assert np.allclose(sol["a"].detach().numpy()[:, 0], ref[:, 0], atol=1e-6, rtol=0)

    ga_y, ga_u = torch.autograd.grad(sol["a"].sum(), [y, upper], retain_graph=True)
    gb_y, gb_u = torch.autograd.grad(sol["b"].sum(), [y, upper])
    assert torch.all(gb_y == 0) and torch.allclose(gb_u, torch.ones_like(gb_u))

    h = 1e-5
    for j in (0, 9):
        yp, ym = inputs["y"].numpy().copy(), inputs["y"].numpy().copy()
        yp[:, j] += h
        ym[:, j] -= h
        ub = upper.detach().numpy()[:, 0]
        fd = (_scipy_bounded_fit(x, yp, w, ub)[:, 0] - _scipy_bounded_fit(x, ym, w, ub)[:, 0])
        fd /= 2 * h
        assert np.allclose(ga_y[:, j].numpy(), fd, rtol=1e-6, atol=1e-8), (ga_y[:, j], fd)
    ub = upper.detach().numpy()[:, 0]
    y0 = inputs["y"].numpy()
    fd_u = (_scipy_bounded_fit(x, y0, w, ub + h)[:, 0] - _scipy_bounded_fit(x, y0, w, ub - h)[:, 0])
    fd_u /= 2 * h
    assert np.allclose(ga_u[:, 0].numpy(), fd_u, rtol=1e-6, atol=1e-8)


def test_inactive_bound_changes_nothing():
    obj, inputs = curve_fit(2)
    obj2, _ = curve_fit(2)
    with torch.no_grad():
        free, _ = solve_with(PounceOptimizer(obj, tol=1e-12), inputs)
        boxed, _ = solve_with(PounceOptimizer(obj2, tol=1e-12, bounds={"b": (-5.0, 0.0)}), inputs)
    assert torch.allclose(free["b"], boxed["b"], atol=1e-8)


# ----------------------------------------------------------------------------- circle
K = 3  # points


def _circle_problem(bsz: int, seed: int = 0):
    """Points p_i near targets t_i, pulled towards a regular spacing, kept on |p_i| = r."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.linspace(0.0, 1.2, K, dtype=torch.float64)
    t = torch.stack([torch.cos(ang), torch.sin(ang)], 1).reshape(1, 2 * K) * 1.3
    t = t + 0.2 * torch.randn(bsz, 2 * K, generator=g, dtype=torch.float64)
    pts = [th.Vector(2, name=f"p{i}", dtype=torch.float64) for i in range(K)]
    tv = th.Variable(t, name="t")
    rv = th.Variable(torch.ones(bsz, 1, dtype=torch.float64), name="r")

    def fit(optim_vars, aux_vars):
        p = torch.cat([v.tensor for v in optim_vars], 1)
        return p - aux_vars[0].tensor

    def spacing(optim_vars, aux_vars):
        p0, p1 = optim_vars
        return 0.5 * (p1.tensor - p0.tensor - torch.tensor([-0.4, 0.5], dtype=torch.float64))

    obj = th.Objective(dtype=torch.float64)
    one = th.ScaleCostWeight(torch.tensor(1.0, dtype=torch.float64))
    obj.add(th.AutoDiffCostFunction(pts, fit, 2 * K, aux_vars=[tv], cost_weight=one, name="fit"))
    for i in range(K - 1):
        obj.add(th.AutoDiffCostFunction([pts[i], pts[i + 1]], spacing, 2, cost_weight=one,
                                        name=f"sp{i}"))

    def on_circle(optim_vars, aux_vars):
        r = aux_vars[0].tensor
        return torch.cat([(v.tensor**2).sum(1, keepdim=True) - r**2 for v in optim_vars], 1)

    con = Constraint(on_circle, pts, [rv], lower=0.0, upper=0.0, name="circle")
    inputs = {"t": t}
    for i in range(K):
        inputs[f"p{i}"] = t[:, 2 * i : 2 * i + 2].clone()
    return obj, inputs, con, rv


def _scipy_circle(t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The same problem in angles (p_i = r (cos phi_i, sin phi_i)), unconstrained."""
    shift = np.array([-0.4, 0.5])
    out = []
    for tb, rb in zip(t, r, strict=True):
        def resid(phi, tb=tb, rb=rb):
            p = rb * np.stack([np.cos(phi), np.sin(phi)], 1)
            sp = [0.5 * (p[i + 1] - p[i] - shift) for i in range(K - 1)]
            return np.concatenate([p.ravel() - tb, *sp])

        def jac(phi, rb=rb):
            dp = rb * np.stack([-np.sin(phi), np.cos(phi)], 1)  # d p_i / d phi_i
            j = np.zeros((2 * K + 2 * (K - 1), K))
            for i in range(K):
                j[2 * i : 2 * i + 2, i] = dp[i]
            for i in range(K - 1):
                j[2 * K + 2 * i : 2 * K + 2 * i + 2, i + 1] = 0.5 * dp[i + 1]
                j[2 * K + 2 * i : 2 * K + 2 * i + 2, i] = -0.5 * dp[i]
            return j

        def curvature(phi, rb=rb):
            # hess of 1/2|r|^2 = J'J + sum_rows r d2r/dphi2; d2p_i/dphi_i2 = -p_i, diagonal.
            p = rb * np.stack([np.cos(phi), np.sin(phi)], 1)
            r = resid(phi)
            c = np.array([-(r[2 * i : 2 * i + 2] @ p[i]) for i in range(K)])
            for i in range(K - 1):
                rs = r[2 * K + 2 * i : 2 * K + 2 * i + 2]
                c[i + 1] -= 0.5 * rs @ p[i + 1]
                c[i] += 0.5 * rs @ p[i]
            j = jac(phi)
            return j.T @ j + np.diag(c)

        phi0 = np.arctan2(tb[1::2], tb[0::2])
        phi = so.least_squares(resid, phi0, jac=jac, **TIGHT).x
        # LM converges only linearly on a nonzero-residual problem (|x err| ~ 1e-9, too
        # coarse for central differences); three Newton steps on 1/2|r|^2 finish it.
        for _ in range(3):
            phi = phi - np.linalg.solve(curvature(phi), jac(phi).T @ resid(phi))
        out.append((rb * np.stack([np.cos(phi), np.sin(phi)], 1)).ravel())
    return np.array(out)


def test_points_on_a_circle_match_reference_and_gradients():
    bsz = 3
    obj, inputs, con, rv = _circle_problem(bsz)
    r = torch.full((bsz, 1), 1.2, dtype=torch.float64, requires_grad=True)
    rv.update(r)
    t = inputs["t"].clone().requires_grad_(True)
    opt = PounceOptimizer(obj, tol=1e-12, constraints=[con])
    sol, info = solve_with(opt, {**inputs, "t": t})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    p = torch.cat([sol[f"p{i}"] for i in range(K)], 1)
    radius = p.detach().reshape(bsz, K, 2).norm(dim=2)
    assert torch.allclose(radius, torch.full_like(radius, 1.2), atol=1e-9)
    ref = _scipy_circle(inputs["t"].numpy(), r.detach().numpy()[:, 0])
    assert np.allclose(p.detach().numpy(), ref, atol=1e-6, rtol=0)

    wts = torch.linspace(-1.0, 1.0, 2 * K, dtype=torch.float64)
    g_t, g_r = torch.autograd.grad((p * wts).sum(), [t, r])
    h = 1e-5
    t0, r0 = inputs["t"].numpy(), r.detach().numpy()[:, 0]

    def loss(tt, rr):
        return _scipy_circle(tt, rr) @ wts.numpy()

    for j in (0, 3):
        tp, tm = t0.copy(), t0.copy()
        tp[:, j] += h
        tm[:, j] -= h
        fd = (loss(tp, r0) - loss(tm, r0)) / (2 * h)
        assert np.allclose(g_t[:, j].numpy(), fd, rtol=1e-6, atol=1e-8), (g_t[:, j], fd)
    fd_r = (loss(t0, r0 + h) - loss(t0, r0 - h)) / (2 * h)
    assert np.allclose(g_r[:, 0].numpy(), fd_r, rtol=1e-6, atol=1e-8), (g_r[:, 0], fd_r)


def test_inequality_constraint_inactive_and_active():
    """|p_i|^2 <= R^2: inactive for a large R (same as free), active for a small one."""
    bsz = 2
    obj, inputs, _, rv = _circle_problem(bsz)
    big = Constraint(
        lambda ov, av: torch.cat([(v.tensor**2).sum(1, keepdim=True) for v in ov], 1),
        [obj.optim_vars[f"p{i}"] for i in range(K)], [], lower=None, upper=100.0,
    )
    obj_free, _, _, _ = _circle_problem(bsz)
    with torch.no_grad():
        free, _ = solve_with(PounceOptimizer(obj_free, tol=1e-12), inputs)
        boxed, _ = solve_with(PounceOptimizer(obj, tol=1e-12, constraints=[big]), inputs)
    for k in free:
        assert torch.allclose(free[k], boxed[k], atol=1e-7)


def test_restoration_phase_is_wired():
    """``start_with_resto`` makes POUNCE begin in its restoration phase. Iterations flagged
    as restoration come only from the inner MinC1Norm sub-solve (pounce-algorithm sets the
    flag nowhere else; with no restoration wired in, the option is ignored with a warning),
    and the solve then converges to the reference."""
    bsz = 2
    obj, inputs, con, rv = _circle_problem(bsz)
    rv.update(torch.full((bsz, 1), 1.2, dtype=torch.float64))
    start = {**inputs, **{f"p{i}": 3.0 * inputs[f"p{i}"] for i in range(K)}}
    opt = PounceOptimizer(obj, tol=1e-12, constraints=[con],
                          solver_options={"start_with_resto": "yes"})
    with torch.no_grad():
        sol, info = solve_with(opt, start)
    assert opt.last_solve["restoration_iterations"] > 0
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    p = torch.cat([sol[f"p{i}"] for i in range(K)], 1).numpy()
    ref = _scipy_circle(inputs["t"].numpy(), np.full(bsz, 1.2))
    assert np.allclose(p, ref, atol=1e-6, rtol=0)


def test_active_inequality_matches_the_equality_solution_and_gradient():
    """|p_i|^2 <= R^2 with R well below the targets' radius is active at every point:
    solution and implicit gradient (multipliers included) equal those of |p_i| = R,
    which the circle test checks against scipy."""
    bsz, radius = 2, 0.8
    results = []
    for kind in ("eq", "ineq"):
        obj, inputs, con, rv = _circle_problem(bsz)
        rv.update(torch.full((bsz, 1), radius, dtype=torch.float64))
        if kind == "ineq":
            con = Constraint(con.fn, con.optim_vars, con.aux_vars, lower=None, upper=0.0)
        t = inputs["t"].clone().requires_grad_(True)
        sol, info = solve_with(PounceOptimizer(obj, tol=1e-12, constraints=[con]),
                               {**inputs, "t": t})
        assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
        p = torch.cat([sol[f"p{i}"] for i in range(K)], 1)
        (g,) = torch.autograd.grad((p * torch.arange(2 * K, dtype=torch.float64)).sum(), t)
        results.append((p.detach(), g))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-8)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-7)


def test_partly_active_inequality_gradient_matches_finite_differences():
    """R = 1: some points sit on the circle, some inside (their rows inactive, multiplier
    ~0). Gradient w.r.t. the targets against central differences of the forward solve."""
    bsz = 2
    obj, inputs, con, rv = _circle_problem(bsz)
    rv.update(torch.full((bsz, 1), 1.0, dtype=torch.float64))
    ineq = Constraint(con.fn, con.optim_vars, con.aux_vars, lower=None, upper=0.0)
    opt = PounceOptimizer(obj, tol=1e-12, constraints=[ineq])
    t = inputs["t"].clone().requires_grad_(True)
    sol, info = solve_with(opt, {**inputs, "t": t})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    p = torch.cat([sol[f"p{i}"] for i in range(K)], 1)
    radius = p.detach().reshape(bsz, K, 2).norm(dim=2)
    assert (radius < 1 - 1e-3).any() and (radius > 1 - 1e-9).any()
    wts = torch.linspace(-1.0, 1.0, 2 * K, dtype=torch.float64)
    (g,) = torch.autograd.grad((p * wts).sum(), t)

    def loss(inp):
        with torch.no_grad():
            s, _ = solve_with(opt, inp)
        return torch.cat([s[f"p{i}"] for i in range(K)], 1) @ wts

    for j in (0, 3):
        fd = central_difference(loss, inputs, "t", (j,), h=1e-4)
        assert torch.allclose(g[:, j], fd, rtol=1e-6, atol=1e-8), (g[:, j], fd)


# ----------------------------------------------------------------------------- linear
def _scipy_fit_b(x, y, w, a):
    """Per element: argmin_b 1/2 |w (a exp(b x) - y)|^2 with ``a`` held fixed (MINPACK)."""
    out = []
    for xb, yb, wb, ab in zip(x, y, w, a, strict=True):
        def resid(p, xb=xb, yb=yb, wb=wb, ab=ab):
            return wb * (ab * np.exp(p[0] * xb) - yb)

        def jac(p, xb=xb, wb=wb, ab=ab):
            return (wb * ab * xb * np.exp(p[0] * xb))[:, None]

        b = so.least_squares(resid, np.array([-1.0]), jac=jac, **TIGHT).x[0]
        for _ in range(3):  # Newton on 1/2|r|^2 past MINPACK's ~1e-9 noise floor
            e = np.exp(b * xb)
            r, dr, d2r = wb * (ab * e - yb), wb * ab * xb * e, wb * ab * xb**2 * e
            b -= (r @ dr) / (dr @ dr + r @ d2r)
        out.append(b)
    return np.array(out)


def test_linear_equality_constraint_converges_with_gradients():
    """``a == c`` has a constant Jacobian (zero curvature): the solve converges to the fit
    of ``b`` alone with ``a = c``, and the gradients w.r.t. the data and ``c`` match central
    differences through scipy's one-variable fit."""
    bsz = 2
    obj, inputs = curve_fit(bsz)
    # a constraint's aux variables are its own (not the objective's): c_in is set directly
    c_in = torch.tensor([[1.6], [1.8]], dtype=torch.float64, requires_grad=True)
    c = th.Variable(c_in, name="c")
    fix = Constraint(lambda ov, av: ov[0].tensor - av[0].tensor, [obj.optim_vars["a"]], [c],
                     lower=0.0, upper=0.0, name="a_equals_c")
    opt = PounceOptimizer(obj, tol=1e-12, constraints=[fix])
    y = inputs["y"].clone().requires_grad_(True)
    sol, info = solve_with(opt, {**inputs, "y": y})
    assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
    assert torch.allclose(sol["a"].detach(), c_in.detach(), atol=1e-10, rtol=0)
    x, w, y0, c0 = (inputs["x"].numpy(), inputs["w"].numpy(), inputs["y"].numpy(),
                    c_in.detach().numpy()[:, 0])
    assert np.allclose(sol["b"].detach().numpy()[:, 0], _scipy_fit_b(x, y0, w, c0), atol=1e-8)
    g_y, g_c = torch.autograd.grad(sol["b"].sum(), [y, c_in])
    h = 1e-5
    for j in (0, 7):
        yp, ym = y0.copy(), y0.copy()
        yp[:, j] += h
        ym[:, j] -= h
        fd = (_scipy_fit_b(x, yp, w, c0) - _scipy_fit_b(x, ym, w, c0)) / (2 * h)
        assert np.allclose(g_y[:, j].numpy(), fd, rtol=1e-6, atol=1e-8), (g_y[:, j], fd)
    fd_c = (_scipy_fit_b(x, y0, w, c0 + h) - _scipy_fit_b(x, y0, w, c0 - h)) / (2 * h)
    assert np.allclose(g_c[:, 0].numpy(), fd_c, rtol=1e-6, atol=1e-8), (g_c[:, 0], fd_c)
    # the products' engine belongs to the problem; the linear rows did not turn vmap off
    assert opt._structure.vjp.vmap_ok


def test_linear_inequality_equals_the_same_bound():
    """``a <= u`` written as a linear Constraint and as a bound give the same solution and
    the same gradient w.r.t. ``u`` (two independent code paths)."""
    bsz = 2
    u = torch.full((bsz, 1), 1.3, dtype=torch.float64, requires_grad=True)
    results = []
    for kind in ("constraint", "bound"):
        obj, inputs = curve_fit(bsz)
        a = obj.optim_vars["a"]
        if kind == "constraint":
            con = Constraint(lambda ov, av: ov[0].tensor - av[0].tensor, [a],
                             [th.Variable(u, name="u")], lower=None, upper=0.0, name="a_below_u")
            opt = PounceOptimizer(obj, tol=1e-12, constraints=[con])
            sol, info = solve_with(opt, inputs)
        else:
            opt = PounceOptimizer(obj, tol=1e-12, bounds={a: (None, u)})
            sol, info = solve_with(opt, inputs)
        assert all(s == th.NonlinearOptimizerStatus.CONVERGED for s in info.status)
        (g,) = torch.autograd.grad(sol["b"].sum(), u)
        results.append((sol["a"].detach(), sol["b"].detach(), g))
    assert torch.allclose(results[0][0], u.detach(), atol=1e-8)
    for got, want in zip(results[0], results[1], strict=True):
        assert torch.allclose(got, want, atol=1e-7), (got, want)


def test_nan_limits_raise_naming_them():
    obj, inputs = curve_fit(2)
    a = obj.optim_vars["a"]
    with pytest.raises(ValueError, match=r"Constraint 'cap' upper: NaN"):
        Constraint(lambda ov, av: ov[0].tensor, [a], [], lower=None, upper=float("nan"),
                   name="cap")
    lower = torch.tensor([[0.0], [float("nan")]], dtype=torch.float64)
    late = Constraint(lambda ov, av: ov[0].tensor, [a], [], lower=0.0, upper=2.0, name="late")
    late.lower = lower  # set after construction: caught when the solve reads it
    with pytest.raises(ValueError, match=r"Constraint 'late' lower: NaN at batch index 1"):
        solve_with(PounceOptimizer(obj, constraints=[late]), inputs)
    obj2, _ = curve_fit(2)
    with pytest.raises(ValueError, match=r"bounds\['a'\]\[0\]: NaN at batch index 1"):
        solve_with(PounceOptimizer(obj2, bounds={"a": (lower, 2.0)}), inputs)
