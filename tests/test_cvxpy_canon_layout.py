"""pounce_cvxpy.canon_layout against cvxpy's own SCS problem data, and the name hooks."""

from __future__ import annotations

import importlib

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy
from pounce_cvxpy import PounceSolver
from pounce_cvxpy.canon_layout import CanonLayout
from testing_helpers.cvxpy_problems import ALL_CONES, Case, gp


class _Captured(Exception):
    pass


class _CapturingSolver(PounceSolver):
    """Records the (P, q, A, dims) cvxpylayers hands over, then stops the layer."""

    def solve_torch_batch(self, P, q, A, dims, solver_args, needs_grad):
        self.inputs = (P, q, A, dims)
        raise _Captured


def _layer_inputs(case: Case, seed: int):
    solver = _CapturingSolver()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver=solver, gp=case.gp)
    with pytest.raises(_Captured):
        layer(*[torch.tensor(v) for v in case.values(seed)])
    return solver


def _dense(structure, values, which):
    if which == "A":
        idx, ptr, shape = structure.a_indices, structure.a_indptr, (structure.m, structure.n)
    else:
        idx, ptr, shape = structure.p_indices, structure.p_indptr, (structure.n, structure.n)
    return sp.csc_matrix((values.numpy(), idx, ptr), shape=shape).toarray()


CASES = {**ALL_CONES, "gp": gp}


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_core_reproduces_cvxpy_scs_data(name):
    """The core's (P, q, A, b) equal what cvxpy builds for SCS (A x + s = b) at the same values."""
    case = CASES[name]()
    solver = _layer_inputs(case, seed=3)
    P, q, A, dims = solver.inputs
    layout = solver.layout
    P_c, q_c, A_c, b_c = layout.to_core(P, q, A)

    for p, v in zip(case.parameters, case.values(3), strict=True):
        p.value = v
    data, _, inverse = case.problem.get_problem_data(cp.SCS, gp=case.gp)
    st = layout.structure
    assert (st.n, st.m) == data["A"].shape[::-1]
    assert st.cones.to_dict() == {
        "z": dims.zero, "l": dims.nonneg, "q": list(dims.soc), "s": list(dims.psd),
        "ep": dims.exp, "p": list(dims.p3d),
    }
    np.testing.assert_allclose(_dense(st, A_c[0], "A"), data["A"].toarray(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b_c[0].numpy(), data["b"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(q_c[0].numpy(), data["c"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(q[0, -1].item(), inverse[-1][cp.settings.OFFSET], atol=1e-12)
    if "P" in data:
        np.testing.assert_allclose(_dense(st, P_c[0], "P"), data["P"].toarray(), atol=1e-12)
    else:
        assert P_c is None or not torch.any(P_c)


@pytest.mark.parametrize("name", ["qp", "socp", "psd", "exp"])
def test_to_layers_is_the_adjoint_of_to_core(name):
    """<to_core(v), g> == <v, to_layers(g)>: the gradient map is the transpose of the data map."""
    solver = _layer_inputs(CASES[name](), seed=1)
    P, q, A, _ = solver.inputs
    layout = solver.layout
    g = torch.Generator().manual_seed(0)
    B = 3
    v_q = torch.randn((B, q.shape[1]), generator=g, dtype=torch.float64)
    v_A = torch.randn((B, A.shape[1]), generator=g, dtype=torch.float64)
    _, q_c, A_c, b_c = layout.to_core(None, v_q, v_A)
    g_q = torch.randn(q_c.shape, generator=g, dtype=torch.float64)
    g_A = torch.randn(A_c.shape, generator=g, dtype=torch.float64)
    g_b = torch.randn(b_c.shape, generator=g, dtype=torch.float64)
    _, d_q, d_A = layout.to_layers(None, g_q, g_A, g_b)
    lhs = (q_c * g_q).sum() + (A_c * g_A).sum() + (b_c * g_b).sum()
    rhs = (v_q * d_q).sum() + (v_A * d_A).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert torch.all(d_q[:, -1] == 0)


def test_layout_rejects_wrong_widths():
    solver = _layer_inputs(CASES["qp"](), seed=0)
    P, q, A, _ = solver.inputs
    with pytest.raises(ValueError, match="q has"):
        solver.layout.to_core(P, q[:, :-1], A)
    with pytest.raises(ValueError, match="A has"):
        solver.layout.to_core(P, q, A[:, 1:])


@pytest.mark.parametrize("name", ["pounce", "POUNCE", "Pounce"])
def test_string_selects_pounce_solver(name):
    case = CASES["qp"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver=name,
                       solver_args={"tol": 1e-10})
    assert isinstance(layer.ctx.solver, PounceSolver)
    assert isinstance(layer.ctx.solver.layout, CanonLayout)


def test_hooks_are_idempotent_and_leave_other_solvers_working():
    import cvxpylayers.utils.parse_args as pa
    from cvxpy.reductions.solvers import defines

    hooked = pa.parse_args
    registered = defines.SOLVER_MAP_CONIC["POUNCE"]
    importlib.reload(pounce_cvxpy)
    pounce_cvxpy.register()
    assert pa.parse_args is hooked
    assert defines.SOLVER_MAP_CONIC["POUNCE"] is registered
    assert "POUNCE" in cp.installed_solvers()

    case = CASES["qp"]()
    values = [torch.tensor(v) for v in case.values(0)]
    diffcp_layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    assert diffcp_layer.ctx.solver == "DIFFCP"
    (x,) = diffcp_layer(*values)
    for p, v in zip(case.parameters, case.values(0), strict=True):
        p.value = v
    case.problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(x.numpy(), case.variables[0].value, atol=1e-3)
    with pytest.raises(cp.error.SolverError, match="NOT_A_SOLVER is not installed"):
        CvxpyLayer(case.problem, case.parameters, case.variables, solver="NOT_A_SOLVER")
