"""Items solved only to "optimal_inaccurate" are never silent (on_inaccurate).

The trigger is real (no mocks): min |x|^2 - 2 sum(x) s.t. a'x <= b, x >= 0 with a = (c, c)
and b = c. The solution is (0.5, 0.5) at any scale c (strictly complementary: the first
constraint is active with a positive multiplier); at c = 1e150 POUNCE's IPM returns a point
far from it as "optimal_inaccurate". The QP engine's active-set steps solve it exactly (one
restricted KKT, tests/test_clear_errors.py), so every solve here asks for the IPM
(`engine="ipm"`, the same option on every path). Batches mix such an item with well-scaled
ones (c = 1). The core (conic_forward, conic_solve), the diffcp API and CvxpyLayer are each
checked for the warning (category, the items and residuals it names, attributed to this
file), "raise" (a SolverError naming the item and status), "ignore" (silence) and the
per-item statuses readable afterwards. Residuals are checked against the same formula evaluated
independently here with scipy.
"""

from __future__ import annotations

import re
import warnings

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy
from pounce_cvxpy import diffcp as pounce_diffcp
from pounce_kkt import ConicStructure, SolveOptions, SolverError, conic_forward, conic_solve
from pounce_kkt.errors import InaccurateSolutionWarning

SCALES = (1.0, 1e150, 1.0)  # item 1 ends "optimal_inaccurate"
P = sp.csc_matrix(2.0 * np.eye(2))
Q = np.array([-2.0, -2.0])
CONES = {"l": 3}
IPM = {"engine": "ipm"}


def _data(c: float) -> tuple[sp.csc_matrix, np.ndarray]:
    """A and b of the scaled problem in the form A x + s = b, s >= 0."""
    return sp.csc_matrix(np.array([[c, c], [-1.0, 0.0], [0.0, -1.0]])), np.array([c, 0.0, 0.0])


@pytest.fixture(scope="module")
def scaled():
    A0, _ = _data(1.0)
    structure = ConicStructure.from_scipy(A0, CONES, P)
    A = np.stack([structure.a_values(_data(c)[0]) for c in SCALES])
    b = np.stack([_data(c)[1] for c in SCALES])
    return structure, A, b


def _solve(scaled, fn=conic_forward, **options):
    structure, A, b = scaled
    out = fn(structure, structure.p_values(P), Q, A, b, SolveOptions(**IPM, **options))
    return out[0] if isinstance(out, tuple) else out


def _reference_residual(c, x, y, s) -> float:
    """The relative KKT residual of pounce_kkt/accuracy.py's docstring, from scipy."""
    A, b = _data(c)
    inf = lambda v: float(np.abs(v).max())  # noqa: E731
    ax, aty, px = A @ x, A.T @ y, P @ x
    primal = inf(ax + s - b) / (1 + max(inf(ax), inf(s), inf(b)))
    dual = inf(px + Q + aty) / (1 + max(inf(px), inf(Q), inf(aty)))
    p_obj, d_obj = 0.5 * x @ px + Q @ x, -0.5 * x @ px - b @ y
    return max(primal, dual, abs(p_obj - d_obj) / (1 + max(abs(p_obj), abs(d_obj))))


def _one_warning(record) -> warnings.WarningMessage:
    ours = [w for w in record if issubclass(w.category, InaccurateSolutionWarning)]
    assert len(ours) == 1, [str(w.message) for w in record]
    assert ours[0].filename == __file__, f"attributed to {ours[0].filename}:{ours[0].lineno}"
    return ours[0]


@pytest.mark.parametrize("fn", [conic_forward, conic_solve], ids=["forward", "solve"])
def test_core_warns_with_items_and_residuals(scaled, fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sol = _solve(scaled, fn)
    assert sol.status == ["optimal", "optimal_inaccurate", "optimal"]
    message = str(_one_warning(record).message)
    assert "'optimal_inaccurate'" in message
    assert [int(i) for i in re.findall(r"(\d+) \(residual", message)] == [1]
    x, y, s = (t[1].detach().numpy() for t in (sol.x, sol.y, sol.s))
    got = float(sol.residual[1])
    assert got == pytest.approx(_reference_residual(SCALES[1], x, y, s), rel=1e-9)
    assert got > 1e-3  # the point is far from (0.5, 0.5) and the residual says so
    assert f"1 (residual {got:.1e})" in message
    assert bool(sol.residual[[0, 2]].isnan().all())
    np.testing.assert_allclose(sol.x[[0, 2]].detach().numpy(), 0.5, atol=1e-7)
    assert sol.info.inaccurate == [1] and sol.info.failed == []


def test_core_raise_and_ignore(scaled):
    with pytest.raises(SolverError, match=r"batch item\(s\) 1 \(residual") as err:
        _solve(scaled, on_inaccurate="raise")
    assert err.value.batch_index == 1 and err.value.status == "optimal_inaccurate"
    assert err.value.statuses == ["optimal", "optimal_inaccurate", "optimal"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = _solve(scaled, on_inaccurate="ignore")
    assert sol.status == ["optimal", "optimal_inaccurate", "optimal"]


def test_core_accurate_solve_is_silent(scaled):
    structure, A, b = scaled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol, _ = conic_forward(structure, structure.p_values(P), Q, A[[0, 2]], b[[0, 2]])
    assert sol.status == ["optimal"] * 2 and bool(sol.residual.isnan().all())


def test_on_inaccurate_is_checked():
    with pytest.raises(ValueError, match="on_inaccurate"):
        SolveOptions(on_inaccurate="sometimes")


def _scaled_layer(**solver_args):
    x, a, b = cp.Variable(2), cp.Parameter(2), cp.Parameter()
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) - 2 * cp.sum(x)), [a @ x <= b, x >= 0])
    return CvxpyLayer(problem, [a, b], [x], solver="pounce", solver_args={**IPM, **solver_args})


