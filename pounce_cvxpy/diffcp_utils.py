"""`pounce_cvxpy.diffcp.utils`: diffcp's helpers for building problem data from cvxpy.

Available as `diffcp.utils` after `from pounce_cvxpy import diffcp`, so scripts that call
`diffcp.utils.scs_data_from_cvxpy_problem(problem)` run without diffcp installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp


def scs_data_from_cvxpy_problem(problem: Any) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray,
                                                       dict[str, Any]]:
    """(A, b, c, cone_dict) of a cvxpy problem in SCS form (A x + s = b, s in K).

    The cone dict is cvxpy's SCS dict (keys z, l, q, ep, s, p, pnd). The data are built
    without cvxpy's quadratic-objective path (`use_quad_obj=False`), so a quadratic
    objective arrives as SOC rows: diffcp's own version asks for SCS's default data and
    drops their P, which silently changes a QP's objective.
    """
    import cvxpy as cp

    from pounce_cvxpy.compat import scs_cone_dict

    data = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})[0]
    return data["A"], data["b"], data["c"], scs_cone_dict(data["dims"])


def get_random_like(A: sp.spmatrix, randomness: Callable[[int], np.ndarray]) -> sp.csc_matrix:
    """A CSC matrix with A's sparsity pattern and values `randomness(A.nnz)`."""
    A = sp.csc_matrix(A)
    return sp.csc_matrix((np.asarray(randomness(A.nnz), dtype=np.float64), A.indices.copy(),
                          A.indptr.copy()), shape=A.shape)
