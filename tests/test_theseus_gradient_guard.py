"""The implicit step at a degenerate point (pounce_kkt/nlp_kkt.py): an element whose KKT
matrix is singular or indefinite on the active rows' null space gets a bounded gradient
(the minimum-norm step with the Hessian's negative and near-zero curvature dropped) and a
DegenerateGradientWarning naming it; the other elements keep their gradient bit for bit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import one_thread  # noqa: F401

from pounce_kkt import DegenerateGradientWarning
from pounce_kkt.nlp_kkt import SINGULAR_EPS, implicit_step
from pounce_kkt.singular_kkt import PINV_RTOL
from pounce_theseus import PounceOptimizer


def _degenerate_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DegenerateGradientWarning)]


def _reference_step(h, jac, active, g, r):
    """Independent numpy formula: the active rows only; a degenerate K (inertia not (n, p)
    or an eigenvalue at most SINGULAR_EPS eps of the largest) gets pinv(K_+) with H's
    curvature at most PINV_RTOL max|eig H| dropped, a regular one K^-1."""
    n = h.shape[0]
    a = jac[active]
    p = a.shape[0]
    k = np.block([[h, a.T], [a, np.zeros((p, p))]])
    rhs = np.concatenate([g, r[active]])
    lam = np.linalg.eigvalsh(k)
    degenerate = ((lam > 0).sum() != n or (lam < 0).sum() != p
                  or np.abs(lam).min() <= SINGULAR_EPS * np.finfo(float).eps * np.abs(lam).max())
    if not degenerate:
        return -np.linalg.solve(k, rhs)[:n], False
    w, v = np.linalg.eigh(h)
    w = np.where(w > PINV_RTOL * np.abs(w).max(), w, 0.0)
    k[:n, :n] = (v * w) @ v.T
    return -(np.linalg.pinv(k, rcond=PINV_RTOL, hermitian=True) @ rhs)[:n], True


def test_degenerate_kkt_matrices_get_the_min_norm_step_and_a_warning():
    """Item 0: positive definite. Item 1: a near-zero curvature (1e-17), the constraint
    inactive: K^-1 r is ~1e17. Item 2: negative curvature on the active row's null space.
    Item 3: the same Hessian with the negative direction constrained (reduced Hessian
    positive definite: regular, untouched)."""
    h = np.array([np.diag([2.0, 1.0, 3.0]), np.diag([1.0, 2.0, 1e-17]),
                  np.diag([1.0, -0.5, 2.0]), np.diag([1.0, -0.5, 2.0])])
    h[0, 0, 1] = h[0, 1, 0] = 0.3
    jac = np.array([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]],
                    [[0.0, 1.0, 0.0]]])
    active = np.array([[True], [False], [True], [True]])
    rng = np.random.default_rng(0)
    g0 = rng.standard_normal((4, 3))
    r0 = rng.standard_normal((4, 1))

    def run(items):
        g = torch.tensor(g0[items], requires_grad=True)
        r = torch.tensor(r0[items], requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = implicit_step(g, torch.tensor(h[items]), torch.tensor(jac[items]), r,
                                 torch.tensor(active[items]))
        dg, dr = torch.autograd.grad(step[:, 2].sum(), (g, r))
        return step.detach(), dg, dr, _degenerate_warnings(caught)

    step, dg, dr, msgs = run([0, 1, 2, 3])
    assert torch.isfinite(step).all() and step.abs().max() < 10
    assert len(msgs) == 1 and "batch items [1, 2]" in msgs[0]
    for i in range(4):
        want, degenerate = _reference_step(h[i], jac[i], active[i], g0[i], r0[i])
        assert degenerate == (i in (1, 2))
        np.testing.assert_allclose(step[i].numpy(), want, rtol=1e-12, atol=1e-12)
    # the gradient is that of the same linear map: d step_2 / d g_j = -M[2, j]
    assert dg.abs().max() < 10 and torch.isfinite(dr).all()
    assert dg[1, 2] == 0.0  # the dropped near-zero curvature direction
    for i in (0, 3):  # regular elements: exactly what they get solved alone, no warning
        s1, dg1, dr1, m1 = run([i])
        assert not m1
        assert torch.equal(s1[0], step[i]) and torch.equal(dg1[0], dg[i])
        assert torch.equal(dr1[0], dr[i])


def _robust_objective() -> th.Objective:
    """x: a Welsch-robust Difference to y (radius exp(log_loss_radius) = 1, inflection of
    the loss at |x - y| = 1/sqrt(2)); z: a plain Difference to t (unit curvature)."""
    f64 = torch.float64
    x, y = th.Vector(1, name="x", dtype=f64), th.Vector(1, name="y", dtype=f64)
    z, t = th.Vector(1, name="z", dtype=f64), th.Vector(1, name="t", dtype=f64)
    log_radius = th.Variable(torch.zeros(1, 1, dtype=f64), name="log_loss_radius")
    unit = th.ScaleCostWeight(torch.tensor(1.0, dtype=f64))
    obj = th.Objective(dtype=f64)
    obj.add(th.RobustCostFunction(th.Difference(x, y, unit), th.WelschLoss, log_radius,
                                  name="robust"))
    obj.add(th.Difference(z, t, unit, name="plain"))
    return obj


def _one_iteration(x0: list[float], grad: bool = False, iterations: int = 1):
    """``iterations`` interior-point iterations per element from x = x0 (elementwise);
    returns the iterates x and, with ``grad``, d(sum x)/d log_loss_radius and the
    warnings."""
    b = len(x0)
    layer = th.TheseusLayer(PounceOptimizer(_robust_objective(), max_iterations=iterations,
                                            batch_solve="elementwise"))
    zeros = torch.zeros(b, 1, dtype=torch.float64)
    radius = zeros.clone().requires_grad_(grad)
    inputs = {"x": torch.tensor(x0, dtype=torch.float64)[:, None], "y": zeros,
              "z": zeros + 1.0, "t": zeros, "log_loss_radius": radius}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.set_grad_enabled(grad):
            # the implicit step at the iterate (unroll would differentiate the steps)
            sol, _ = layer.forward(inputs, optimizer_kwargs={"backward_mode": "implicit"})
            if grad:
                sol["x"].sum().backward()
    return sol["x"].detach().flatten(), radius.grad, _degenerate_warnings(caught)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unconverged_iterate_at_an_inflection_gets_a_bounded_gradient():
    """The bench_theseus failure in small: an element stopped by its iteration limit where
    the robust loss's curvature crosses zero (placed there with no iterations left) had
    d x / d log_loss_radius ~ -5e14 and no warning; one deep on the concave side a finite
    but meaningless value. Both now get 0 (x's curvature dropped; z is unaffected by the
    radius) and are named; element 0 keeps exactly the gradient it gets alone."""
    inflection = -1.0 / math.sqrt(2.0)
    x, _, _ = _one_iteration([0.5, 1.5])
    # the first (Gauss-Newton, Theseus' reweighted) step of a lone residual solves it
    assert torch.allclose(x, torch.zeros(2, dtype=x.dtype), rtol=0, atol=1e-14)
    # stopped by the iteration limit (none left) at the inflection and deep on the
    # concave side
    x, grad, msgs = _one_iteration([0.5, inflection, -1.5], grad=True, iterations=0)
    assert abs(x[1] - inflection) < 1e-12 and x[2] < inflection - 0.1
    assert torch.isfinite(grad).all()
    assert grad[1].item() == 0.0 and grad[2].item() == 0.0
    assert len(msgs) == 1 and "batch items [1, 2]" in msgs[0]
    _, alone, alone_msgs = _one_iteration([0.5], grad=True, iterations=0)
    assert not alone_msgs and alone[0, 0] != 0.0
    assert torch.equal(alone[0], grad[0])
