"""SE2's log-map Jacobian as the linearisation takes it (``compat.accurate_se2_log_jacobian``):
to a few ulps against a 50-digit reference (Theseus forms two entries by cancellation for
|theta| >= 1e-3), Theseus' method restored after the context,
and the linearisation's gradient on a robust SE2 pose graph equal to autograd's to 1e-10,
so a solve to Ipopt's tol needs no autograd gradients (``linearization_inaccurate``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp
from pounce_theseus.compat import accurate_se2_log_jacobian
from pounce_theseus.hessian import GaussNewtonHessian
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS

F64 = torch.float64
# rotations on both sides of Theseus' Taylor switch (1e-3) and of the series' (0.1)
THETAS = [0.0, 3e-4, 9.99e-4, 1e-3, 1.5e-3, 2e-3, 1e-2, 0.0999, 0.1001, 0.3, 1.8, -3.1]
# Theseus' own method, as imported (before any test swaps it).
_ORIGINAL = th.SE2._log_map_impl


def _points() -> th.SE2:
    g = torch.Generator().manual_seed(0)
    xy = 2.0 * torch.rand(len(THETAS), 2, generator=g, dtype=F64) - 1.0
    theta = torch.tensor(THETAS, dtype=F64).unsqueeze(1)
    return th.SE2(x_y_theta=torch.cat([xy, theta], dim=1))


def _reference_jacobian(x: th.SE2) -> torch.Tensor:
    """d log(x exp(eps)) / d eps at eps = 0 in 50-digit arithmetic (mpmath), by central
    differences with h = 1e-25 (truncation ~h^2), from x's float64 entries."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50

    def exp(v):
        a = mp.sin(v[2]) / v[2] if v[2] else mp.mpf(1)
        b = (1 - mp.cos(v[2])) / v[2] if v[2] else mp.mpf(0)
        return (a * v[0] - b * v[1], b * v[0] + a * v[1], v[2])

    def log_of_product(p, q):
        c, s = mp.cos(p[2]), mp.sin(p[2])
        x, y, t = p[0] + c * q[0] - s * q[1], p[1] + s * q[0] + c * q[1], p[2] + q[2]
        t = mp.atan2(mp.sin(t), mp.cos(t))
        a = (t / 2) * mp.cot(t / 2) if t else mp.mpf(1)
        return (a * x + t / 2 * y, -t / 2 * x + a * y, t)

    h = mp.mpf("1e-25")
    out = torch.zeros(x.shape[0], 3, 3, dtype=F64)
    for r, (px, py, c, s) in enumerate(x.tensor.tolist()):
        p = (mp.mpf(px), mp.mpf(py), mp.atan2(mp.mpf(s), mp.mpf(c)))
        for j in range(3):
            e = [mp.mpf(0)] * 3
            e[j] = h
            plus = log_of_product(p, exp(e))
            e[j] = -h
            minus = log_of_product(p, exp(e))
            for i in range(3):
                out[r, i, j] = float((plus[i] - minus[i]) / (2 * h))
    return out


def _jacobian(x: th.SE2) -> torch.Tensor:
    jac: list[torch.Tensor] = []
    x.log_map(jacobians=jac)
    return jac[0]


def test_se2_log_jacobian_to_a_few_ulps():
    x = _points()
    want = _reference_jacobian(x)
    theirs = _jacobian(x)
    with accurate_se2_log_jacobian():
        ours = _jacobian(x)
        log = x.log_map()
    assert torch.equal(log, x.log_map())  # the log itself is Theseus'
    assert (ours - want).abs().max() <= 1e-14
    # what it fixes: Theseus' own entries at theta = 1.5e-3 are ~1e-9 off
    assert (theirs - want).abs().max() > 1e-10
    # below the switch both are Theseus' series
    below = torch.tensor([abs(t) < 1e-3 for t in THETAS])
    assert torch.equal(ours[below], theirs[below])


def test_theseus_method_restored_after_nested_and_threaded_use():
    original = th.SE2._log_map_impl
    errors: list[BaseException] = []

    def use():
        try:
            with accurate_se2_log_jacobian():
                with accurate_se2_log_jacobian():
                    assert th.SE2._log_map_impl is not original
                _jacobian(_points())
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert th.SE2._log_map_impl is original


def test_other_threads_keep_theseus_jacobian_while_swapped():
    """While one thread is inside the context (the class method swapped), another thread
    outside it gets Theseus' own numbers, bitwise; the inside thread gets the accurate
    ones."""
    x = _points()
    theirs = _jacobian(x)
    inside, leave = threading.Event(), threading.Event()
    got: dict[str, torch.Tensor] = {}

    def hold():
        with accurate_se2_log_jacobian():
            got["inside"] = _jacobian(x)
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(30)
        assert th.SE2._log_map_impl is not _ORIGINAL  # swapped now
        got["outside"] = _jacobian(x)
    finally:
        leave.set()
        t.join()
    assert torch.equal(got["outside"], theirs)
    assert not torch.equal(got["inside"], theirs)


def test_linearization_gradient_equals_autograd_on_a_robust_se2_graph():
    """At the start and at a solution (where the residuals are small rotations, the
    range Theseus' entries lose digits in), the linearisation's gradient is autograd's
    to 1e-10 absolute (it was 3e-5 and 1e-6), so solves to tol 1e-8 keep it."""
    obj, inputs, _, _ = synthetic_pose_graph(100, 2, dims=2)
    opt = PounceOptimizer(obj, tol=1e-10, max_iterations=100)
    layer = th.TheseusLayer(opt)
    with torch.no_grad():
        layer.forward(dict(inputs))  # the structure's check ran at the start
    structure = opt._structure
    nlp = BatchNlp(structure, GaussNewtonHessian(), [])
    assert not nlp.linearization_inaccurate(1e-8)
    assert structure.linearization_gradient_error <= 1e-10
    structure.chart.recenter()
    d = np.zeros((2, structure.n))
    lin = nlp.linearized(d).gradient().clone()
    auto = nlp.evaluate(d).objective_gradient(create_graph=False).detach()
    structure.chart.restore()
    assert (lin - auto).abs().max() <= 1e-10
