"""The native problem handle (`pounce_kkt._native.ConicProblem`, rust/py/src/problem.rs):
built once per structure (held by `ConicStructure.native`), then solved and differentiated
with values only; and the one cone-dict rule between the two sides (pounce_kkt's ConeDims
validates the user's dict, the native side asserts the canonical dict it writes)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import pounce_kkt as pk
from pounce_kkt import _native
from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import random_problem_batch

I64 = np.int64


def _adjoint_args(bt, res):
    rng = np.random.default_rng(1)
    B, n, m = bt.q.shape[0], bt.n, bt.m
    return dict(h_diag=rng.uniform(0.1, 1.0, (B, m)), h_blocks=np.zeros((B, 0)), x=res["x"],
                y=res["y"], gx=rng.standard_normal((B, n)), gy=rng.standard_normal((B, m)),
                gs=np.zeros((B, m)), statuses_ok=np.ones(B, bool))


def test_a_reused_handle_matches_a_new_one_and_repeats_exactly():
    bt = random_problem_batch({"z": 3, "l": 12}, 10, batch=5, seed=2)
    prob = bt.native_problem()
    assert (prob.n, prob.m, prob.h_diag_len, prob.h_blocks_len) == (10, 15, 15, 0)
    vals = (bt.p_values, bt.a_values, bt.q, bt.b)
    ref = bt.solve_native(tol=1e-10, engine="ipm")  # a new handle
    first = prob.solve(*vals, tol=1e-10, engine="ipm")
    # The workers' factorizations of the first call (the IPM engine: under "auto" the
    # repeated values take the active set, tests/test_qp_engine.py).
    again = prob.solve(*vals, tol=1e-10, engine="ipm")
    for key in ("x", "y", "s"):
        assert rel_err(first[key], ref[key]) < 1e-12
        np.testing.assert_array_equal(again[key], first[key])
    for i, p in enumerate(bt.problems):
        assert rel_err(first["x"][i], p.x_star) < 1e-7
    adj = _adjoint_args(bt, first)
    g_new = bt.native_problem().adjoint(bt.p_values, bt.a_values, **adj)
    g = [prob.adjoint(bt.p_values, bt.a_values, **adj) for _ in range(2)]
    for key in ("dP", "dq", "dA", "db"):
        assert rel_err(g[0][key], g_new[key]) < 1e-12
        np.testing.assert_array_equal(g[1][key], g[0][key])
    assert all(g[0]["solved"])


def test_handle_checks_the_structure_once_and_the_values_per_call():
    bt = random_problem_batch({"l": 6}, 4, batch=2, seed=0)
    bad = bt.a_indices.copy()
    bad[0] = bt.m
    with pytest.raises(ValueError, match="a_indices.*out of range"):
        _native.ConicProblem(bt.n, bt.m, bt.p_indptr, bt.p_indices, bt.a_indptr, bad, bt.cones)
    prob = bt.native_problem()
    with pytest.raises(ValueError, match=r"`a_values` has shape \[2, 1\]"):
        prob.solve(bt.p_values, np.zeros((2, 1)), bt.q, bt.b)
    with pytest.raises(ValueError, match="p_values"):
        prob.solve(None, bt.a_values, bt.q, bt.b)
    with pytest.raises(ValueError, match="backend option"):
        prob.solve(bt.p_values, bt.a_values, bt.q, bt.b, backend={"kkt": "dense"})
    empty = prob.solve(bt.p_values[:0], bt.a_values[:0], bt.q[:0], bt.b[:0])
    assert empty["x"].shape == (0, bt.n) and empty["status"] == []


def test_conic_structure_holds_one_handle_and_copies_without_it():
    bt = random_problem_batch({"z": 1, "l": 5}, 4, batch=3, seed=1)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones, bt.p_indptr,
                           bt.p_indices)
    vals = [torch.tensor(v, requires_grad=True)
            for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    sol = pk.conic_solve(st, *vals, pk.SolveOptions(tol=1e-10, backward="sparse"))
    sol.x.sum().backward()
    handle = st.native
    assert isinstance(handle, _native.ConicProblem) and st.native is handle
    for other in (pickle.loads(pickle.dumps(st)), copy.deepcopy(st)):
        assert "native" not in vars(other)
        again = pk.conic_solve(other, *(v.detach() for v in vals),
                               pk.SolveOptions(tol=1e-10))
        assert other.native is not handle
        assert rel_err(again.x.numpy(), sol.x.detach().numpy()) < 1e-12


def _native_cones(cones, n=1):
    """A ConicProblem with the cone dict `cones` (A: one column, no entries)."""
    m = pk.ConeDims.from_any({k: v for k, v in cones.items() if k not in ("f", "ed")}
                             | ({"z": cones["f"]} if "f" in cones else {})).m
    return _native.ConicProblem(n, m, None, None, np.zeros(n + 1, I64), np.zeros(0, I64),
                                cones)


def test_cone_dict_zero_cone_given_twice():
    """'z' and 'f' together: ConeDims refuses them; the native side (which never sums them)
    refuses 'f', which is not a key of the canonical dict."""
    with pytest.raises(ValueError, match="not both"):
        pk.ConeDims.from_any({"z": 1, "f": 1, "l": 1})
    with pytest.raises(ValueError, match='unknown cone key "f".*ConeDims'):
        _native_cones({"z": 1, "f": 1, "l": 1})
    assert pk.ConeDims.from_any({"f": 2, "l": 1}).to_dict()["z"] == 2


def test_cone_dict_soc_of_size_zero():
    """A SOC of size 0 is refused on both sides (the native side used to skip it)."""
    with pytest.raises(ValueError, match="SOC sizes must be >= 1"):
        pk.ConeDims.from_any({"l": 1, "q": [0]})
    with pytest.raises(ValueError, match="SOC sizes must be >= 1"):
        _native_cones({"l": 1, "q": [0]})
    with pytest.raises(ValueError, match="PSD orders must be >= 1"):
        _native_cones({"l": 1, "s": [0]})


def test_cone_dict_empty_dual_exponential_key():
    """diffcp's 'ed': 0 is read by ConeDims (no cone); the dict it hands to the native side
    has no 'ed', which the native side refuses as not canonical, naming ConeDims."""
    cones = pk.ConeDims.from_any({"l": 2, "ed": 0})
    prob = _native_cones(cones.to_dict())
    assert prob.m == 2
    with pytest.raises(ValueError, match='unknown cone key "ed".*ConeDims'):
        _native_cones({"l": 2, "ed": 0})
