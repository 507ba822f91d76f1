"""Bad input gets a clear error naming the array or Parameter, the batch index and the status.

Complex values (their imaginary part would be dropped by a cast), non-integer index arrays
(a cast would truncate 2.7 to 2), NaN in a cvxpy Parameter, an empty batch, a wrongly
shaped upstream gradient, badly scaled data reported infeasible, and cone combinations
POUNCE cannot solve.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy import diffcp as pounce_diffcp
from pounce_kkt import ConicStructure, conic_forward, conic_solve, conic_vjp

A_BOX = sp.csc_matrix(np.vstack([np.eye(2), -np.eye(2)]))  # -1 <= x <= 1
B_BOX = np.ones(4)
P_EYE = sp.csc_matrix(np.eye(2))


@pytest.fixture(scope="module")
def box():
    return ConicStructure.from_scipy(A_BOX, {"l": 4}, P_EYE)


def _args(structure, **change):
    args = {"P": np.ones(2), "q": np.array([0.3, -0.2]), "A": structure.a_values(A_BOX),
            "b": B_BOX}
    args.update(change)
    return args


# ------------------------------------------------------------------ complex and indices


@pytest.mark.parametrize("name", ["P", "q", "A", "b"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_complex_values_are_rejected_by_name(box, name, kind):
    args = _args(box)
    value = np.asarray(args[name], dtype=np.complex128) + 1j
    args[name] = value if kind == "numpy" else torch.as_tensor(value)
    for fn in (conic_forward, conic_solve):
        with pytest.raises(TypeError, match=rf"^{name} is complex"):
            fn(box, *args.values())


def test_complex_warm_start_is_rejected(box):
    sol, _ = conic_forward(box, *_args(box).values())
    with pytest.raises(TypeError, match="warm y is complex"):
        conic_forward(box, *_args(box).values(),
                      warm_start=(sol.x, sol.y.to(torch.complex128), sol.s))


def test_complex_diffcp_data_is_rejected():
    with pytest.raises(TypeError, match="complex"):
        pounce_diffcp.solve_and_derivative(A_BOX, B_BOX, np.array([0.3, -0.2j]), {"l": 4})


def test_complex_parameter_is_rejected_by_name():
    x, c = cp.Variable(2), cp.Parameter(2, name="cost")
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x) + c @ x), [x >= 0]), [c], [x],
                       solver="pounce")
    with pytest.raises(TypeError, match=r"Parameter 'cost' \(layer parameter 0\) is complex"):
        layer(torch.tensor([1.0 + 2j, 0.5], dtype=torch.complex128))


@pytest.mark.parametrize("field, bad, error", [
    ("a_indptr", [0, 1, 2.7], ValueError), ("a_indices", [0.0, 1.5], ValueError),
    ("a_indices", [0j, 1j], TypeError), ("n", 2.7, ValueError), ("m", "2", TypeError),
])
def test_non_integer_structure_is_rejected_by_name(field, bad, error):
    args = {"n": 2, "m": 2, "a_indptr": [0, 1, 2], "a_indices": [0, 1], "cones": {"l": 2}}
    args[field] = bad
    with pytest.raises(error, match=rf"^{field} must"):
        ConicStructure(**args)


def test_whole_float_indices_are_accepted():
    s = ConicStructure(2, 2, np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0]), {"l": 2})
    assert s.a_indptr.dtype == np.int64 and s.a_indices.tolist() == [0, 1]


# ------------------------------------------------------------------ clear errors (item 8)


@pytest.mark.parametrize("fn", [conic_forward, conic_solve])
def test_empty_batch_is_a_clear_error(box, fn):
    args = _args(box, q=np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"^q has batch size 0 \(an empty batch\)"):
        fn(box, *args.values())


def _two_parameter_layer():
    x = cp.Variable(2)
    c, lo = cp.Parameter(2, name="c"), cp.Parameter(2, name="lower")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) + c @ x), [x >= lo])
    return CvxpyLayer(problem, [c, lo], [x], solver="pounce")


@pytest.mark.parametrize("bad, kind", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_parameter_names_it_and_the_batch_index(bad, kind):
    layer = _two_parameter_layer()
    lower = torch.zeros(4, 2)
    lower[2, 1] = bad
    with pytest.raises(ValueError, match=rf"^Parameter 'lower' \(layer parameter 1\) contains "
                                         rf"{kind} at batch index 2$"):
        layer(torch.ones(2), lower)
    c = torch.ones(2)
    c[0] = bad  # unbatched: named by entry
    with pytest.raises(ValueError, match=rf"^Parameter 'c' \(layer parameter 0\) contains "
                                         rf"{kind} \(entry 0\)"):
        layer(c, lower.nan_to_num(0.0, 0.0, 0.0))


@pytest.mark.parametrize("shape, message", [
    ((2, 3), r"upstream gradient gx must have shape \(2,\) or \(B, 2\); got \(2, 3\)"),
    ((3, 2), r"upstream gradient gx has batch 3, the solution has batch 2"),
])
def test_wrongly_shaped_upstream_gradient_is_named(box, shape, message):
    _, state = conic_forward(box, *_args(box, q=np.array([[0.3, -0.2], [0.1, 0.4]])).values())
    with pytest.raises(ValueError, match=message):
        conic_vjp(state, torch.ones(shape))
    with pytest.raises(ValueError, match="upstream gradient gy"):
        conic_vjp(state, None, torch.ones(2, 5))


def test_failed_solve_of_extremely_scaled_data_hints_at_scaling():
    """a = (c, c), b = c: feasible with solution (0.5, 0.5) at any c; POUNCE's IPM fails at
    1e200 (the QP engine's active-set steps from no rows solve it: one restricted KKT)."""
    x, a, b = cp.Variable(2), cp.Parameter(2), cp.Parameter()
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) - 2 * cp.sum(x)), [a @ x <= b, x >= 0])
    layer = CvxpyLayer(problem, [a, b], [x], solver="pounce")
    scale = torch.tensor([1.0, 1e200], dtype=torch.float64)
    (sol,) = layer(scale[:, None].expand(2, 2), scale)
    assert torch.allclose(sol, torch.full((2, 2), 0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(pounce_cvxpy.LayerSolverError) as err:
        layer(scale[:, None].expand(2, 2), scale, solver_args={"engine": "ipm"})
    message = str(err.value)
    assert err.value.batch_index == 1
    assert f"batch item 1: status {err.value.status!r}" in message
    assert "extremely scaled" in message and "1.0e+200" in message
    # A well-scaled failure (infeasible: x >= 2 and x1 + x2 <= 1) gets no such hint.
    with pytest.raises(pounce_cvxpy.LayerSolverError) as err:
        CvxpyLayer(cp.Problem(cp.Minimize(cp.sum(x)), [x >= b, cp.sum(x) <= 1]), [b], [x],
                   solver="pounce")(torch.tensor(2.0, dtype=torch.float64))
    assert "primal_infeasible" in str(err.value) and "scaled" not in str(err.value)


def test_psd_with_exp_cone_fails_when_the_layer_is_built():
    X, t, c = cp.Variable((2, 2), symmetric=True), cp.Variable(), cp.Parameter()
    problem = cp.Problem(cp.Minimize(cp.trace(X) + t),
                         [X >> 0, X[0, 1] == c, cp.exp(X[0, 0]) <= t])
    with pytest.raises(ValueError, match="cannot solve PSD cones .* together with exponential"):
        CvxpyLayer(problem, [c], [X], solver="pounce")
    with pytest.raises(ValueError, match="cannot solve PSD cones"):
        ConicStructure(2, 6, [0, 0, 0], [], {"s": [2], "p": [0.5]})


def test_diffcp_api_failure_of_extremely_scaled_data_hints_at_scaling():
    c = 1e200
    A = sp.csc_matrix(np.array([[c, c], [-1.0, 0.0], [0.0, -1.0]]))
    args = (A, np.array([c, 0.0, 0.0]), np.array([-2.0, -2.0]), {"l": 3})
    # The QP engine's active-set steps solve it; POUNCE's IPM fails with the hint.
    x = pounce_diffcp.solve_and_derivative(*args, P=sp.csc_matrix(2.0 * np.eye(2)))[0]
    assert np.allclose(x, [0.5, 0.5], rtol=0, atol=1e-12)
    with pytest.raises(pounce_diffcp.SolverError, match="extremely scaled.*1.0e\\+200"):
        pounce_diffcp.solve_and_derivative(*args, P=sp.csc_matrix(2.0 * np.eye(2)),
                                           engine="ipm")
