"""The SCS -> POUNCE layout mapping (rust/core/src/cone_layout.rs), one test per cone, end to
end: a problem with only that cone, solved natively, against its known solution and
Clarabel. The structural checks of the mapping (row maps, the power permutation, the PSD
svec against POUNCE's own) are the Rust unit tests in rust/core/tests/cone_layout.rs.
"""

from __future__ import annotations

import numpy as np
import pytest

from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import random_problem_batch
from testing_helpers.reference_solvers import check_against_clarabel


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
