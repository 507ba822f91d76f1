"""Every use of cvxpy and cvxpylayers internals by pounce_cvxpy, in one place, checked
against the installed versions.

Written against cvxpy 1.9 and cvxpylayers 1.2 (docs/design.md's conventions were measured
on cvxpy 1.9.3 and cvxpylayers 1.2.0). Another version warns once at import; each function
below names the internal it reads or writes, so an upgrade is checked here and in
tests/test_cvxpy_*.py. diffcp is used only through its public API (``SolverError``).

- :func:`register_conic_solver`: writes ``cvxpy.reductions.solvers.defines.SOLVER_MAP_CONIC``
  (cvxpy's table of solver names; cvxpy has no registration API).
- :func:`install_parse_args_hook`: replaces the module attribute
  ``cvxpylayers.utils.parse_args.parse_args`` (cvxpylayers has no solver registry; its torch,
  jax and mlx layers call that function through the module attribute).
- :func:`layer_problem`: reads the ``LayersContext`` cvxpylayers hands to
  ``SolverInterface.setup``: ``reduced_A.problem_data_index``, ``reduced_P.reduced_mat`` /
  ``problem_data_index``, ``q``, ``cone_dims``, ``parameters``, ``gp``.
- :func:`layer_solver`: ``CvxpyLayer.ctx.solver`` (the solver a layer was built with).
- :func:`scs_cone_dict`: cvxpy's ``scs_conif.dims_to_solver_dict`` (cone dims to SCS's dict).
- :func:`constraint_duals`: cvxpy's ``reductions.solvers.utilities.get_dual_values`` /
  ``extract_dual_value`` (a solver's dual vector split over cvxpy's constraints, as cvxpy's
  own conic interfaces do it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cvxpy

__all__ = [
    "SUPPORTED_VERSIONS", "LayerProblem", "constraint_duals", "install_parse_args_hook",
    "layer_problem",
    "layer_solver", "register_conic_solver", "scs_cone_dict", "unsupported_versions",
]

SUPPORTED_VERSIONS: dict[str, tuple[str, ...]] = {"cvxpy": ("1.9.",), "cvxpylayers": ("1.2.",)}


def _installed_versions() -> dict[str, str]:
    try:
        import cvxpylayers
    except ImportError:  # the layer pieces are then unused
        layers = None
    else:
        layers = getattr(cvxpylayers, "__version__", "unknown")
    found = {"cvxpy": getattr(cvxpy, "__version__", "unknown")}
    if layers is not None:
        found["cvxpylayers"] = layers
    return found


def unsupported_versions(found: dict[str, str]) -> list[str]:
    """``"package version"`` for each of ``found`` (package -> version) outside
    SUPPORTED_VERSIONS."""
    return [f"{pkg} {ver}" for pkg, ver in found.items()
            if not ver.startswith(SUPPORTED_VERSIONS[pkg])]


_UNSUPPORTED = unsupported_versions(_installed_versions())
if _UNSUPPORTED:
    warnings.warn(
        f"pounce_cvxpy was written against {SUPPORTED_VERSIONS}; found "
        f"{', '.join(_UNSUPPORTED)}. Its use of their internals is in pounce_cvxpy/compat.py.",
        stacklevel=2,
    )


def register_conic_solver(name: str, solver: Any) -> None:
    """Make ``solver=name`` resolve to ``solver`` in cvxpy (kept if already registered)."""
    from cvxpy.reductions.solvers import defines

    if not isinstance(defines.SOLVER_MAP_CONIC.get(name), type(solver)):
        defines.SOLVER_MAP_CONIC[name] = solver


def install_parse_args_hook(wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
                            mark: str) -> None:
    """Replace cvxpylayers' ``parse_args`` by ``wrap(parse_args)``, once: a function carrying
    the attribute ``mark`` is taken to be the hook already."""
    import cvxpylayers.utils.parse_args as pa

    if not getattr(pa.parse_args, mark, False):
        pa.parse_args = wrap(pa.parse_args)


@dataclass(frozen=True)
class LayerProblem:
    """What a ``SolverInterface`` needs of a layer's canonical problem.

    a_index: ``(indices, indptr, shape)`` of ``[A_c | b]`` (m x (n+1)), or None when there
    are no constraints; p_index: the same for the full symmetric P, None without a quadratic
    objective; n: the number of variables; cone_dims: cvxpy's ConeDims; parameters: the
    layer's cvxpy Parameters in call order; gp: whether the layer was built with gp=True.
    """

    a_index: Any
    p_index: Any
    n: int
    cone_dims: Any
    parameters: tuple
    gp: bool


def layer_problem(ctx: Any) -> LayerProblem:
    """Read the ``LayersContext`` that cvxpylayers passes to ``SolverInterface.setup``."""
    reduced_p = ctx.reduced_P
    has_p = getattr(reduced_p, "reduced_mat", None) is not None
    return LayerProblem(
        a_index=ctx.reduced_A.problem_data_index,
        p_index=reduced_p.problem_data_index if has_p else None,
        n=ctx.q.shape[0] - 1,
        cone_dims=ctx.cone_dims,
        parameters=tuple(ctx.parameters),
        gp=bool(getattr(ctx, "gp", False)),
    )


def layer_solver(layer: Any) -> Any:
    """The solver a ``CvxpyLayer`` was built with (None for anything else)."""
    return getattr(getattr(layer, "ctx", None), "solver", None)


def scs_cone_dict(dims: Any) -> dict[str, Any]:
    """cvxpy's cone dims as SCS's cone dict (keys z, l, q, ep, s, p, pnd)."""
    from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

    return dims_to_solver_dict(dims)


def constraint_duals(y: Any, constraints: Any) -> dict:
    """cvxpy's constraint id -> dual value for the dual vector ``y`` over ``constraints``
    (in row order), as cvxpy's conic solver interfaces split it."""
    from cvxpy.reductions.solvers import utilities

    return utilities.get_dual_values(y, utilities.extract_dual_value, constraints)
