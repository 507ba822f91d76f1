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
from pounce_kkt import ConicStructure, conic_forward, conic_solve

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
