"""warm_start="auto": warm after a small move, cold otherwise; NaN items never warm start."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401
from pounce_cvxpy import last_solve_info
from pounce_cvxpy.solver_args import PounceArgs, resolve


def _layer(**solver_args) -> CvxpyLayer:
    n, m = 8, 12
    rng = np.random.default_rng(0)
    M = rng.standard_normal((n, n))
    x = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, M @ M.T / n + np.eye(n)) + q @ x),
                      [G @ x <= h])
    return CvxpyLayer(prob, [q, G, h], [x], solver="pounce", solver_args=solver_args)


def _params(seed: int, batch: int = 6) -> list[torch.Tensor]:
    r = np.random.default_rng(seed)
    G = r.standard_normal((batch, 12, 8))
    h = np.einsum("bij,bj->bi", G, r.standard_normal((batch, 8))) + r.random((batch, 12))
    return [torch.tensor(r.standard_normal((batch, 8))), torch.tensor(G), torch.tensor(h)]


def test_auto_warm_starts_a_small_move_and_not_a_new_batch():
    auto, cold = _layer(warm_start="auto"), _layer()
    first = _params(1)
    auto(*first)
    moved = [p * (1 + 1e-4) for p in first]
    (x_auto,) = auto(*moved)
    it_auto = last_solve_info(auto).iterations
    (x_cold,) = cold(*moved)
    it_cold = last_solve_info(cold).iterations
    torch.testing.assert_close(x_auto, x_cold, rtol=1e-8, atol=1e-8)
    assert int(it_auto.sum()) < int(it_cold.sum())  # the warm start was taken
    other = _params(2)
    (x_auto,) = auto(*other)
    (x_cold,) = cold(*other)
    torch.testing.assert_close(x_auto, x_cold, rtol=1e-8, atol=1e-8)
    # a different batch starts cold: the same iterations as the cold layer, item by item
    assert torch.equal(last_solve_info(auto).iterations, last_solve_info(cold).iterations)


def test_warm_start_values_are_checked():
    assert resolve(PounceArgs(), {"warm_start": "auto"}).warm_start == "auto"
    assert resolve(PounceArgs(), {"warm_start": 0}).warm_start is False
    assert PounceArgs().warm_start is False  # off unless asked for
    with pytest.raises(ValueError, match="warm_start"):
        resolve(PounceArgs(), {"warm_start": "yes"})


def test_an_unsolved_items_nan_is_never_a_warm_start():
    layer = _layer(warm_start=True, on_failure="nan", max_iter=1)
    params = _params(3)
    (first,) = layer(*params)
    assert torch.isnan(first).any()  # one iteration leaves items unsolved: NaN rows cached
    (x,) = _layer(warm_start=True)(*params)  # a fresh layer: cold
    layer_ok = _layer(warm_start=True, on_failure="nan", max_iter=1)
    layer_ok(*params)
    (again,) = layer_ok(*params, solver_args={"max_iter": 200})  # the NaN cache is skipped
    torch.testing.assert_close(again, x, rtol=1e-8, atol=1e-8)
