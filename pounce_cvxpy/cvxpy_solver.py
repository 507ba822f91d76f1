"""`POUNCE`: a cvxpy conic solver, so `problem.solve(solver="POUNCE")` works.

It declares SCS's problem format (cone order zero, nonneg, SOC, PSD, exp, power-3D; PSD
rows as the lower triangle, column-major, off-diagonals x sqrt(2); exp cone (x, y, z) with
y exp(x/y) <= z), which is also the core's, and keeps a quadratic objective. cvxpylayers'
`PounceSolver` canonicalises for this solver, so both paths see the same data layout.
The solve itself is one call of the core's forward with a batch of one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cvxpy import settings as s
from cvxpy.constraints import SOC, ExpCone, PowCone3D, SvecPSD
from cvxpy.reductions.solution import Solution, failure_solution
from cvxpy.reductions.solvers.conic_solvers.conic_solver import ConicSolver
from cvxpy.utilities.psd_utils import TriangleKind

from pounce_cvxpy.compat import constraint_duals
from pounce_cvxpy.solver_args import PounceArgs, resolve

# The solver name cvxpy and cvxpylayers know us by (any case is accepted from users).
NAME = "POUNCE"

# The core's statuses (docs/design.md) in cvxpy's words.
STATUS_MAP = {
    "optimal": s.OPTIMAL,
    "optimal_inaccurate": s.OPTIMAL_INACCURATE,
    "primal_infeasible": s.INFEASIBLE,
    "dual_infeasible": s.UNBOUNDED,
    "iteration_limit": s.USER_LIMIT,
    "time_limit": s.USER_LIMIT,
    "numerical_failure": s.SOLVER_ERROR,
}


class POUNCE(ConicSolver):
    """cvxpy interface to POUNCE's conic interior-point method (through pounce_kkt)."""

    MIP_CAPABLE = False
    SUPPORTED_CONSTRAINTS = ConicSolver.SUPPORTED_CONSTRAINTS + [SOC, ExpCone, SvecPSD, PowCone3D]
    REQUIRES_CONSTR = True
    PSD_TRIANGLE_KIND = TriangleKind.LOWER
    PSD_SQRT2_SCALING = True
    EXP_CONE_ORDER = [0, 1, 2]

    def name(self) -> str:
        return NAME

    def import_solver(self) -> None:
        import pounce_kkt  # noqa: F401

    def supports_quad_obj(self) -> bool:
        return True

    def solve_via_data(
        self,
        data: dict[str, Any],
        warm_start: bool,
        verbose: bool,
        solver_opts: dict[str, Any],
        solver_cache: dict | None = None,
    ) -> dict[str, Any]:
        """Solve `min 1/2 x'Px + c'x  s.t.  A x + s = b, s in K` with the core's forward."""
        from pounce_kkt import ConicStructure, conic_forward

        # cvxpy reports each status itself (OPTIMAL_INACCURATE included, with its own warning).
        args = resolve(PounceArgs(core={"on_failure": "nan", "on_inaccurate": "ignore"}),
                       solver_opts)
        A, P = data[s.A], data.get(s.P)
        # cvxpy hands P as the full symmetric matrix, which is what the core reads.
        structure = ConicStructure.from_scipy(A, data[ConicSolver.DIMS], P)
        row = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(1, -1)  # noqa: E731
        warm = None
        if warm_start and solver_cache is not None and self.name() in solver_cache:
            cached = solver_cache[self.name()]
            warm = (row(cached["x"]), row(cached["y"]), row(cached["s"]))
        solution, _ = conic_forward(
            structure,
            None if P is None else row(structure.p_values(P)),
            row(data[s.C]),
            row(structure.a_values(A)),
            row(data[s.B]),
            args.solve_options(),
            warm_start=warm,
        )
        x, y, slack = (t[0].numpy() for t in (solution.x, solution.y, solution.s))
        c = np.asarray(data[s.C], dtype=np.float64)
        value = float(c @ x + (0.5 * x @ (P @ x) if P is not None else 0.0))
        results = {
            "status": STATUS_MAP[solution.status[0]],
            "value": value,
            "x": x,
            "y": y,
            "s": slack,
            "iterations": int(solution.iterations[0]),
            "solve_time": float(solution.solve_time[0]),
        }
        if solver_cache is not None and results["status"] == s.OPTIMAL:
            solver_cache[self.name()] = results
        return results

    def invert(self, solution: dict[str, Any], inverse_data: dict[str, Any]) -> Solution:
        """Map the core's solution back to cvxpy's variables and constraint duals."""
        status = solution["status"]
        attr = {
            s.SOLVE_TIME: solution["solve_time"],
            s.NUM_ITERS: solution["iterations"],
            s.EXTRA_STATS: solution,
        }
        if status not in s.SOLUTION_PRESENT:
            return failure_solution(status, attr)
        zero = inverse_data[ConicSolver.DIMS].zero
        duals = constraint_duals(solution["y"][:zero], inverse_data[self.EQ_CONSTR])
        duals.update(constraint_duals(solution["y"][zero:], inverse_data[self.NEQ_CONSTR]))
        primal = {inverse_data[self.VAR_ID]: solution["x"]}
        return Solution(status, solution["value"] + inverse_data[s.OFFSET], primal, duals, attr)

    def cite(self, data: Any) -> str:
        return "POUNCE interior-point solver (github.com/jkitchin/pounce), via pounce-layers"
