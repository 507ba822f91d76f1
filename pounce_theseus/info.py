"""``NonlinearOptimizerInfo`` filled from a :class:`BatchResult`, as Theseus' optimizers
fill it, and the per-iteration hooks (``verbose``, ``end_iter_callback``).

Iteration ``i`` of an element is its native solver's iteration ``i`` (re-solves after a
chart re-centring continue the count). The histories hold the interior-point iterates,
and, as Theseus' loop records them, an element that stopped before the batch's last
iteration keeps its final error and values up to that iteration;
``verbose`` and ``end_iter_callback`` are called once per iteration after the solve, with
the mean error of the elements still iterating and the step of every element (zero for
an element that stopped earlier).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from theseus.optimizer.nonlinear import NonlinearOptimizerInfo, NonlinearOptimizerStatus

from .solve import BatchResult

__all__ = ["fill_info", "replay_iterations"]


def fill_info(info: NonlinearOptimizerInfo, res: BatchResult, err: torch.Tensor,
              solution: dict[str, torch.Tensor], max_iterations: int,
              track_best_solution: bool) -> None:
    """Status, iterations, errors and histories; ``err`` (B,) is the error metric at the
    written ``solution``."""
    status = []
    for b in range(res.batch_size):
        if res.converged[b]:
            status.append(NonlinearOptimizerStatus.CONVERGED)
        elif res.status[b] == "maximum_iterations_exceeded" or (
            res.solved[b] and res.iterations[b] >= max_iterations
        ):
            status.append(NonlinearOptimizerStatus.MAX_ITERATIONS)
        else:
            status.append(NonlinearOptimizerStatus.FAIL)
    info.status = np.array(status)
    iters = torch.as_tensor(res.iterations, dtype=torch.long)
    conv = torch.as_tensor(res.converged)
    info.converged_iter = torch.where(conv, iters, torch.full_like(iters, -1))
    info.last_err = err
    info.best_iter = (iters - 1).clamp(min=0)
    if track_best_solution:
        info.best_err = err.clone()
        info.best_solution = {k: v.detach().clone().cpu() for k, v in solution.items()}
    last = iters.clamp(max=max_iterations)
    rows = torch.arange(res.batch_size)
    if info.err_history is not None:
        hist = info.err_history
        for b, its in enumerate(res.iterates):
            for it, (f, _, _) in its.items():
                if it <= max_iterations:
                    hist[b, it] = f
        hist[rows, last] = err.detach().cpu().to(hist.dtype)
        _hold_after_stop(hist, last)
        # The first iterate reaching the history's minimum (Theseus keeps the first of
        # equal errors).
        info.best_iter = (hist.argmin(dim=1) - 1).clamp(min=0).to(torch.long)
    if info.state_history is not None:
        for name, hist in info.state_history.items():
            for b, its in enumerate(res.iterates):
                for it, (_, values, _) in its.items():
                    if it <= max_iterations:
                        hist[b, ..., it] = values[name].cpu().to(hist.dtype)
            hist[rows, ..., last] = solution[name].detach().cpu().to(hist.dtype)
            _hold_after_stop(hist.movedim(-1, 1), last)


def _hold_after_stop(hist: torch.Tensor, last: torch.Tensor) -> None:
    """History entries (B, T, ...) of each element ``b`` after its last iteration
    ``last[b]``, up to the batch's last, set to its final entry (Theseus records every
    element at every iteration of its loop, a stopped one at its final values)."""
    end = int(last.max()) if last.numel() else 0
    for b, lb in enumerate(last.tolist()):
        if lb < end:
            hist[b, lb + 1:end + 1] = hist[b, lb]


def replay_iterations(optimizer, info: NonlinearOptimizerInfo, res: BatchResult,
                      verbose: bool, end_iter_callback: Callable | None) -> None:
    """Call ``verbose`` printing and ``end_iter_callback(optimizer, info, step, i)`` for
    every iteration the solve made (see the module docstring)."""
    if not verbose and end_iter_callback is None:
        return
    last = max((max(its, default=0) for its in res.iterates), default=0)
    prev = np.zeros((res.batch_size, res.n))
    for it in range(last + 1):
        cur = prev.copy()
        errs = []
        for b, its in enumerate(res.iterates):
            if it in its:
                errs.append(its[it][0])
                cur[b] = its[it][2]
        if verbose and errs:
            print(f"Nonlinear optimizer. Iteration: {it}. Error: {float(np.mean(errs))}")
        if end_iter_callback is not None and it > 0:
            end_iter_callback(optimizer, info, torch.as_tensor(cur - prev), it - 1)
        prev = cur
