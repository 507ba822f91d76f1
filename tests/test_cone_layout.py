"""The SCS -> POUNCE layout mapping (rust/src/cone_layout.rs), one test per cone.

Each conversion is checked twice: structurally (the row map the native side reports) and
end to end (a problem with only that cone, solved natively, against its known solution and
Clarabel).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pounce_kkt import _native
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import random_problem_batch
from testing_helpers.reference_solvers import check_against_clarabel
from testing_helpers.svec import smat, svec


def test_zero_rows_become_equalities():
    lay = _native.cone_layout(5, {"z": 2, "l": 3})
    assert lay["m_eq"] == 2
    assert lay["specs"] == [("nonneg", 3)]
    assert lay["scs_row_of_ineq"] == [2, 3, 4]
    assert lay["class"] == "qp"


def test_nonneg_and_soc_identity():
    lay = _native.cone_layout(1 + 2 + 4 + 3, {"z": 1, "l": 2, "q": [4, 3]})
    assert lay["specs"] == [("nonneg", 2), ("soc", 4), ("soc", 3)]
    assert lay["scs_row_of_ineq"] == list(range(1, 10))
    assert lay["dense_blocks"] == [(3, 4), (7, 3)]
    assert lay["class"] == "conic"


def test_exp_identity():
    lay = _native.cone_layout(6, {"ep": 2})
    assert lay["specs"] == [("exp", 3), ("exp", 3)]
    assert lay["scs_row_of_ineq"] == list(range(6))


def test_power_permutation():
    """SCS (x, y, z): x^a y^(1-a) >= |z|; POUNCE (u, v, w): |u| <= v^a w^(1-a)."""
    lay = _native.cone_layout(1 + 6, {"l": 1, "p": [0.3, 0.7]})
    assert lay["specs"] == [("nonneg", 1), ("power", 0.3), ("power", 0.7)]
    # POUNCE row r reads SCS row scs_row_of_ineq[r]: (u, v, w) = (z, x, y).
    assert lay["scs_row_of_ineq"] == [0, 3, 1, 2, 6, 4, 5]


def test_psd_svec_identity_against_pounce():
    """POUNCE's own svec equals the SCS svec (lower, column-major, sqrt 2)."""
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 5):
        M = rng.standard_normal((k, k))
        M = M + M.T
        ours = svec(M)
        pounce = np.array(_native.pounce_svec(list(M.ravel()), k))
        np.testing.assert_allclose(pounce, ours, rtol=0, atol=1e-15)
        np.testing.assert_allclose(smat(ours, k), M, atol=1e-15)
        assert math.isclose(np.linalg.norm(ours), np.linalg.norm(M), rel_tol=1e-14)
    lay = _native.cone_layout(1 + 6, {"l": 1, "s": [3]})
    assert lay["scs_row_of_ineq"] == list(range(7))
    assert lay["dense_blocks"] == [(1, 6)]


@pytest.mark.parametrize(
    "cones, n, tol",
    [
        ({"z": 3, "l": 4}, 8, 1e-10),
        ({"q": [5]}, 6, 1e-10),
        ({"s": [3]}, 7, 1e-12),
        ({"ep": 2}, 7, 1e-10),
        ({"p": [0.25]}, 4, 1e-10),
    ],
    ids=["zero+nonneg", "soc", "psd", "exp", "power"],
)
def test_single_cone_end_to_end(cones, n, tol):
    bt = random_problem_batch(cones, n, batch=3, density=0.8, seed=11)
    res = bt.solve_native(tol=tol)
    for i, prob in enumerate(bt.problems):
        assert res["status"][i] in ("optimal", "optimal_inaccurate")
        for key, star in (("x", prob.x_star), ("y", prob.y_star), ("s", prob.s_star)):
            assert rel_err(res[key][i], star) < 1e-6, key
        check_against_clarabel(res["x"][i], prob, 1e-6)


def test_power_orientation_known_optimum():
    """max z s.t. (x, y, z) = (2, 0.5, z) in SCS K_a: z* = 2^a 0.5^(1-a)."""
    import scipy.sparse as sp

    a = 0.3
    # Variable t = z; rows: s = b - A t with s = (2, 0.5, t)  ->  A = [0, 0, -1]', b = (2, .5, 0)
    A = sp.csc_matrix((np.array([-1.0]), (np.array([2]), np.array([0]))), shape=(3, 1))
    from testing_helpers.conic_problems import ConicProblem, stack_batch

    # A needs one entry per column at least; rows 0 and 1 are constant.
    prob = ConicProblem(None, np.array([-1.0]), A, np.array([2.0, 0.5, 0.0]), {"p": [a]})
    res = stack_batch([prob]).solve_native(tol=1e-10)
    assert res["status"][0] == "optimal"
    assert abs(res["x"][0][0] - 2**a * 0.5 ** (1 - a)) < 1e-7