LAYER_SCALES = torch.tensor(SCALES, dtype=torch.float64)


def test_layer_warns_and_reports_statuses():
    layer = _scaled_layer()
    a, b = LAYER_SCALES[:, None].expand(3, 2).clone(), LAYER_SCALES.clone()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        (x,) = layer(a, b)
    message = str(_one_warning(record).message)
    info = pounce_cvxpy.last_solve_info(layer)
    assert info.status == ["optimal", "optimal_inaccurate", "optimal"]
    assert info.inaccurate == [1]
    assert "batch item(s) 1 (residual" in message and "0 (residual" not in message
    # The inaccurate point is far from (0.5, 0.5); its residual says so.
    assert float(info.residual[1]) > 1e-3
    assert bool(info.residual[[0, 2]].isnan().all())
    np.testing.assert_allclose(x[[0, 2]].numpy(), 0.5, atol=1e-7)


def test_layer_raise_and_ignore():
    a, b = LAYER_SCALES[:, None].expand(3, 2).clone(), LAYER_SCALES.clone()
    with pytest.raises(pounce_cvxpy.LayerSolverError, match="optimal_inaccurate") as err:
        _scaled_layer(on_inaccurate="raise")(a, b)
    assert err.value.batch_index == 1 and err.value.status == "optimal_inaccurate"
    layer = _scaled_layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(a, b, solver_args={**IPM, "on_inaccurate": "ignore"})
    assert pounce_cvxpy.last_solve_info(layer).inaccurate == [1]


def test_last_solve_info_needs_a_pounce_layer():
    with pytest.raises(TypeError, match="solver='pounce'"):
        pounce_cvxpy.last_solve_info(torch.nn.Linear(1, 1))


def test_diffcp_api_warns_and_raises():
    A, b = _data(SCALES[1])
    upper = sp.triu(P).tocsc()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pounce_diffcp.solve_and_derivative(A, b, Q, CONES, P=upper, **IPM)
    assert "0 (residual" in str(_one_warning(record).message)
    with pytest.raises(SolverError, match="optimal_inaccurate"):
        pounce_diffcp.solve_and_derivative(A, b, Q, CONES, P=upper, on_inaccurate="raise", **IPM)


def test_diffcp_batch_names_its_own_item_indices():
    """Items of another structure are solved by another core call; the warning still uses
    the batch's numbering (the inaccurate item is 1, the first of its own group)."""
    A, b = _data(SCALES[1])
    other = sp.csc_matrix(-np.eye(2))  # x >= 0 only: a different structure
    upper = sp.triu(P).tocsc()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pounce_diffcp.solve_and_derivative_batch(
            [other, A], [np.zeros(2), b], [Q, Q], [{"l": 2}, CONES], Ps=[upper, upper], **IPM)
    message = str(_one_warning(record).message)
    assert [int(i) for i in re.findall(r"(\d+) \(residual", message)] == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pounce_diffcp.solve_and_derivative(A, b, Q, CONES, P=upper, on_inaccurate="ignore", **IPM)


def test_cvxpy_solve_reports_inaccurate_through_cvxpy():
    """problem.solve(solver="POUNCE") hands the status to cvxpy, which warns itself."""
    x = cp.Variable(2)
    A, b = _data(SCALES[1])
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) - 2 * cp.sum(x)), [A @ x <= b])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        problem.solve(solver="POUNCE", **IPM)
    assert problem.status == cp.OPTIMAL_INACCURATE
    assert not [w for w in record if issubclass(w.category, InaccurateSolutionWarning)]
    assert any("inaccurate" in str(w.message) for w in record)
