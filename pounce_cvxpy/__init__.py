"""POUNCE for cvxpy and cvxpylayers.

`import pounce_cvxpy` registers the name "POUNCE" (any case) with cvxpy, so that
`problem.solve(solver="POUNCE")` works, and with cvxpylayers, so that
`CvxpyLayer(problem, parameters, variables, solver="pounce")` uses `PounceSolver`.
See pounce_cvxpy.solver_args for the `solver_args` accepted, and `last_solve_info(layer)`
for the per-item statuses of a layer's last call.
"""

from pounce_cvxpy.cvxpy_solver import POUNCE
from pounce_cvxpy.registration import register
from pounce_cvxpy.solver_interface import LayerSolverError, PounceSolver, last_solve_info

register()

__all__ = ["POUNCE", "LayerSolverError", "PounceSolver", "last_solve_info", "register"]
