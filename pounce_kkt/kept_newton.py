"""Kept answers for curved-cone problems: each item's previous answer, refined on new values.

For a structure with a SOC, PSD, exp or power cone, under `SolveOptions.engine` "auto" or
"active_set" and with `refine=True`, every call keeps its solved items' answers (x, y, s) on
the structure. The next call with the same batch size first starts each item from its kept
answer and takes the Newton steps of pounce_kkt/refine.py on the new values (the backward's
own KKT solve per step). The refined point is ``s = Pi_K(w), y = Pi_K(w) - w``: in K x K*
and complementary by construction, so a residual ``res`` (refine.py) at or below
:func:`accept_tol` makes it an optimal point of the new problem; such an item is answered
with engine :data:`KEPT_ENGINE` and status "optimal", and the interior-point method solves
the others (their Newton steps spent, not counted in their iterations).

Items are matched by batch index (a training loop's batch item i is the same problem each
step). P values must equal the kept call's (bitwise): the native solve is what certifies
P_eff positive semidefinite, so a new P always goes to it. An item whose check failed is
not checked again for 2**k - 1 calls after its k-th consecutive failure (k capped at
:data:`BACKOFF_MAX_EXP`), nor, with SOCs as the only curved cones, when its values moved by
more than :data:`KEPT_MAX_MOVE`; "active_set" checks every item every call. Measured in
docs/exp-socp-profile.md ("Kept answers").
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.errors import SolverError
from pounce_kkt.refine import REFINE_OPTIMAL, KktSolve, refine
from pounce_kkt.structure import ConicStructure

# SolveInfo.engine of an item answered from its kept answer.
KEPT_ENGINE = "newton_kept"
# A kept answer's Newton steps stop once its residual is at most this fraction of
# accept_tol (measured in docs/exp-socp-profile.md, "Kept answers").
STOP_FRACTION = 0.1
# After the k-th consecutive failed check, an item skips 2**k - 1 calls (k <= this).
BACKOFF_MAX_EXP = 4
# Under "auto", an item of a layer whose curved cones are all SOCs goes straight to the IPM
# when its (q, A, b) moved by more than this fraction of their size (2-norms) since its kept
# answer: from a far answer the Newton steps cost more than the SOC IPM. With PSD, exp or
# power cones the kept answer paid even on unrelated values (docs/exp-socp-profile.md,
# "Kept answers").
KEPT_MAX_MOVE = 0.25

# (x, y, s, ok, status, iterations, solve_time, engine) of conic._solve_native.
NativeResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str],
                     torch.Tensor, torch.Tensor, list[str]]


@dataclass
class _Kept:
    """One call's answers: x (B, n), y, s (B, m), which items hold one (valid), the P
    values they were solved with (None without P), their (q, A, b) values side by side
    (only where the move gate applies, else None), consecutive failed checks and calls left
    to skip per item."""

    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    valid: np.ndarray
    P: torch.Tensor | None
    data: torch.Tensor | None
    fails: np.ndarray
    skip: np.ndarray


class _Store:
    """The kept answers of one structure; `take` hands them to one call at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: _Kept | None = None

    def take(self, B: int) -> _Kept | None:
        with self._lock:
            kept, self._kept = self._kept, None
        return kept if kept is not None and kept.x.shape[0] == B else None

    def put(self, kept: _Kept) -> None:
        with self._lock:
            self._kept = kept


