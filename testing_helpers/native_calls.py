"""Native conic calls from one keyword dict holding a structure and its values.

A dict ``d`` with the structure keys ``n, m, p_indptr, p_indices, a_indptr, a_indices,
cones`` and the value arrays of ``ConicProblem.solve`` (``p_values, a_values, q, b``) or
``ConicProblem.adjoint`` (those two and ``h_diag, h_blocks, x, y, gx, gy, gs,
statuses_ok``) is split into a ``pounce_kkt._native.ConicProblem`` and the call's values.
"""

from __future__ import annotations

from pounce_kkt import _native

STRUCTURE_KEYS = ("n", "m", "p_indptr", "p_indices", "a_indptr", "a_indices", "cones")


def native_problem(d: dict) -> _native.ConicProblem:
    """A new handle of ``d``'s structure."""
    return _native.ConicProblem(*(d[k] for k in STRUCTURE_KEYS))


def value_args(d: dict) -> dict:
    """``d`` without its structure keys."""
    return {k: v for k, v in d.items() if k not in STRUCTURE_KEYS}


def native_solve(d: dict, **kw) -> dict:
    """``ConicProblem.solve`` of ``d`` on a new handle."""
    return native_problem(d).solve(**value_args(d), **kw)


def native_adjoint(d: dict, **kw) -> dict:
    """``ConicProblem.adjoint`` of ``d`` on a new handle."""
    return native_problem(d).adjoint(**value_args(d), **kw)
