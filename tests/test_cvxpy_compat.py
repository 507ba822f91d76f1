"""pounce_cvxpy/compat.py: the one place that reads or writes cvxpy's and cvxpylayers'
internals, checked against the installed versions."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy import compat
from pounce_cvxpy.solver_interface import PounceSolver
from pounce_kkt import ConeDims


def test_installed_versions_are_the_supported_ones():
    """An upgrade of cvxpy or cvxpylayers fails here until compat.py is checked against it."""
    assert compat.unsupported_versions(compat._installed_versions()) == []


def test_other_versions_are_named():
    found = {"cvxpy": "2.0.1", "cvxpylayers": "1.2.0"}
    assert compat.unsupported_versions(found) == ["cvxpy 2.0.1"]


@pytest.mark.parametrize("quadratic", [False, True])
def test_layer_problem_reads_the_layers_canonical_problem(quadratic):
    x = cp.Variable(3)
    c = cp.Parameter(3)
    b = cp.Parameter(2)
    G = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
    objective = c @ x + (cp.sum_squares(x) if quadratic else 0)
    problem = cp.Problem(cp.Minimize(objective), [G @ x <= b, x >= -1, x <= 1])
    layer = CvxpyLayer(problem, [c, b], [x], solver="pounce")
    solver = compat.layer_solver(layer)
    assert isinstance(solver, PounceSolver)
    assert compat.layer_solver(torch.nn.Linear(1, 1)) is None
    lp = compat.layer_problem(layer.ctx)
    assert lp.parameters == (c, b) and lp.gp is False
    assert (lp.p_index is not None) == quadratic
    indices, indptr, (m, n1) = lp.a_index
    assert n1 == lp.n + 1 == solver.layout.structure.n + 1
    assert m == solver.layout.structure.m == lp.cone_dims.zero + lp.cone_dims.nonneg
    (sol,) = layer(torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert torch.isfinite(sol).all()


def test_scs_cone_dict_is_cvxpys():
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= 0, cp.norm(x) <= 2, x[0] == 1])
    data = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})[0]
    dims = data["dims"]
    d = compat.scs_cone_dict(dims)
    assert (d["z"], d["l"], d["q"]) == (1, dims.nonneg, [4]) and dims.nonneg >= 3
    assert ConeDims.from_any(d).m == data["A"].shape[0]
