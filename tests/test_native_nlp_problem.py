"""The native NLP problem handle (`pounce_kkt._native.NlpProblem`, rust/py/src/nlp/
tnlp_bridge.rs): one layout checked once (sizes, bounds, patterns, options), then solved
from values only; `nlp_solve` is one call on a handle built for it.

References: closed-form solutions of small constrained NLPs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pounce_kkt import _native
from pounce_theseus.native import nlp_problem

I64 = np.int64
INF = np.inf
OPTIONS = {"tol": 1e-10, "print_level": 0}


class Disk:
    """min -(x0 + x1) + w (x0 - x1)^2 s.t. x0^2 + x1^2 <= r^2 (one nonlinear constraint).

    Solution (symmetric): x0 = x1 = r / sqrt(2), lambda = 1 / (r sqrt(2)) (grad f + J' lambda
    = 0 with J = 2x). Hessian of the Lagrangian, lower triangle (0,0), (1,0), (1,1):
    obj_factor * 2w [[1, -1], [-1, 1]] + lambda * 2I."""

    def __init__(self, r=1.0, w=0.5):
        self.r, self.w, self.iterates = r, w, []

    def objective(self, x):
        return float(-(x[0] + x[1]) + self.w * (x[0] - x[1]) ** 2)

    def gradient(self, x):
        d = 2 * self.w * (x[0] - x[1])
        return np.array([-1.0 + d, -1.0 - d])

    def constraints(self, x):
        return np.array([x @ x])

    def jacobian(self, x):
        return 2 * x

    def hessian(self, x, f, lam):
        a = 2 * self.w * f
        return np.array([a + 2 * lam[0], -a, a + 2 * lam[0]])

    def iteration(self, it, obj, inf_pr, inf_du, mu, restoration, x):
        self.iterates.append(x)
        return True


def _disk_layout(r=1.0):
    return dict(x_l=np.full(2, -INF), x_u=np.full(2, INF), g_l=np.array([-INF]),
                g_u=np.array([r * r]), jac_rows=np.zeros(2, I64),
                jac_cols=np.arange(2, dtype=I64), hess_rows=np.array([0, 1, 1], I64),
                hess_cols=np.array([0, 0, 1], I64))


def _handle(options=OPTIONS, **over):
    return nlp_problem(**{**_disk_layout(), **over}, options=options)


def test_constrained_nlp_matches_its_closed_form():
    prob = _handle()
    assert (prob.n, prob.m) == (2, 1)
    r = prob.solve(Disk(), np.zeros(2))
    assert r["status"] == "solve_succeeded"
    np.testing.assert_allclose(r["x"], np.full(2, 1 / np.sqrt(2)), atol=1e-8)
    np.testing.assert_allclose(r["lambda"], [1 / np.sqrt(2)], atol=1e-8)
    np.testing.assert_allclose(r["g"], [1.0], atol=1e-8)
    assert abs(r["obj"] + np.sqrt(2)) < 1e-8


def test_an_active_bound_gives_its_multiplier():
    """min (x0 - 1)^2 + (x1 - 2)^2 s.t. x0 + x1 = 1, x1 <= 0.5: x = (0.5, 0.5), lambda = 1,
    z_u = (0, 2) (2 (x - c) + lambda (1, 1) + z_u = 0)."""

    class Line:
        def objective(self, x):
            return float((x[0] - 1) ** 2 + (x[1] - 2) ** 2)

        def gradient(self, x):
            return 2 * (x - np.array([1.0, 2.0]))

        def constraints(self, x):
            return np.array([x[0] + x[1]])

        def jacobian(self, x):
            return np.ones(2)

        def hessian(self, x, f, lam):
            return np.full(2, 2.0 * f)

        def iteration(self, *args):
            return True

    d = np.arange(2, dtype=I64)
    prob = nlp_problem(np.full(2, -INF), np.array([INF, 0.5]), np.ones(1), np.ones(1),
                       np.zeros(2, I64), d, d, d, OPTIONS)
    r = prob.solve(Line(), np.zeros(2))
    assert r["status"] == "solve_succeeded"
    np.testing.assert_allclose(r["x"], [0.5, 0.5], atol=1e-8)
    np.testing.assert_allclose(r["lambda"], [1.0], atol=1e-7)
    np.testing.assert_allclose(r["z_u"], [0.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(r["z_l"], [0.0, 0.0], atol=1e-7)


def test_handle_equals_nlp_solve():
    lay = _disk_layout()
    x0 = np.array([0.3, -0.2])
    one = _native.nlp_solve(Disk(), x0, lay["x_l"], lay["x_u"], lay["g_l"], lay["g_u"],
                            lay["jac_rows"], lay["jac_cols"], lay["hess_rows"],
                            lay["hess_cols"], OPTIONS, True)
    p = Disk()
    held = _handle().solve(p, x0, True)
    for k in ("x", "z_l", "z_u", "lambda", "g"):
        np.testing.assert_array_equal(held[k], one[k])
    for k in ("obj", "status", "iterations", "kkt_error"):
        assert held[k] == one[k], k
    assert len(p.iterates) == held["iterations"] + 1 and p.iterates[-1] is not None


def test_repeated_solves_on_one_handle_and_per_call_options():
    prob = _handle()
    first = prob.solve(Disk(), np.zeros(2))
    for x0 in (np.zeros(2), np.array([0.9, -0.4]), np.array([-0.1, 0.2])):
        r = prob.solve(Disk(), x0)
        assert r["status"] == "solve_succeeded"
        np.testing.assert_allclose(r["x"], first["x"], atol=1e-8)
    again = prob.solve(Disk(), np.zeros(2))
    np.testing.assert_array_equal(again["x"], first["x"])  # same start, same iterates
    short = prob.solve(Disk(), np.zeros(2), options={"max_iter": 1})
    assert short["status"] == "maximum_iterations_exceeded" and short["iterations"] == 1
    # The override was for that call only.
    np.testing.assert_array_equal(prob.solve(Disk(), np.zeros(2))["x"], first["x"])


def test_one_handle_from_several_threads():
    prob = _handle()
    ref = prob.solve(Disk(), np.zeros(2))
    out = [None] * 4

    def run(i):
        out[i] = prob.solve(Disk(), np.zeros(2))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        np.testing.assert_array_equal(r["x"], ref["x"])


@pytest.mark.parametrize(
    "over, match",
    [
        ({"jac_rows": np.array([0, 1], I64)}, r"jac_rows: index 1 out of range \[0, 1\)"),
        ({"jac_cols": np.array([0, 2], I64)}, "jac_cols: index 2 out of range"),
        ({"jac_cols": np.zeros(1, I64)}, "jac_cols: length 1, expected 2"),
        ({"hess_rows": np.array([0, 0, 1], I64), "hess_cols": np.array([0, 1, 1], I64)},
         "lower triangle"),
        ({"x_l": np.array([0.0, 2.0]), "x_u": np.array([1.0, 1.0])},
         r"x_l\[1\] = 2 exceeds x_u\[1\] = 1"),
        ({"g_l": np.array([2.0])}, r"g_l\[0\] = 2 exceeds g_u\[0\] = 1"),
        ({"x_u": np.array([np.nan, 1.0])}, "x_u: NaN at index 0"),
        ({"g_u": np.ones(2)}, "g_u: length 2, expected 1"),
    ],
)
def test_bad_layouts_are_named(over, match):
    with pytest.raises(ValueError, match=match):
        _handle(**over)


def test_bad_options_and_starting_points_are_named():
    with pytest.raises(ValueError, match="no_such_option"):
        _handle(options={"no_such_option": 1})
    with pytest.raises(ValueError, match=r'options\["tol"\]: expected'):
        _handle(options={"tol": [1e-8]})
    prob = _handle()
    with pytest.raises(ValueError, match="x0: length 3, expected n = 2"):
        prob.solve(Disk(), np.zeros(3))
    with pytest.raises(ValueError, match="x0: non-finite value at index 1"):
        prob.solve(Disk(), np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="max_iter"):
        prob.solve(Disk(), np.zeros(2), options={"max_iter": -3})
    with pytest.raises(ValueError, match="n: 4294967296 exceeds"):
        _native.NlpProblem(2**32, 1, *_disk_layout().values())
    assert prob.solve(Disk(), np.zeros(2))["status"] == "solve_succeeded"


def test_a_callback_exception_is_raised_from_solve():
    class Broken(Disk):
        def hessian(self, x, f, lam):
            raise ZeroDivisionError("from the hessian")

    prob = _handle()
    with pytest.raises(ZeroDivisionError, match="from the hessian"):
        prob.solve(Broken(), np.zeros(2))
    assert prob.solve(Disk(), np.zeros(2))["status"] == "solve_succeeded"
