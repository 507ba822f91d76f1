"""Curved-cone solves without a kept answer: a short interior-point stage, finished by Newton.

For a structure with a SOC, PSD, exp or power cone, with `refine=True`, no warm start
and no time limit, the native solve first runs only the interior-point method's first
:func:`stage_iterations` iterations (the native `Stage`: rust/core/src/options.rs; POUNCE's
exp/power polish included, no second solve, no certificate search). From that point the
Newton steps of pounce_kkt/refine.py (the backward's own KKT solve per step; its default
target and floor, as after a full solve) finish each usable item: the refined point
``s = Pi_K(w), y = Pi_K(w) - w`` is in K x K* and complementary by construction, so an
item whose residual ``res`` (refine.py) reaches ``kept_newton.accept_tol(tol)`` is
optimal: answered "optimal", engine "ipm", its iterations the stage's plus its Newton
steps. Every other item (residual short, or the stage ended without a usable point) goes
to the full native solve, as without the stage, so no accuracy is lost: the stage's
iterations and the Newton steps are then spent on top.

With a PSD, exp or power cone, a batch of at least SEED_MIN_BATCH and the same P values for
every item, only SEEDS items spread over the batch (the seeds) are solved, by the full
solve; every other item takes the same Newton steps from the answer of its nearest optimal
seed, as a kept answer on unrelated values (kept_newton.py), and is answered "optimal" with
engine SEED_ENGINE where its residual reaches the same acceptance; the items left short go
through the stage as above. A structure whose seeded call accepted fewer than
STAGE_MIN_ACCEPT of those items is not seeded again.

The stage length is kept per structure: it starts at STAGE_ITERATIONS and doubles after a
call in which fewer than STAGE_MIN_ACCEPT of the staged items were accepted; past
STAGE_MAX_ITERATIONS the structure goes to the full solve directly. Measured in
docs/native-core.md ("Curved cones on a cold call").
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pounce_kkt.errors import SolverError
from pounce_kkt.kept_newton import NativeResult, newton_steps, with_rest
from pounce_kkt.refine import KktSolve, native_steps
from pounce_kkt.structure import ConicStructure

# The stage's first length in IPM iterations, the fraction of its items the Newton steps
# must accept for the length to stay, and the longest stage tried (docs/native-core.md).
STAGE_ITERATIONS = 2
STAGE_MIN_ACCEPT = 0.75
STAGE_MAX_ITERATIONS = 8
# The environment switch that turns the stage off ("0" or "off"), for comparisons.
STAGE_ENV = "POUNCE_LAYERS_STAGE"
# The stage only for a call with batch * (n + m) at least this when the Newton steps run in
# Python (refine.py's loop: the dense path, or POUNCE_LAYERS_NATIVE_STEPS=off): each step
# costs a fixed ~1-1.5 ms of Python, which a cheap interior-point solve does not repay
# (on/off, CPU, fwd+bwd: the bench_peers families at B = 1 / 4 / 16: socp (n + m = 65) 1.23
# / 1.04 / 0.88, softmax (101) 1.10 / 0.62 / 0.29, logreg (205) 1.64 / 1.12 / 0.61, psd
# (114) 1.09 / 0.67 / 0.50; n = 3 problems at B = 8: 0.95-1.48; docs/native-core.md).
# Native steps (refine.native_steps) have no such fixed cost: every batch size is staged
# (stage / no stage below this, new data every call: socp B = 1 / 4 / 8 0.73 / 0.86 / 0.75;
# softmax and logreg 0.94-1.19, their items answered from kept answers either way;
# docs/exp-socp-profile.md, section 11).
STAGE_MIN_WORK = 1000
# Items per call solved by the full solve (the seeds) whose answers start every other
# item's Newton steps (0: none), its environment switch, and the smallest batch seeded:
# from an unrelated answer an item takes ~2 more Newton steps than from a stage point
# (6.6 vs 4.3), each with a fixed Python cost per call, so small batches do not repay it
# (seeds on / off, CPU, B = 64 / 32 / 16: logreg 2.2 / 1.7 / 1.3, softmax 1.2 / 0.89 /
# 0.78, psd 1.2 / - / 0.82). A structure whose call accepted fewer than STAGE_MIN_ACCEPT
# of the other items from the seeds' answers is not seeded again (docs/exp-socp-profile.md,
# section 9).
SEEDS = 2
SEEDS_ENV = "POUNCE_LAYERS_SEEDS"
SEED_MIN_BATCH = 48
# SolveInfo.engine of an item answered by Newton steps from a seed's answer.
SEED_ENGINE = "newton_seed"

# The native stage solve of some items: (values, stage iterations) -> the native dict
# (x, y, s, status, iterations, solve_time, engine; rust/py/src/problem.rs).
StageSolve = Callable[[dict[str, torch.Tensor | None], int], dict[str, Any]]
# The full solve (conic._solve_native without the stage) of some items' values.
FullSolve = Callable[[dict[str, torch.Tensor | None]], NativeResult]

_LENGTHS: weakref.WeakKeyDictionary[ConicStructure, int] = weakref.WeakKeyDictionary()
_NO_SEEDS: weakref.WeakKeyDictionary[ConicStructure, bool] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: a fresh lock (one held by another thread at the fork stays held)."""
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def stage_iterations(structure: ConicStructure) -> int:
    """The structure's current stage length (0: the stage is off for it)."""
    with _LOCK:
        return _LENGTHS.get(structure, STAGE_ITERATIONS)


