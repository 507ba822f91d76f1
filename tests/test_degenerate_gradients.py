"""Gradients at non-unique solutions are bounded, documented and announced.

At a non-unique solution the derivative of the solution map does not exist and the KKT
adjoint system is singular; the regularised solve used to return +-3e10. The documented
choice (pounce_kkt/singular_kkt.py) is the minimum-norm least-squares solution of the
adjoint system. The reference here is that formula computed independently in numpy on the
limit system of the active set (inactive rows drop out, v = 0 there)::

    [[P, A_act'], [A_act, 0]] [u; v_act] = [gx; 0],   [u; v_act] = pinv(...) [gx; 0]
    grad_q = -u,  grad_b = v,  grad_A[i, j] = -(y_i u_j + v_i x_j),
    grad_P[i, j] = -(u_i x_j + u_j x_i) / 2

Cases: an LP optimal along an edge and a QP whose P is singular along the optimal set,
each batched with a regular item (unique solution: its gradient is the plain inverse,
and it must not be named in the warning), on both backward paths and through CvxpyLayer.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_kkt import ConicStructure, SolveOptions, conic_forward, conic_solve, conic_vjp
from pounce_kkt.errors import DegenerateGradientWarning

W = np.array([1.0, -2.0])  # upstream gradient of x

# LP: min q'x s.t. x1 + x2 >= 1, x >= 0, as A x + s = b. q = (1, 1): the edge x1 + x2 = 1
# is optimal (the solve returns its centre (0.5, 0.5)); q = (1, 2): the vertex (1, 0).
LP_A = np.array([[-1.0, -1.0], [-1.0, 0.0], [0.0, -1.0]])
LP_B = np.array([-1.0, 0.0, 0.0])
LP_Q = np.array([[1.0, 1.0], [1.0, 2.0]])
# QP: min 1/2 x'Px + q'x in the box -5 <= x <= 5 (no constraint active). Item 0:
# P = [[1, 1], [1, 1]] (singular), q = (-1, -1): the line x1 + x2 = 1 is optimal. Item 1:
# P + I, q = (-1, 0): a unique solution.
QP_A = np.vstack([np.eye(2), -np.eye(2)])
QP_B = np.full(4, 5.0)


def _reference(P, A, x, y, active):
    """numpy: min-norm gradients on the active-set limit system (module docstring)."""
    n = A.shape[1]
    Aa = A[active]
    K = np.block([[P, Aa.T], [Aa, np.zeros((len(active), len(active)))]])
    sol = np.linalg.pinv(K) @ np.concatenate([W, np.zeros(len(active))])
    u, v = sol[:n], np.zeros(A.shape[0])
    v[active] = sol[n:]
    dA = -(np.outer(y, u) + np.outer(v, x))
    dP = -0.5 * (np.outer(u, x) + np.outer(x, u))
    return {"q": -u, "b": v, "A": dA, "P": dP}


def _values(M, structure_rows_cols):
    rows, cols = structure_rows_cols
    return M[rows.numpy(), cols.numpy()]


@pytest.mark.parametrize("backward", ["dense", "sparse"])
@pytest.mark.parametrize("api", ["conic_solve", "conic_vjp"])
def test_lp_along_an_edge(backward, api):
    structure = ConicStructure.from_scipy(sp.csc_matrix(LP_A), {"l": 3})
    a_vals = torch.tensor(structure.a_values(sp.csc_matrix(LP_A)))
    q = torch.tensor(LP_Q, requires_grad=True)
    A = a_vals.expand(2, -1).clone().requires_grad_(True)
    b = torch.tensor(LP_B).expand(2, -1).clone().requires_grad_(True)
    options = SolveOptions(backward=backward)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if api == "conic_solve":
            sol = conic_solve(structure, None, q, A, b, options)
            (sol.x * torch.tensor(W)).sum().backward()
            grads = {"q": q.grad, "A": A.grad, "b": b.grad}
        else:
            sol, state = conic_forward(structure, None, q, A, b, options)
            _, dq, dA, db = conic_vjp(state, torch.tensor(W).expand(2, 2))
            grads = {"q": dq, "A": dA, "b": db}
    ours = [w for w in record if issubclass(w.category, DegenerateGradientWarning)]
    assert len(ours) == 1 and "batch item(s) [0]" in str(ours[0].message)
    assert ours[0].filename == __file__
    x, y = sol.x.detach().numpy(), sol.y.detach().numpy()
    np.testing.assert_allclose(x, [[0.5, 0.5], [1.0, 0.0]], atol=1e-6)
    for i, active in ((0, [0]), (1, [0, 2])):
        ref = _reference(np.zeros((2, 2)), LP_A, x[i], y[i], active)
        np.testing.assert_allclose(grads["q"][i].numpy(), ref["q"], atol=1e-6)
        np.testing.assert_allclose(grads["b"][i].numpy(), ref["b"], atol=1e-6)
        np.testing.assert_allclose(grads["A"][i].numpy(), _values(ref["A"], structure.a_entries),
                                   atol=1e-6)
    assert float(max(g.abs().max() for g in grads.values())) < 10


@pytest.mark.parametrize("backward", ["dense", "sparse"])
def test_qp_with_singular_p(backward):
    structure = ConicStructure.from_scipy(sp.csc_matrix(QP_A), {"l": 4},
                                          sp.csc_matrix(np.ones((2, 2))))
    P_mats = [np.ones((2, 2)), np.ones((2, 2)) + np.eye(2)]  # singular, regular
    P = torch.tensor(np.stack([_values(M, structure.p_entries) for M in P_mats]),
                     requires_grad=True)
    q = torch.tensor([[-1.0, -1.0], [-1.0, 0.0]], requires_grad=True)
    A = torch.tensor(structure.a_values(sp.csc_matrix(QP_A)))
    b = torch.tensor(QP_B).expand(2, -1).clone().requires_grad_(True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sol = conic_solve(structure, P, q, A, b, SolveOptions(backward=backward))
        (sol.x * torch.tensor(W)).sum().backward()
    ours = [w for w in record if issubclass(w.category, DegenerateGradientWarning)]
    assert len(ours) == 1 and "batch item(s) [0]" in str(ours[0].message)
    x, y = sol.x.detach().numpy(), sol.y.detach().numpy()
    for i in range(2):
        ref = _reference(P_mats[i], QP_A, x[i], y[i], [])
        np.testing.assert_allclose(q.grad[i].numpy(), ref["q"], atol=1e-6)
        np.testing.assert_allclose(b.grad[i].numpy(), ref["b"], atol=1e-6)
        np.testing.assert_allclose(P.grad[i].numpy(), _values(ref["P"], structure.p_entries),
                                   atol=1e-6)
    # The closed form of item 0: u = pinv(P) W = (W1 + W2)/4 (1, 1).
    np.testing.assert_allclose(q.grad[0].numpy(), [0.25, 0.25], atol=1e-6)


def test_layer_gradient_at_an_edge_is_bounded_and_announced():
    x, c = cp.Variable(2), cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(c @ x), [cp.sum(x) >= 1, x >= 0]), [c], [x],
                       solver="pounce")
    c_t = torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (x_t,) = layer(c_t)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        (x_t * torch.tensor(W)).sum().backward()
    ours = [w for w in record if issubclass(w.category, DegenerateGradientWarning)]
    assert len(ours) == 1 and "batch item(s) [0]" in str(ours[0].message)
    assert ours[0].filename == __file__
    # d x / d c is zero at the vertex and the minimum-norm choice (0) along the edge.
    np.testing.assert_allclose(c_t.grad.numpy(), 0.0, atol=1e-6)
