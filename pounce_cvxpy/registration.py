"""Make the name "POUNCE" known to cvxpy and to cvxpylayers.

- cvxpy: a string `solver=` is looked up in
  `cvxpy.reductions.solvers.defines.SOLVER_MAP_CONIC`, so one entry there makes
  `problem.solve(solver="POUNCE")` and `get_problem_data("POUNCE")` work. (Passing the
  instance, `problem.solve(solver=pounce_cvxpy.POUNCE())`, is cvxpy's documented custom
  solver route and works without the entry.)
- cvxpylayers 1.2 has no solver registry: a string goes through
  `cvxpylayers.utils.parse_args.parse_args` to `interfaces.get_solver_ctx`, which rejects
  unknown names. Its torch, jax and mlx layers call `parse_args` through the module
  attribute, so wrapping that one function turns "pounce"/"POUNCE" into a `PounceSolver`
  (built from the layer's `solver_args`) and leaves every other solver untouched.

Both steps are idempotent: importing or reloading `pounce_cvxpy` twice changes nothing.
The writes into cvxpy and cvxpylayers themselves are in pounce_cvxpy/compat.py.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from pounce_cvxpy.compat import install_parse_args_hook, register_conic_solver
from pounce_cvxpy.cvxpy_solver import NAME, POUNCE
from pounce_cvxpy.solver_interface import PounceSolver

_HOOK_MARK = "__pounce_cvxpy_hook__"


def is_pounce_name(solver: Any) -> bool:
    """True for the strings "pounce" and "POUNCE" (any case)."""
    return isinstance(solver, str) and solver.upper() == NAME


def register_cvxpy_solver() -> None:
    """Add the POUNCE conic solver to cvxpy's name table (once)."""
    register_conic_solver(NAME, POUNCE())


def _wrap_parse_args(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def parse_args(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        if is_pounce_name(bound.arguments.get("solver")) and (
            bound.arguments.get("custom_solver") is None
        ):
            solver_args = bound.arguments.get("solver_args") or {}
            bound.arguments["custom_solver"] = PounceSolver(**solver_args)
            bound.arguments["solver"] = None
        return original(*bound.args, **bound.kwargs)

    setattr(parse_args, _HOOK_MARK, True)
    return parse_args


def install_layer_hook() -> None:
    """Wrap cvxpylayers' `parse_args` so the string "pounce" selects `PounceSolver` (once)."""
    install_parse_args_hook(_wrap_parse_args, _HOOK_MARK)


def register() -> None:
    """Register "POUNCE" with cvxpy and cvxpylayers; safe to call any number of times."""
    register_cvxpy_solver()
    install_layer_hook()