def set_stage_iterations(structure: ConicStructure, length: int) -> None:
    """Set the structure's stage length (0: off), for comparisons and tests."""
    with _LOCK:
        _LENGTHS[structure] = int(length)


def _record(structure: ConicStructure, length: int, accepted: int, staged: int) -> None:
    """Double the structure's stage length after a call that accepted too few items."""
    if staged and accepted < STAGE_MIN_ACCEPT * staged:
        longer = 2 * length
        with _LOCK:
            _LENGTHS[structure] = longer if longer <= STAGE_MAX_ITERATIONS else 0


def applies(structure: ConicStructure, options: Any, warm: tuple[Any, Any, Any],
            batch: int) -> bool:
    """Whether a call of `batch` items under `options` (a SolveOptions) with warm start
    `warm` is staged: with Newton steps in Python not below STAGE_MIN_WORK, not with a time
    limit (one budget for one solve) nor with `max_iter` at most the stage's length (the
    full solve is then no longer), nor with the environment's STAGE_ENV off."""
    c = structure.cones
    length = stage_iterations(structure)
    dim = structure.n + structure.m
    native = native_steps(options.backward_path(dim, create_graph=False))
    return (bool(c.q or c.s or c.ep or c.p) and bool(options.refine)
            and (native or batch * dim >= STAGE_MIN_WORK)
            and os.environ.get(STAGE_ENV, "").lower() not in ("0", "off")
            and options.time_limit is None and all(w is None for w in warm)
            and 0 < length < int(options.max_iter))


def solve(structure: ConicStructure, options: Any, v: dict[str, torch.Tensor | None],
          stage: StageSolve, full: FullSolve,
          kkt_solve: Callable[[torch.Tensor | None, torch.Tensor], KktSolve]) -> NativeResult:
    """conic._solve_native's result for a staged call (module docstring): `stage(v, k)` is
    the native stage solve, `full(v)` the full solve of the items the Newton steps leave,
    `kkt_solve(P, A)` the refinement's KKT solve on those values."""
    k = int(os.environ.get(SEEDS_ENV, SEEDS))
    if _seeding(structure, k, v["q"].shape[0]):
        return _seeded(structure, options, v, stage, full, kkt_solve, k)
    return _staged(structure, options, v, stage, full, kkt_solve)


def _seeding(structure: ConicStructure, k: int, batch: int) -> bool:
    """Whether a staged call of `batch` items starts most of them from k seeds' answers: a
    PSD, exp or power cone present (from unrelated values SOC-only items rarely reach the
    acceptance within refine's steps), a batch of at least SEED_MIN_BATCH and 2k, and no
    earlier call of the structure in which the seeds' answers left too many items short."""
    c = structure.cones
    with _LOCK:
        off = _NO_SEEDS.get(structure, False)
    return (k > 0 and batch >= max(SEED_MIN_BATCH, 2 * k) and bool(c.s or c.ep or c.p)
            and not off)


