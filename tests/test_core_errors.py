"""Bad input to the core raises a clear error naming the array, batch index or parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pounce_kkt as pk
from testing_helpers.conic_problems import suite_batch


@pytest.fixture(scope="module")
def qp():
    bt = suite_batch("qp", batch=3)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = {k: torch.tensor(v) for k, v in
            {"P": bt.p_values, "q": bt.q, "A": bt.a_values, "b": bt.b}.items()}
    return st, vals


@pytest.mark.parametrize("name", ["P", "q", "A", "b"])
@pytest.mark.parametrize("bad,word", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_values_name_array_and_batch_index(qp, name, bad, word):
    st, vals = qp
    v = {k: t.clone() for k, t in vals.items()}
    v[name][2, 1] = bad
    with pytest.raises(ValueError, match=rf"^{name} contains {word} at batch index 2"):
        pk.conic_solve(st, v["P"], v["q"], v["A"], v["b"])


@pytest.mark.parametrize("name", ["P", "q", "A", "b"])
def test_wrong_length_names_array(qp, name):
    st, vals = qp
    v = dict(vals)
    v[name] = v[name][:, :-1]
    with pytest.raises(ValueError, match=rf"^{name} must have shape"):
        pk.conic_solve(st, v["P"], v["q"], v["A"], v["b"])


def test_disagreeing_batch_sizes(qp):
    st, v = qp
    with pytest.raises(ValueError, match="batch sizes disagree"):
        pk.conic_solve(st, v["P"], v["q"][:2], v["A"], v["b"])


def test_p_presence_must_match_structure(qp):
    st, v = qp
    with pytest.raises(ValueError, match="pass P values"):
        pk.conic_solve(st, None, v["q"], v["A"], v["b"])
    lp = pk.ConicStructure(st.n, st.m, st.a_indptr, st.a_indices, st.cones)
    with pytest.raises(ValueError, match="no P pattern"):
        pk.conic_solve(lp, v["P"], v["q"], v["A"], v["b"])


def test_warm_start_shape(qp):
    st, v = qp
    with pytest.raises(ValueError, match="warm x must have shape"):
        pk.conic_solve(st, v["P"], v["q"], v["A"], v["b"],
                       warm_start=(torch.zeros(3, st.n + 1), torch.zeros(3, st.m), None))


def test_structure_validation():
    cones = {"l": 2}
    with pytest.raises(ValueError, match="a_indptr must have length 3"):
        pk.ConicStructure(2, 2, [0, 1], [0], cones)
    with pytest.raises(ValueError, match="a_indices must lie in"):
        pk.ConicStructure(2, 2, [0, 1, 2], [0, 5], cones)
    with pytest.raises(ValueError, match="strictly increasing"):
        pk.ConicStructure(2, 2, [0, 2, 2], [1, 0], cones)
    with pytest.raises(ValueError, match="a_indices must have length"):
        pk.ConicStructure(2, 2, [0, 1, 3], [0, 1], cones)
    with pytest.raises(ValueError, match="cone dims cover 3 rows but m = 2"):
        pk.ConicStructure(2, 2, [0, 1, 2], [0, 1], {"l": 3})
    with pytest.raises(ValueError, match="both p_indptr and p_indices"):
        pk.ConicStructure(2, 2, [0, 1, 2], [0, 1], cones, p_indptr=[0, 1, 2])


def test_cone_dims_validation():
    with pytest.raises(ValueError, match="unknown cone keys"):
        pk.ConeDims.from_any({"l": 1, "bogus": 2})
    with pytest.raises(ValueError, match="dual exponential"):
        pk.ConeDims.from_any({"ed": 1})
    with pytest.raises(ValueError, match="alphas must lie in"):
        pk.ConeDims.from_any({"p": [1.5]})
    with pytest.raises(ValueError, match="SOC sizes"):
        pk.ConeDims.from_any({"q": [0]})
    with pytest.raises(TypeError, match="cannot read cone dims"):
        pk.ConeDims.from_any(3)
    assert pk.ConeDims.from_any({"f": 2, "l": 1}).z == 2


@pytest.mark.parametrize("kwargs,match", [
    ({"tol": 0.0}, "tol"), ({"tol": float("nan")}, "tol"), ({"max_iter": 0}, "max_iter"),
    ({"time_limit": -1.0}, "time_limit"), ({"backward": "lu"}, "backward"),
    ({"on_failure": "ignore"}, "on_failure"),
])
def test_solve_options_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pk.SolveOptions(**kwargs)


def test_native_limit_psd_with_exp_is_named():
    cones = {"s": [2], "ep": 1}
    m = 6
    # Raised when the structure is built (before any solve), naming both kinds of cone.
    with pytest.raises(ValueError, match=r"PSD cones \(s=\[2\]\) together with exponential"):
        pk.ConicStructure(1, m, [0, m], np.arange(m), cones)


def test_solver_error_fields():
    err = pk.SolverError(4, "time_limit", ["optimal"] * 4 + ["time_limit", "numerical_failure"])
    assert err.batch_index == 4 and err.status == "time_limit"
    assert "batch item 4" in str(err) and "time_limit" in str(err) and "[4, 5]" in str(err)
