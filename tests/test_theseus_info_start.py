"""The info a solve starts (``compat.init_info``): without error history, best solution or
state history tracked, the initial error metric is not evaluated, and the returned info
(status, converged iterations, final error) is the one a tracked solve returns; the
fresh info has the fields Theseus' own ``_init_info`` gives, ``last_err`` NaN."""

from __future__ import annotations

import numpy as np
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.compat import init_info
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _info(**track):
    obj, inputs, _, _ = synthetic_pose_graph(15, 2, dims=2, seed=4)
    layer = th.TheseusLayer(PounceOptimizer(obj))
    calls = []
    metric = obj.error_metric

    def counted():
        calls.append(1)
        return metric()

    obj.error_metric = counted
    with torch.no_grad():
        _, info = layer.forward(inputs, optimizer_kwargs={"backward_mode": "implicit", **track})
    return info, len(calls), metric


def test_untracked_info_skips_the_start_metric_and_matches_tracked():
    info, calls, metric = _info()
    tracked, tracked_calls, _ = _info(track_err_history=True, track_best_solution=True)
    assert calls == tracked_calls - 1  # the start's metric, and nothing else, skipped
    assert np.array_equal(info.status, tracked.status)
    assert torch.equal(info.converged_iter, tracked.converged_iter)
    assert torch.isfinite(info.last_err).all()
    assert torch.equal(info.last_err, tracked.last_err)
    assert torch.allclose(info.last_err, metric(), rtol=1e-12, atol=0)
    assert info.err_history is None and info.best_solution is None
    assert torch.isfinite(tracked.err_history[:, 0]).all()


def test_fresh_info_fields_are_theseus():
    obj, inputs, _, _ = synthetic_pose_graph(10, 3, dims=2, seed=4)
    opt = PounceOptimizer(obj)
    obj.update(inputs)
    ours, theirs = init_info(opt, False, False, False), opt._init_info(False, False, False)
    assert np.array_equal(ours.status, theirs.status)
    for name in ("converged_iter", "best_iter"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert ours.last_err.shape == theirs.last_err.shape
    assert ours.last_err.dtype == theirs.last_err.dtype
    assert torch.isnan(ours.last_err).all()
    for name in ("best_solution", "best_err", "err_history", "state_history"):
        assert getattr(ours, name) is None and getattr(theirs, name) is None