_STORES: weakref.WeakKeyDictionary[ConicStructure, _Store] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: fresh stores and locks. A lock that another thread of the parent
    held at the fork stays held forever in the child, and the child keeps no answers of
    its parent (as the native handle's per-item states, rust/core/src/qp_sessions.rs)."""
    global _STORES, _STORES_LOCK
    _STORES = weakref.WeakKeyDictionary()
    _STORES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _store(structure: ConicStructure) -> _Store:
    with _STORES_LOCK:
        st = _STORES.get(structure)
        if st is None:
            st = _STORES[structure] = _Store()
        return st


def curved(cones: ConeDims) -> bool:
    """Whether any SOC, PSD, exp or power cone is present."""
    return bool(cones.q or cones.s or cones.ep or cones.p)


def applies(structure: ConicStructure, options: Any) -> bool:
    """Whether a call under `options` (a SolveOptions) keeps and uses answers."""
    return curved(structure.cones) and options.engine != "ipm" and bool(options.refine)


def accept_tol(tol: float) -> float:
    """The residual at or below which a refined kept answer is taken: the stricter of the
    call's tol and REFINE_OPTIMAL (below which refinement calls an item optimal)."""
    return min(float(tol), REFINE_OPTIMAL)


def newton_steps(structure: ConicStructure, options: Any, v: dict[str, torch.Tensor | None],
                 x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, items: np.ndarray,
                 solve: Callable[[torch.Tensor | None, torch.Tensor], KktSolve],
                 stop: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]:
    """refine.py's Newton steps on the values `v` from (x, y, s), for the items (B,) bool,
    in one refine call: x, y, s after them, which items met :func:`accept_tol` of the
    options' tol (B,) bool, and the steps (B,). `stop`: an item stops once its residual is
    at most `stop` (refine's target and floor), None: refine's own target and floor (as
    after a full solve). `solve(P, A)` gives the KKT solve. A KKT matrix the backward's
    path cannot factor (RuntimeError, as in conic._refined) leaves (x, y, s) and no item
    accepted."""
    B = x.shape[0]
    P = None if v["P"] is None else v["P"].detach()
    A = v["A"].detach()
    accept = accept_tol(options.tol_for(structure.cones))
    floor = {} if stop is None else {"target": stop, "floor": stop}
    try:
        r = refine(structure, P, v["q"].detach(), A, v["b"].detach(), x, y, s,
                   torch.from_numpy(items), solve(P, A), **floor)
    except RuntimeError:
        return x, y, s, np.zeros(B, dtype=bool), torch.zeros(B, dtype=torch.int64)
    return r.x, r.y, r.s, items & (r.after <= accept).numpy(), r.steps


def _gated(cones: ConeDims) -> bool:
    """Whether the move gate applies: SOCs are the only curved cones."""
    return not (cones.s or cones.ep or cones.p)


def _data(v: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """(B, n + nnzA + m): an item's q, A and b values side by side."""
    return torch.cat([v["q"].detach(), v["A"].detach(), v["b"].detach()], dim=1)


def _moved(data: torch.Tensor, kept: torch.Tensor) -> np.ndarray:
    """(B,) relative 2-norm change of each item's values since its kept answer."""
    size = torch.linalg.vector_norm(kept, dim=1).clamp(min=1e-300)
    return (torch.linalg.vector_norm(data - kept, dim=1) / size).numpy()


def _rows_equal(a: torch.Tensor | None, b: torch.Tensor | None, B: int) -> np.ndarray:
    """(B,) bool: rows of a and b equal (True everywhere when both are None)."""
    if a is None and b is None:
        return np.ones(B, dtype=bool)
    if a is None or b is None:
        return np.zeros(B, dtype=bool)
    return (a.detach() == b.detach()).all(1).numpy()


def with_rest(answered: NativeResult, rest: np.ndarray, v: dict[str, torch.Tensor | None],
              solve_rest: Callable[[dict[str, torch.Tensor | None], np.ndarray], NativeResult]
              ) -> NativeResult:
    """conic._solve_native's result for a batch whose items outside the (B,) bool mask
    `rest` have their answer in `answered` (a NativeResult over the whole batch; its x, y,
    s may be None when `rest` holds every item): `solve_rest(sub, idx)` solves the items
    `idx = flatnonzero(rest)`, whose values `sub` are those rows of `v` (a NativeResult in
    that order): its rows, ok, statuses and engine names replace answered's, its iterations
    and solve times are added to answered's. A SolverError from `solve_rest` is raised
    again with the caller's batch index and the whole batch's statuses (answered's
    elsewhere)."""
    x, y, s, ok, status, iters, times, engine = answered
    if not rest.any():
        return answered
    B = rest.shape[0]
    status, engine = list(status), list(engine)
    where = np.flatnonzero(rest)
    idx = torch.from_numpy(where)
    try:
        rx, ry, rs, rok, rstatus, riters, rtimes, rengine = solve_rest(
            {k: None if t is None else t[idx] for k, t in v.items()}, where)
    except SolverError as e:
        for j, i in enumerate(where):
            status[i] = e.statuses[j]
        raise SolverError(int(where[e.batch_index]), e.status, status) from e
    for j, i in enumerate(where):
        status[i], engine[i] = rstatus[j], rengine[j]
    iters, times = iters.index_add(0, idx, riters), times.index_add(0, idx, rtimes)
    if x is None or where.size == B:
        return rx, ry, rs, rok, status, iters, times, engine
    x, y, s = (t.index_copy(0, idx, r) for t, r in zip((x, y, s), (rx, ry, rs), strict=True))
    return x, y, s, ok.index_copy(0, idx, rok), status, iters, times, engine


def solve(structure: ConicStructure, options: Any, v: dict[str, torch.Tensor | None],
          warm: tuple[Any, Any, Any], native: Callable[..., NativeResult],
          kkt_solve: Callable[[torch.Tensor | None, torch.Tensor], KktSolve]) -> NativeResult:
    """conic._solve_native's result, with items answered from their kept answers where they
    are accepted; `native(structure, options, v, warm)` solves the rest (engine "ipm", so it
    does not come back here); `kkt_solve(P, A)` is the refinement's KKT solve on those
    values."""
    B = v["q"].shape[0]
    store = _store(structure)
    kept = store.take(B)
    t0 = time.perf_counter()
    taken = np.zeros(B, dtype=bool)
    steps = torch.zeros(B, dtype=torch.int64)
    if kept is not None and not _rows_equal(kept.P, v["P"], B).all():
        # A new P goes to the native solve, which certifies it convex (whole batch, so that
        # its errors name the caller's indices).
        kept = None
    data = _data(v) if _gated(structure.cones) else None
    if kept is not None:
        due = kept.valid.copy()
        if options.engine != "active_set":
            due &= kept.skip == 0
            if data is not None and kept.data is not None:
                due &= _moved(data, kept.data) <= KEPT_MAX_MOVE
            kept.skip = np.maximum(kept.skip - 1, 0)
        if due.any():
            stop = accept_tol(options.tol_for(structure.cones)) * STOP_FRACTION
            rx, ry, rs, good, steps = newton_steps(structure, options, v, kept.x, kept.y,
                                                   kept.s, due, kkt_solve, stop)
            taken = good
            x, y, s = (torch.where(torch.from_numpy(good)[:, None], t, torch.nan)
                       for t in (rx, ry, rs))
            failed = due & ~good
            kept.fails = np.where(good, 0, np.where(failed, kept.fails + 1, kept.fails))
            kept.skip = np.where(failed, 2 ** np.minimum(kept.fails, BACKOFF_MAX_EXP) - 1,
                                 kept.skip)
    spent = time.perf_counter() - t0
    if kept is None:
        kept = _Kept(torch.zeros(B, structure.n, dtype=torch.float64),
                     torch.zeros(B, structure.m, dtype=torch.float64),
                     torch.zeros(B, structure.m, dtype=torch.float64),
                     np.zeros(B, dtype=bool), None, data, np.zeros(B, dtype=np.int64),
                     np.zeros(B, dtype=np.int64))
    answered = taken.sum()
    x, y, s, ok, status, iters, times, engine = with_rest(
        ((x, y, s) if answered else (None, None, None))
        + (torch.ones(B, dtype=torch.bool), ["optimal"] * B,
           torch.where(torch.from_numpy(taken), steps, 0),
           torch.from_numpy(np.where(taken, spent / max(int(answered), 1), 0.0)),
           [KEPT_ENGINE] * B), ~taken, v,
        lambda sub, rest: native(structure, replace(options, engine="ipm"), sub,
                                 tuple(None if w is None else np.ascontiguousarray(w[rest])
                                       for w in warm)))
    okn = ok.numpy().copy()
    store.put(_Kept(x.clone(), y.clone(), s.clone(), okn,
                    None if v["P"] is None else v["P"].detach().clone(), data,
                    np.where(okn, kept.fails, 0), np.where(okn, kept.skip, 0)))
    return x, y, s, ok, status, iters, times, engine
