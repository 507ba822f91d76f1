"""serial_torch (pounce_kkt/torch_threads.py): one Torch thread inside, the caller's after."""

from __future__ import annotations

import threading

import cvxpy as cp
import numpy as np
import pytest
import torch

import pounce_kkt as pk
from pounce_kkt.torch_threads import serial_torch


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_one_thread_inside_and_restored_after(two_threads):
    with serial_torch():
        assert torch.get_num_threads() == 1
        with serial_torch():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1  # the inner exit does not restore early
    assert torch.get_num_threads() == 2


def test_restored_after_an_exception(two_threads):
    with pytest.raises(ZeroDivisionError), serial_torch():
        1 / 0  # noqa: B018
    assert torch.get_num_threads() == 2


def test_overlapping_blocks_of_two_threads_restore_once(two_threads):
    # A enters, B enters, A leaves (B still inside: one thread), B leaves (restored).
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a():
        with serial_torch():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with serial_torch():
            b_in.set()
            a_out.wait(5)
            seen["after A left"] = torch.get_num_threads()

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen["after A left"] == 1
    assert torch.get_num_threads() == 2


def test_layer_call_leaves_the_thread_count_alone(two_threads):
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401

    x = cp.Variable(3)
    q = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x), [x >= 0])
    layer = CvxpyLayer(prob, [q], [x], solver="pounce")
    qt = torch.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    (sol,) = layer(qt)
    sol.sum().backward()
    assert torch.get_num_threads() == 2
    # min |x|^2 + q'x, x >= 0: x = max(-q/2, 0)
    assert torch.allclose(sol, torch.clamp(-qt.detach() / 2, min=0), atol=1e-8)


def test_auto_backward_is_sparse_unless_differentiated_again():
    opts = pk.SolveOptions()
    assert opts.backward_path(20, create_graph=False) == "sparse"
    assert opts.backward_path(20, create_graph=True) == "dense"
    assert pk.SolveOptions(dense_max_dim=50).backward_path(20, create_graph=False) == "dense"
