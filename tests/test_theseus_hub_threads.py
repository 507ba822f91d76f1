"""The lockstep hub (``solve.Hub.run``) starts its worker solves as bare threads
(``_thread.start_new_thread``: ``threading.Thread.start`` waits for each new thread to run,
12-20 ms for eight on a loaded 2-core machine): one per solve, none left running after a
forward, none after a callback raised (the exception reaches the caller)."""

from __future__ import annotations

import _thread
import threading
import time

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _settle(baseline: int, timeout: float = 2.0) -> int:
    """The count of bare threads, once it is back to ``baseline`` (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while _thread._count() > baseline and time.monotonic() < end:
        time.sleep(0.005)
    return _thread._count()


def test_workers_are_bare_threads_and_all_end(monkeypatch):
    obj, inputs, _, _ = synthetic_pose_graph(20, 4, dims=2, seed=1)
    starts, bare = [], []
    start, start_new = threading.Thread.start, _thread.start_new_thread
    monkeypatch.setattr(threading.Thread, "start",
                        lambda self: starts.append(1) or start(self))
    monkeypatch.setattr(_thread, "start_new_thread",
                        lambda fn, args: bare.append(1) or start_new(fn, args))
    baseline = _thread._count()
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    opt = PounceOptimizer(obj)
    sol, info = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                             optimizer_kwargs={"backward_mode": "implicit"})
    monkeypatch.undo()
    assert not starts
    assert len(bare) == 8  # four solves to Theseus' test, four polishes
    assert (info.converged_iter > 0).all()
    assert _settle(baseline) == baseline


def test_a_raising_callback_ends_every_worker(monkeypatch):
    obj, inputs, _, _ = synthetic_pose_graph(20, 4, dims=2, seed=1)
    served = []
    serve = BatchNlp.serve

    def failing(self, requests):
        served.append(1)
        if len(served) == 3:
            raise ValueError("callback failed")
        return serve(self, requests)

    monkeypatch.setattr(BatchNlp, "serve", failing)
    baseline = _thread._count()
    with pytest.raises(ValueError, match="callback failed"), torch.no_grad():
        th.TheseusLayer(PounceOptimizer(obj)).forward(inputs)
    monkeypatch.undo()
    assert len(served) == 3
    assert _settle(baseline) == baseline


def test_a_thread_that_cannot_start_ends_the_others(monkeypatch):
    """The third worker cannot start: the error reaches the caller and the two started
    solves end (their callbacks are released)."""
    obj, inputs, _, _ = synthetic_pose_graph(20, 4, dims=2, seed=1)
    started = []
    start_new = _thread.start_new_thread

    def limited(fn, args):
        if len(started) == 2:
            raise RuntimeError("can't start new thread")
        started.append(1)
        return start_new(fn, args)

    monkeypatch.setattr(_thread, "start_new_thread", limited)
    baseline = _thread._count()
    with pytest.raises(RuntimeError, match="can't start new thread"), torch.no_grad():
        th.TheseusLayer(PounceOptimizer(obj)).forward(inputs)
    monkeypatch.undo()
    assert len(started) == 2
    assert _settle(baseline) == baseline