def _seeded(structure: ConicStructure, options: Any, v: dict[str, torch.Tensor | None],
            stage: StageSolve, full: FullSolve,
            kkt_solve: Callable[[torch.Tensor | None, torch.Tensor], KktSolve],
            k: int) -> NativeResult:
    """The full solve of k items spread over the batch (the seeds: for so few items it
    costs less than the stage and its Newton steps), then refine.py's Newton steps for
    every other item from the answer of its nearest optimal seed (2-norm of the (q, A, b)
    values); the items those steps leave short of accept_tol, and the seeds the full solve
    left short, go through :func:`_staged`. Only where every item's P values are the same
    (the seeds' full solve certifies them convex); else the whole batch is staged."""
    B = v["q"].shape[0]
    P = None if v["P"] is None else v["P"].detach()
    if P is not None and not bool((P == P[:1]).all()):
        # Each item's P goes to the native solve, which certifies it convex (and names the
        # caller's index when it is not).
        return _staged(structure, options, v, stage, full, kkt_solve)
    seeds = np.unique(np.linspace(0, B - 1, k).round().astype(np.int64))
    sidx = torch.from_numpy(seeds)
    try:
        sx, sy, ss, _, sstatus, siters, stimes, sengine = full(
            {key: None if t is None else t[sidx] for key, t in v.items()})
    except (SolverError, ValueError):
        # The whole batch through the stage, which may solve that seed, and whose errors
        # (a failed item, a nonconvex P) name the caller's index.
        return _staged(structure, options, v, stage, full, kkt_solve)
    good = np.array([st_ == "optimal" for st_ in sstatus])
    is_seed = np.zeros(B, dtype=bool)
    is_seed[seeds] = True
    x, y, s = (torch.zeros(B, r.shape[1], dtype=torch.float64).index_copy(0, sidx, r)
               for r in (sx, sy, ss))
    engine = [SEED_ENGINE] * B
    for j, i in enumerate(seeds):
        engine[i] = sengine[j]
    iters = torch.zeros(B, dtype=torch.int64).index_copy(0, sidx, siters)
    times = torch.zeros(B, dtype=torch.float64).index_copy(0, sidx, stimes)
    taken = np.zeros(B, dtype=bool)
    taken[seeds[good]] = True
    if good.any():
        t0 = time.perf_counter()
        data = torch.cat([v["q"].detach(), v["A"].detach(), v["b"].detach()], dim=1)
        cand = torch.from_numpy(seeds[good])
        near = cand[torch.cdist(data, data[cand]).argmin(1)]
        start = ~is_seed
        x, y, s = (t[near].index_copy(0, sidx, r) for t, r in ((x, sx), (y, sy), (s, ss)))
        x, y, s, done, steps = newton_steps(structure, options, v, x, y, s, start, kkt_solve)
        iters = torch.where(torch.from_numpy(start), steps, iters)
        times = torch.where(torch.from_numpy(start),
                            (time.perf_counter() - t0) / max(int(start.sum()), 1), times)
        taken |= done
        if done.sum() < STAGE_MIN_ACCEPT * (B - seeds.size):
            with _LOCK:
                _NO_SEEDS[structure] = True
    return with_rest((x, y, s, torch.ones(B, dtype=torch.bool), ["optimal"] * B, iters, times,
                      engine), ~taken, v,
                     lambda sub, _: _staged(structure, options, sub, stage, full, kkt_solve))


def _staged(structure: ConicStructure, options: Any, v: dict[str, torch.Tensor | None],
            stage: StageSolve, full: FullSolve,
            kkt_solve: Callable[[torch.Tensor | None, torch.Tensor], KktSolve]
            ) -> NativeResult:
    """The stage on every item of `v`, refine.py's Newton steps from its points, the full
    solve for the items they leave short of accept_tol."""
    length = stage_iterations(structure)
    out = stage(v, length)
    status = list(out["status"])
    if "nonconvex" in status:  # the full solve raises, naming the caller's indices
        return full(v)
    B = len(status)
    usable = np.array([st_ in ("optimal", "optimal_inaccurate") for st_ in status])
    x, y, s = (torch.from_numpy(np.array(out[k], dtype=np.float64)) for k in ("x", "y", "s"))
    taken = np.zeros(B, dtype=bool)
    steps = torch.zeros(B, dtype=torch.int64)
    if usable.any():
        # refine's own target and floor, as conic._refined after a full solve: an accepted
        # item is as polished as the full path's (a stop at accept_tol / 10 saved 5-8% of a
        # layer call but left the next call's kept answer a step to take).
        x, y, s, taken, steps = newton_steps(structure, options, v, x, y, s, usable,
                                             kkt_solve)
    _record(structure, length, int(taken.sum()), B)
    iters = torch.as_tensor(np.asarray(out["iterations"]), dtype=torch.int64) + steps
    times = torch.as_tensor(np.asarray(out["solve_time"]), dtype=torch.float64)
    return with_rest((x, y, s, torch.ones(B, dtype=torch.bool), ["optimal"] * B, iters, times,
                      list(out["engine"])), ~taken, v, lambda sub, _: full(sub))
