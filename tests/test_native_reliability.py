"""The native entry points never abort, never panic into Python, and refuse what they cannot
solve correctly (issue 11: item 6, item 5's non-convex P and its input types, NaN bounds).

- Sizes are validated with overflow checks before anything is allocated from them: `m =
  2**40` used to abort the process (an allocation failure), cone counts whose row total
  overflowed passed the `rows == m` check, and five inputs raised `PanicException`. The
  size cases run in a subprocess under an address-space limit, so a regression fails
  instead of taking the machine's memory or the test process down.
- A Rust panic becomes a `RuntimeError` (never `pyo3_runtime.PanicException`, a
  `BaseException`); one item's panic fails that item and no other. Panics are injected with
  the `POUNCE_LAYERS_TEST_PANIC` hook (rust/py/src/panic_guard.rs).
- An indefinite P is reported (native status "nonconvex"; the core raises ValueError naming
  P and the batch index) instead of "optimal" at a point that is no minimum.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from child_process import run_child

from pounce_kkt import ConicStructure, SolveOptions, _native, conic_forward, conic_solve
from testing_helpers.native_calls import native_problem, native_solve, value_args

ROOT = Path(__file__).resolve().parents[1]
I64 = np.int64


def box_qp(B: int = 4, n: int = 4, seed: int = 0, P: np.ndarray | None = None) -> dict:
    """min 1/2 x'P x + q'x s.t. -1 <= x <= 1; P (B, n, n) dense (identity by default)."""
    rng = np.random.default_rng(seed)
    m = 2 * n
    if P is None:
        P = np.broadcast_to(np.eye(n), (B, n, n))
    return dict(
        n=n, m=m, p_indptr=np.arange(0, n * n + 1, n, dtype=I64),
        p_indices=np.tile(np.arange(n, dtype=I64), n),
        p_values=np.ascontiguousarray(P.transpose(0, 2, 1).reshape(B, n * n)),
        a_indptr=np.arange(0, 2 * n + 1, 2, dtype=I64),
        a_indices=np.array([r for j in range(n) for r in (j, n + j)], dtype=I64),
        a_values=np.tile(np.array([1.0, -1.0] * n), (B, 1)),
        q=rng.standard_normal((B, n)), b=np.ones((B, m)), cones={"z": 0, "l": m},
    )


def adjoint_args(d: dict, res: dict) -> dict:
    """The values of an adjoint of ``d`` at ``res`` (any positive H does)."""
    B, n, m = d["q"].shape[0], d["n"], d["m"]
    rng = np.random.default_rng(2)
    return dict(
        p_values=d["p_values"], a_values=d["a_values"], h_diag=rng.uniform(0.1, 1.0, (B, m)),
        h_blocks=np.zeros((B, 0)),
        x=res["x"], y=res["y"], gx=rng.standard_normal((B, n)), gy=np.zeros((B, m)),
        gs=np.zeros((B, m)), statuses_ok=np.ones(B, bool))


# ----------------------------------------------------------------------------- sizes

SIZE_PRELUDE = '''
import resource
import numpy as np
from pounce_kkt import _native
# 4 GiB of address space: an allocation sized from a bad input fails fast (and aborts,
# before the fix) instead of growing until the kernel kills something.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
I64 = np.int64
n = 2
a_indptr, a_indices = np.zeros(n + 1, I64), np.zeros(0, I64)


def problem(m, cones):
    return _native.ConicProblem(n, m, None, None, a_indptr, a_indices, cones)


def conic(m, cones, B=1):
    return problem(m, cones).solve(None, np.zeros((B, 0)), np.zeros((B, n)),
                                   np.zeros((B, min(m, 8) if B else m)))


def adjoint(m, cones, B=1):
    w = min(m, 8)
    return problem(m, cones).adjoint(
        None, np.zeros((B, 0)), np.zeros((B, w)), np.zeros((B, 0)), np.zeros((B, n)),
        np.zeros((B, w)), np.zeros((B, n)), np.zeros((B, w)), np.zeros((B, w)),
        np.ones(B, bool))


def nlp_m0_jacobian_entry():
    class P:
        def objective(self, x): return float(x @ x)
        def gradient(self, x): return 2 * x
        def constraints(self, x): return np.zeros(0)
        def jacobian(self, x): return np.zeros(1)
        def hessian(self, x, f, lam): return 2 * f * np.ones(2)
        def iteration(self, *a): return True
    e = np.zeros(0)
    return _native.nlp_solve(P(), np.ones(2), np.full(2, -np.inf), np.full(2, np.inf), e, e,
                             np.array([0], I64), np.array([0], I64), np.arange(2, dtype=I64),
                             np.arange(2, dtype=I64))
'''

SIZE_CASES = {
    # name: (call, the error must name this)
    "m_2_40": ("conic(2**40, {'l': 2**40})", "`m`"),
    "m_2_62": ("conic(2**62, {'l': 2**62})", "`m`"),
    "adjoint_m_2_40": ("adjoint(2**40, {'l': 2**40})", "`m`"),
    # 6 + 2 * 2**63 wraps to 6 = m in 64-bit arithmetic.
    "soc_rows_wrap_to_m": ("conic(6, {'l': 6, 'q': [2**63, 2**63]})", "overflow"),
    "soc_list_overflow": ("conic(6, {'l': 2, 'q': [2**64 - 1, 5]})", "overflow"),
    "psd_rows_overflow": ("conic(6, {'l': 6, 's': [2**32, 2**32]})", "overflow"),
    "adjoint_rows_wrap": ("adjoint(6, {'l': 6, 'q': [2**63, 2**63]})", "overflow"),
    "nlp_m0_jacobian_entry": ("nlp_m0_jacobian_entry()", "jac_rows"),
}


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_bad_sizes_raise_value_error(tmp_path, case):
    call, named = SIZE_CASES[case]
    script = tmp_path / "sizes.py"
    script.write_text(SIZE_PRELUDE + textwrap.dedent(f'''
        try:
            {call}
            print("RETURNED")
        except ValueError as e:
            print("VALUEERROR", e)
        except BaseException as e:
            print("OTHER", type(e).__name__, e)
    '''))
    code, out, err = run_child(script, 120)
    assert code == 0, f"process died ({code}): {out}\n{err[-2000:]}"
    assert out.startswith("VALUEERROR"), out
    assert named in out, out


def test_empty_batch_allocates_nothing_of_size_m(tmp_path):
    """B = 0 with the largest m the solver takes: an empty result, nothing of size m built
    (before: a 16 GiB allocation from the pattern check aborted the process)."""
    script = tmp_path / "empty.py"
    script.write_text(SIZE_PRELUDE + textwrap.dedent('''
        m = 2**31 - 1 - n
        r = problem(m, {"l": m}).solve(None, np.zeros((0, 0)), np.zeros((0, n)),
                                       np.zeros((0, m)))
        assert r["x"].shape == (0, n) and r["y"].shape == (0, m) and r["status"] == []
        print("EMPTY OK")
    '''))
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "EMPTY OK" in out.stdout, out.stdout + out.stderr[-2000:]


# ---------------------------------------------------------------------------- panics


def test_panic_in_the_call_is_a_runtime_error(monkeypatch):
    d = box_qp()
    prob = native_problem(d)
    res = prob.solve(**value_args(d))
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "call")
    with pytest.raises(RuntimeError, match="internal error in ConicProblem: test panic"):
        native_problem(d)
    with pytest.raises(RuntimeError, match=r"internal error in ConicProblem\.solve: test panic"):
        prob.solve(**value_args(d))
    with pytest.raises(RuntimeError,
                       match=r"internal error in ConicProblem\.adjoint: test panic"):
        prob.adjoint(**adjoint_args(d, res))


def test_panic_in_nlp_solve_is_a_runtime_error(monkeypatch):
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "call")
    e = np.zeros(0)
    with pytest.raises(RuntimeError, match="internal error in nlp_solve"):
        _native.nlp_solve(object(), np.ones(2), np.full(2, -np.inf), np.full(2, np.inf), e, e,
                          np.zeros(0, I64), np.zeros(0, I64), np.zeros(0, I64),
                          np.zeros(0, I64))


def test_panic_is_not_a_base_exception_escape(monkeypatch):
    """`except Exception` catches it (PanicException would sail through)."""
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "call")
    caught = False
    try:
        native_solve(box_qp())
    except Exception:  # noqa: BLE001
        caught = True
    assert caught


@pytest.mark.parametrize("B", [4, 64])
def test_one_item_panics_the_others_are_untouched(monkeypatch, B):
    d = box_qp(B=B, seed=3)
    ref = native_solve(d)
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "item:1")
    r = native_solve(d)
    assert r["status"][1] == "numerical_failure"
    assert (r["x"][1] == 0).all() and (r["y"][1] == 0).all()
    others = [i for i in range(B) if i != 1]
    assert [r["status"][i] for i in others] == ["optimal"] * (B - 1)
    assert np.array_equal(r["x"][others], ref["x"][others])
    assert np.array_equal(r["y"][others], ref["y"][others])


def test_one_adjoint_item_panics_the_others_are_untouched(monkeypatch):
    d = box_qp(B=6, seed=4)
    prob = native_problem(d)
    res = prob.solve(**value_args(d))
    args = adjoint_args(d, res)
    ref = prob.adjoint(**args)
    monkeypatch.setenv("POUNCE_LAYERS_TEST_PANIC", "item:2")
    g = prob.adjoint(**args)
    assert g["solved"] == [True, True, False, True, True, True]
    assert (g["dq"][2] == 0).all()
    keep = [0, 1, 3, 4, 5]
    for k in ("dP", "dq", "dA", "db"):
        assert np.array_equal(g[k][keep], ref[k][keep]), k


# ----------------------------------------------------------------------------- types


def test_complex_and_float_index_arrays_are_named():
    d = box_qp()
    with pytest.raises(ValueError, match=r"`q` must be .*float64, got .*complex128"):
        native_solve({**d, "q": d["q"].astype(complex)})
    with pytest.raises(ValueError, match=r"`a_indices` must be .*int64, got .*float64"):
        native_solve({**d, "a_indices": d["a_indices"].astype(float)})
    with pytest.raises(ValueError, match=r"`p_indptr` must be .*int64, got .*float64"):
        native_solve({**d, "p_indptr": d["p_indptr"] + 0.5})


@pytest.mark.parametrize("cones, named", [
    ({"l": 8.0}, r'cones\["l"\] must be an int, got float 8.0'),
    ({"z": 2.7, "l": 5.3}, r'cones\["z"\] must be an int, got float 2.7'),
    ({"l": 6, "q": [2.0]}, r'cones\["q"\]\[0\] must be an int, got float'),
    ({"l": 5, "s": [1.5]}, r'cones\["s"\]\[0\] must be an int, got float'),
    ({"l": 8, "ep": "1"}, r'cones\["ep"\] must be an int, got str'),
])
def test_float_cone_sizes_are_refused_not_truncated(cones, named):
    d = box_qp()
    with pytest.raises(TypeError, match=named):
        native_solve({**d, "cones": cones})


def test_core_structure_refuses_float_sizes_and_indices():
    d = box_qp()
    with pytest.raises((TypeError, ValueError), match="z must be an integer, got float 5.3"):
        ConicStructure(d["n"], d["m"], d["a_indptr"], d["a_indices"], {"l": 2.7, "z": 5.3})
    bad = d["a_indices"].astype(float)
    bad[1] += 0.7
    with pytest.raises((TypeError, ValueError), match="a_indices"):
        ConicStructure(d["n"], d["m"], d["a_indptr"], bad, d["cones"])


@pytest.mark.parametrize("name", ["x_l", "x_u", "g_l", "g_u"])
def test_nan_bounds_in_nlp_solve_are_named(name):
    n, m = 2, 1
    arrays = {"x_l": np.full(n, -np.inf), "x_u": np.full(n, np.inf),
              "g_l": np.zeros(m), "g_u": np.full(m, np.inf)}
    arrays[name] = arrays[name].copy()
    arrays[name][-1] = np.nan
    idx = len(arrays[name]) - 1
    with pytest.raises(ValueError, match=rf"{name}: NaN at index {idx}"):
        _native.nlp_solve(object(), np.ones(n), arrays["x_l"], arrays["x_u"], arrays["g_l"],
                          arrays["g_u"], np.zeros(2, I64), np.arange(2, dtype=I64),
                          np.arange(2, dtype=I64), np.arange(2, dtype=I64))


# ------------------------------------------------------------------------- convexity


def _indefinite(n: int, rng: np.random.Generator) -> np.ndarray:
    M = rng.standard_normal((n, n))
    P = (M + M.T) / 2
    assert np.linalg.eigvalsh(P)[0] < -1e-3
    return P


def test_random_indefinite_box_qps_are_flagged():
    """The issue's case: random symmetric P with a negative eigenvalue on a box. Every one
    is reported, none comes back "optimal"."""
    rng = np.random.default_rng(0)
    Ps = np.stack([_indefinite(5, rng) for _ in range(200)])
    r = native_solve(box_qp(B=200, n=5, P=Ps))
    assert r["status"] == ["nonconvex"] * 200
    assert (r["iterations"] == 0).all()


def test_psd_and_singular_p_pass():
    rng = np.random.default_rng(1)
    n = 6
    F = rng.standard_normal((3, n))
    Ps = np.stack([
        F.T @ F,                            # singular PSD (rank 3)
        np.zeros((n, n)),                   # LP
        np.diag([1.0, 0, 0, 2, 0, 3]),      # singular diagonal
        F.T @ F - 1e-13 * np.eye(n),        # rounding-level negative eigenvalues
        np.eye(n) + np.triu(np.ones((n, n)), 1) - np.tril(np.ones((n, n)), -1),  # skew part
    ])
    r = native_solve(box_qp(B=len(Ps), n=n, P=Ps))
    assert r["status"] == ["optimal"] * len(Ps)


def test_p_eff_is_what_is_checked():
    """P_eff = (P + P')/2: a PSD P_eff from an asymmetric P passes, an indefinite one from a
    lower-triangular P (whose diagonal is positive) fails."""
    ok = np.array([[1.0, 3.0], [-1.0, 1.0]])    # P_eff = [[1, 1], [1, 1]]
    bad = np.array([[1.0, 0.0], [4.0, 1.0]])   # P_eff = [[1, 2], [2, 1]]
    r = native_solve(box_qp(B=2, n=2, P=np.stack([ok, bad])))
    assert r["status"] == ["optimal", "nonconvex"]


def _banded_csc(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import scipy.sparse as sp

    S = sp.csc_matrix(P)
    S.sort_indices()
    return S.indptr.astype(I64), S.indices.astype(I64), S.data


@pytest.mark.parametrize("n", [40, 600])
def test_large_and_sparse_p(n):
    """A banded P, not diagonally dominant (so a factorization decides): dense Cholesky at
    n = 40, feral's sparse LDL' and its inertia at n = 600."""
    L = np.eye(n) + np.eye(n, k=-1) + np.eye(n, k=-2)
    psd = L @ L.T
    lam_min = np.linalg.eigvalsh(psd)[0]
    indefinite = psd - (lam_min + 0.05) * np.eye(n)
    assert np.linalg.eigvalsh(indefinite)[0] < -0.04
    statuses = []
    for P in (psd, indefinite):
        ip, ix, v = _banded_csc(P)
        m = 2 * n
        prob = _native.ConicProblem(
            n, m, ip, ix, np.arange(0, 2 * n + 1, 2, dtype=I64),
            np.array([r for j in range(n) for r in (j, n + j)], dtype=I64), {"l": m})
        r = prob.solve(v[None], np.tile(np.array([1.0, -1.0] * n), (1, 1)), np.ones((1, n)),
                       np.ones((1, m)))
        statuses.append(r["status"][0])
    assert statuses == ["optimal", "nonconvex"]


def _structure(d: dict) -> ConicStructure:
    return ConicStructure(d["n"], d["m"], d["a_indptr"], d["a_indices"], d["cones"],
                          d["p_indptr"], d["p_indices"])


@pytest.mark.parametrize("on_failure", ["raise", "nan"])
def test_core_raises_value_error_naming_p_and_the_item(on_failure):
    rng = np.random.default_rng(5)
    Ps = np.stack([np.eye(4)] * 6)
    Ps[3] = _indefinite(4, rng)
    Ps[5] = _indefinite(4, rng)
    d = box_qp(B=6, n=4, P=Ps)
    args = (torch.tensor(d["p_values"]), torch.tensor(d["q"]), torch.tensor(d["a_values"]),
            torch.tensor(d["b"]))
    opts = SolveOptions(on_failure=on_failure)
    for fn in (conic_solve, conic_forward):
        with pytest.raises(ValueError, match=r"P is not positive semidefinite at batch index 3 "
                                             r"\(items \[3, 5\]\).*nonconvex"):
            fn(_structure(d), *args, opts)
