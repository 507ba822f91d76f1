"""The forward solve of a batch: native NLP solves per element, run in lockstep.

Each element is its own NLP (:class:`BatchNlp`). Solved elementwise, each has its own
native ``nlp_solve`` with its own filter line search, so a hard element neither shortens
another's steps nor holds back its convergence. The solves run on worker threads (the
native solve releases the GIL) and meet at a :class:`Hub`: the calling thread waits until
every running solve has asked for a callback, answers all of them from one vectorised
evaluation of the objective, and repeats. Solved jointly, the batch is one block-diagonal
NLP (one line search for all elements, no thread hand-offs); elements a joint solve leaves
unconverged then continue elementwise. ``batch_solve="auto"`` solves batches of up to
``ELEMENTWISE_MAX_BATCH`` elements elementwise and larger ones jointly first.

Restarts: an element whose solve ended unconverged with iterations left (a stall, a
failed restoration, a joint solve's stop), or whose rotation moved more than
``recenter_angle`` radians in its chart, is solved again from where it stopped, in a chart
centred there, at most ``max_restarts`` times.

Budget: an element's iterations over its solves never exceed ``max_iterations``.
Status: an element is converged when its solve ended with Ipopt's convergence test
(``solve_succeeded``) or its acceptable-level test (``solved_to_acceptable_level``), or when
the KKT error at its final point is at most ``acceptable_tol`` (e.g. a stop on a search
direction too small to matter), or, in an unconstrained, unbounded solve, when Theseus' own
test held (``SolveSettings.error_tolerances``: the error metric changed by less than
``abs_err_tolerance`` or ``rel_err_tolerance`` of itself over one iteration, at a scaled
dual infeasibility of at most ``ERROR_TEST_MAX_INF_DU``; status ``ERROR_CONVERGED``); any
other end (iteration limit, a stall with a larger KKT
error, a restoration failure) is not converged.

Interrupts: an exception raised while answering a callback (``KeyboardInterrupt``
included) stops every running solve at its next callback and is raised from
:func:`solve_batch`.
"""

from __future__ import annotations

import _thread
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from theseus.geometry import SE2, SE3, SO2, SO3

from pounce_kkt.nlp_kkt import project_onto_bounds
from pounce_kkt.torch_threads import serial_torch

from .batch_nlp import BatchNlp, Request
from .native import require_nlp_solve

__all__ = ["BATCH_SOLVES", "BatchResult", "SolveSettings", "solve_batch", "write_solution"]

SUCCESS = {"solve_succeeded", "solved_to_acceptable_level"}
# An unconstrained, unbounded solve stopped by Theseus' own convergence test (see _Problem).
ERROR_CONVERGED = "error_change_converged"
# ... once the iterate's scaled dual infeasibility is at most this as well (a tiny change
# of the error from a cut-back line-search step is not convergence).
ERROR_TEST_MAX_INF_DU = 1e-2
BATCH_SOLVES = ("auto", "elementwise", "joint")
# "auto": the largest batch solved elementwise. Each callback of each element costs a
# thread hand-off (about 0.1 ms on a loaded 2-core machine), so larger batches of small
# problems are solved jointly first (curve fit, B=64: 0.18 s elementwise, 0.014 s joint).
ELEMENTWISE_MAX_BATCH = 8
# A solve without constraints or bounds that ends this much (relative) above its best
# iterate's objective has jumped (see _absorb); far above rounding, far below the jumps
# seen (10x).
ROSE_SLACK = 1e-4
OBJECTIVE_ROSE = "objective_rose_above_an_earlier_iterate"
# Rotation coordinates inside each group's tangent vector (Theseus' ordering).
_ROTATION_COORDS = {SO2: slice(0, 1), SE2: slice(2, 3), SO3: slice(0, 3), SE3: slice(3, 6)}


@dataclass
class SolveSettings:
    """What the optimizer asks of one forward solve."""

    max_iterations: int
    options: dict[str, Any]
    max_restarts: int = 3
    recenter_angle: float = 1.0
    batch_solve: str = "auto"
    # every iterate's error metric and optim var values (one callback round per iteration)
    track_iterates: bool = False
    # every iterate's chart point ``delta`` only (a copy of ``x`` in the native callback)
    record_points: bool = False
    # Theseus' (abs_err_tolerance, rel_err_tolerance), applied to unconstrained,
    # unbounded solves; None: Ipopt's tests only
    error_tolerances: tuple[float, float] | None = None
    # an element stopped by that test continues, in a chart centred where it stopped (in the
    # chart it stopped in, the gradient through the exp map's right Jacobians stalled at a
    # KKT error of 3e-8..1e-7 on an 800-pose SE3 graph: 20 iterations, not 14), to
    # Ipopt's tol (the implicit gradient is only as accurate as the solution), taking full
    # steps; a solve under Theseus' test uses Gauss-Newton Hessians throughout, polished or
    # not (BatchNlp.gauss_newton_only)
    # and, once past Theseus' test, autograd gradients where Theseus' Jacobians are less
    # accurate than tol (BatchNlp.autograd_gradient)
    polish: bool = False


@dataclass
class BatchResult:
    """Per-element outcome: ``delta`` (B, n) around the chart's base, bound multipliers and
    active masks, constraint multipliers ``lam`` (B, m), native status, convergence,
    iterations used and the solver's KKT error; ``iterates[b]`` maps an iteration to
    (error metric, optim var values, delta) when iterates are tracked, ``points[b]`` an
    iteration to its delta (detached float64, in the chart it was taken in) when they are
    tracked or points are recorded."""

    batch_size: int
    n: int
    m: int
    delta: np.ndarray = field(init=False)
    iterates: list[dict[int, tuple]] = field(init=False)
    points: list[dict[int, np.ndarray]] = field(init=False)

    def __post_init__(self) -> None:
        b, n = self.batch_size, self.n
        self.delta, self.z_l, self.z_u = np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n))
        self.at_lo = np.zeros((b, n), dtype=bool)
        self.at_hi = np.zeros((b, n), dtype=bool)
        self.lam = np.zeros((b, self.m))
        self.status = np.array(["not_solved"] * b, dtype=object)
        self.converged = np.zeros(b, dtype=bool)
        self.solved = np.zeros(b, dtype=bool)  # a finite final iterate exists
        self.iterations = np.zeros(b, dtype=np.int64)
        self.kkt_error = np.full(b, np.inf)
        self.restoration_iterations = 0
        self.iterates = [{} for _ in range(b)]
        self.points = [{} for _ in range(b)]


class _Aborted(Exception):
    """Raised in a callback of a solve that another callback's exception stopped."""


class _Problem:
    """What ``nlp_solve`` calls back into for the elements ``rows``. It keeps the iterate
    with the lowest objective (``best``: objective, x), outside the restoration phase."""

    def __init__(self, hub: Hub, rows: np.ndarray, offset: int, track: bool,
                 error_tolerances: tuple[float, float] | None = None, record: bool = False,
                 tol: float = 0.0):
        self.hub, self.rows, self.offset, self.track = hub, rows, offset, track
        self.tol = tol  # the solve's tol (see BatchNlp.settled)
        self.record = record or track
        self.error_tolerances = error_tolerances
        self.error_converged = False
        self._f_last: float | None = None
        self.restoration_iterations = 0
        self._last_it = -1
        self.best: tuple[float, np.ndarray] | None = None
        self._recent: dict[bytes, float] = {}  # objective at the last points asked for

    def objective(self, x):  # noqa: D102 (names fixed by the native bridge)
        f = self.hub.call(Request(self.rows, "objective", x))
        if len(self._recent) > 16:
            self._recent.clear()
        self._recent[np.ascontiguousarray(x).tobytes()] = f
        return f

    def gradient(self, x):  # noqa: D102
        return self.hub.call(Request(self.rows, "gradient", x))

    def _error_test(self, f: float, inf_du: float) -> bool:
        """Theseus' error-change test on consecutive iterates, once the scaled dual
        infeasibility is at most ``ERROR_TEST_MAX_INF_DU``."""
        if self.error_tolerances is None:
            return False
        last, self._f_last = self._f_last, f
        return inf_du <= ERROR_TEST_MAX_INF_DU and _theseus_test(f, last, *self.error_tolerances)

    def constraints(self, x):  # noqa: D102
        return self.hub.call(Request(self.rows, "constraints", x))

    def jacobian(self, x):  # noqa: D102
        return self.hub.call(Request(self.rows, "jacobian", x))

    def hessian(self, x, obj_factor, lam):  # noqa: D102
        return self.hub.call(Request(self.rows, "hessian", x, float(obj_factor), lam))

    def iteration(self, it, obj, inf_pr, inf_du, mu, restoration, x) -> bool:  # noqa: D102
        self.restoration_iterations += int(bool(restoration))
        if self.hub.error is not None:
            return False  # stop: another callback raised
        if x is not None and not restoration:
            # the objective as this problem defines it (the callback's obj may be scaled)
            f = self._recent.get(np.ascontiguousarray(x).tobytes())
            if f is None:
                f = self.objective(x)
            if self.best is None or f < self.best[0]:
                self.best = (float(f), np.array(x, dtype=np.float64))
            converged = self._error_test(float(f), float(inf_du))
            if max(float(inf_pr), float(inf_du)) <= self.tol:
                self.hub.nlp.settled(self.rows, x)
        else:
            converged = False
        # POUNCE may run a short second pass from the converged point (its iteration count
        # restarts at 0); only the first pass's iterates are the history.
        if self.record and x is not None and not restoration and it > self._last_it:
            self._last_it = it
            xs = np.array(x, dtype=np.float64).reshape(len(self.rows), -1)
            res, k = self.hub.result, self.offset + int(it)
            for j, b in enumerate(self.rows):
                res.points[b][k] = xs[j]
            if self.track:
                fs, values = self.hub.call(Request(self.rows, "iteration", x))
                for j, b in enumerate(self.rows):
                    res.iterates[b][k] = (
                        float(fs[j]), {n: v[j] for n, v in values.items()}, xs[j])
        if converged:
            self.error_converged = True
            return False
        return self.hub.error is None


def _theseus_test(f: float, f_last: float | None, abs_tol: float, rel_tol: float) -> bool:
    """Theseus' convergence test (``NonlinearOptimizer._check_convergence``) on the error
    metric ``f`` of an iterate after one of ``f_last``."""
    if abs(f) < abs_tol:
        return True
    if f_last is None:
        return False
    change = abs(f_last - f)
    return change < abs_tol or change / max(abs(f_last), 1e-300) < rel_tol


class _Slot:
    """A waiting callback's answer: set once, by the answering thread."""

    __slots__ = ("answer", "aborted", "done")

    def __init__(self) -> None:
        self.answer, self.aborted, self.done = None, False, threading.Event()


class Hub:
    """Answers the callbacks of the running solves, in lockstep (see the module doc)."""

    def __init__(self, nlp: BatchNlp, result: BatchResult):
        self.nlp, self.result = nlp, result
        nlp.drop_answers_ahead()  # computed under the previous solves' settings
        self.error: BaseException | None = None
        self._threaded = False
        self._cv = threading.Condition()
        self._pending: list[tuple[Request, _Slot]] = []
        self._in_flight: list[tuple[Request, _Slot]] = []
        self._live = 0

    def call(self, req: Request):
        if self.error is not None:
            raise _Aborted("stopped: another callback raised")
        ahead = self.nlp.answer_ahead(req)
        if ahead is not None:
            return ahead
        if not self._threaded:
            try:
                return self.nlp.serve([req])[0]
            except BaseException as exc:
                self.error = exc
                raise
        slot = _Slot()
        with self._cv:
            self._pending.append((req, slot))
            if len(self._pending) >= self._live:
                self._cv.notify()  # the calling thread answers a full round
        slot.done.wait()
        if slot.aborted:
            raise _Aborted("stopped: another callback raised")
        return slot.answer

    def run(self, jobs: list) -> list:
        """Run the solves ``jobs`` (callables) and return their results; one job runs
        on this thread, several on worker threads answered from here."""
        if len(jobs) == 1:
            out = [jobs[0]()]
            if self.error is not None:
                raise self.error
            return out
        self._threaded = True
        results: list = [None] * len(jobs)

        def work(k: int) -> None:
            try:
                results[k] = jobs[k]()
            except BaseException as exc:  # surfaced by run() on the calling thread
                results[k] = exc
                with self._cv:
                    if self.error is None:
                        self.error = exc
            finally:
                with self._cv:
                    self._live -= 1
                    self._cv.notify()

        self._live = len(jobs)
        # bare threads: threading.Thread.start() waits until each new thread has run, one
        # after the other (8 starts: 12-20 ms on a loaded 2-core machine, 0.2 ms here);
        # ``_live`` counts the jobs not yet ended
        started = 0
        try:
            for k in range(len(jobs)):
                _thread.start_new_thread(work, (k,))
                started += 1
        except BaseException as exc:  # the jobs not started end here; the others below
            with self._cv:
                self._live -= len(jobs) - started
                if self.error is None:
                    self.error = exc
        try:
            self._answer_rounds()
        except BaseException as exc:
            with self._cv:
                if self.error is None:
                    self.error = exc
        # release every waiting callback (and any that comes later) until all have ended
        while True:
            with self._cv:
                pending, self._pending = self._in_flight + self._pending, []
                self._in_flight = []
                live = self._live
            for _, slot in pending:
                slot.aborted = True
                slot.done.set()
            if not live:
                break
            with self._cv:
                if self._live and not self._pending:
                    self._cv.wait(0.01)
        self._threaded = False
        if self.error is not None:
            raise self.error
        return results

    def _answer_rounds(self) -> None:
        while True:
            with self._cv:
                while self._live and len(self._pending) < self._live and self.error is None:
                    self._cv.wait(0.1)
                if not self._live or self.error is not None:
                    return
                batch, self._pending = self._pending, []
                self._in_flight = batch  # released by run() if serving raises
            answers = self.nlp.serve([req for req, _ in batch])
            for (_, slot), answer in zip(batch, answers, strict=True):
                slot.answer = answer
                slot.done.set()
            self._in_flight = []


def solve_batch(nlp: BatchNlp, settings: SolveSettings) -> BatchResult:
    """Solve every element (see the module docstring); the chart is left at its base. The
    callbacks' Torch work (many small batched ops) runs on one intra-op thread
    (:func:`pounce_kkt.torch_threads.serial_torch`)."""
    with serial_torch():
        return _solve_batch(nlp, settings)


def _solve_batch(nlp: BatchNlp, settings: SolveSettings) -> BatchResult:
    bsz, n, m = nlp.batch_size, nlp.n, nlp.m
    res = BatchResult(bsz, n, m)
    finite = nlp.finite_start()
    res.status[~finite] = "invalid_number_detected"
    todo = np.flatnonzero(finite)
    chart = nlp.chart
    joint = settings.batch_solve == "joint" or (
        settings.batch_solve == "auto" and bsz > ELEMENTWISE_MAX_BATCH
    )
    error_tolerances = settings.error_tolerances
    polishing = False
    # Theseus' test stops on Gauss-Newton iterates, with or without a polish to follow (the
    # hybrid's exact blocks cost se2_planning 19.5 s and error 3336 without a gradient,
    # against 2.7 s and 228.6 on Gauss-Newton Hessians, docs/theseus-examples.md)
    nlp.gauss_newton_only = error_tolerances is not None
    for attempt in range(settings.max_restarts + 1):
        if not todo.size:
            break
        groups = [todo] if joint and attempt == 0 else [np.array([b]) for b in todo]
        # a solve that ends at Ipopt's tol takes its gradients by autograd where Theseus'
        # linearisation is not that accurate (BatchNlp.linearization_inaccurate)
        nlp.tol = float(settings.options.get("tol") or 1e-8)
        nlp.autograd_gradient = error_tolerances is None and nlp.linearization_inaccurate(
            nlp.tol)
        # the polish (past Theseus' test, to tol): Gauss-Newton plus the robust losses'
        # rank-one curvature, 3 iterations instead of 7 on robust SE3 graphs
        # (docs/theseus-scale.md)
        nlp.robust_curvature = nlp.gauss_newton_only and error_tolerances is None
        hub = Hub(nlp, res)
        jobs = [_job(nlp, hub, g, settings, int(res.iterations[g].max()), error_tolerances,
                     polishing) for g in groups]
        for g, out in zip(groups, hub.run(jobs), strict=True):
            _absorb(res, g, out, settings.options.get("acceptable_tol", 1e-6))
        # Elements that stopped unconverged, or far out in a rotation chart (where the
        # exponential map's Jacobian degrades and can even vanish, making spurious
        # stationary points), continue alone from where they stopped, in a chart
        # centred there, while they have iterations left.
        far = _chart_stretch(chart, res.delta[todo]) > settings.recenter_angle
        polishing = False
        if settings.polish and error_tolerances is not None:
            polishing = res.status[todo] == ERROR_CONVERGED
            far |= polishing
            polishing = bool(polishing.all())
            error_tolerances = None
        todo = todo[(~res.converged[todo] | far) & res.solved[todo]
                    & (res.iterations[todo] < settings.max_iterations)
                    & (res.status[todo] != OBJECTIVE_ROSE)]
        if not todo.size or attempt == settings.max_restarts:
            break
        d_full = np.zeros((bsz, n))
        d_full[todo] = res.delta[todo]
        chart.apply(torch.as_tensor(d_full, dtype=chart.base[0].dtype))
        chart.recenter()
        res.delta[todo] = 0.0
        nlp.recentred(todo, d_full)
    chart.restore()
    nlp.gauss_newton_only = nlp.autograd_gradient = nlp.robust_curvature = False
    return res


def _job(nlp: BatchNlp, hub: Hub, rows: np.ndarray, settings: SolveSettings, used: int,
         error_tolerances: tuple[float, float] | None, polishing: bool = False):
    """The native solve of the elements ``rows`` with the iterations they have left
    (``error_tolerances``: Theseus' test, see :class:`SolveSettings`; ``polishing``: they
    all passed it, so every full step is taken: the objective's rounding, ~1e-10 on
    robust SE3 graphs, fails a line search there)."""
    nlp_solve = require_nlp_solve()
    k, n, s = rows.size, nlp.n, nlp.s
    xl, xu = (b[rows].reshape(-1) for b in nlp.variable_bounds())
    gl, gu = (b[rows].reshape(-1) for b in nlp.constraint_bounds())
    if nlp.m:
        jr, jc = s.jac.batch_indices(k)
    else:
        jr, jc = np.zeros(0, np.int64), np.zeros(0, np.int64)
    hr, hc = s.hess.batch_indices(k)
    x0 = np.clip(np.zeros(k * n), xl, xu)
    monotone = nlp.m == 0 and not nlp.bounds
    options = {
        "tol": 1e-8, "print_level": 0, "bound_relax_factor": 0.0,
        "honor_original_bounds": "yes",
        # POUNCE re-runs a solve that ends at max_iter under the other barrier-parameter
        # strategy; without constraints or bounds there is no barrier term, so the re-run
        # repeats the same iterates (a second max_iter's worth of callbacks, not counted
        # in its iterations)
        **({"mu_strategy_fallback": "no"} if monotone else {}),
        **settings.options,
        "max_iter": int(settings.max_iterations - used),
    }
    if polishing:
        options["accept_every_trial_step"] = "yes"
    problem = _Problem(hub, rows, used, settings.track_iterates,
                       error_tolerances if monotone else None, settings.record_points,
                       float(options["tol"]))

    def run() -> dict[str, Any]:
        raw = nlp_solve(problem, x0, xl, xu, gl, gu, jr, jc, hr, hc, options, True)
        raw["restoration_iterations"] = problem.restoration_iterations
        raw["bounds"] = (xl, xu)
        raw["best"] = problem.best
        raw["monotone"] = monotone
        if problem.error_converged:
            raw["status"] = ERROR_CONVERGED
        return raw

    return run


def _absorb(res: BatchResult, rows: np.ndarray, raw: dict[str, Any],
            acceptable_tol: float) -> None:
    """Record one solve's outcome for its elements."""
    err = raw.get("callback_error")
    if err is not None and not isinstance(err, _Aborted):
        raise err
    k, n, m = rows.size, res.n, res.m
    res.status[rows] = raw["status"]
    res.iterations[rows] += int(raw["iterations"])
    res.restoration_iterations += raw["restoration_iterations"]
    if raw["x"] is None:
        return
    best = raw.get("best")
    if raw.get("monotone") and best is not None and raw["obj"] is not None and (
        raw["obj"] > best[0] + ROSE_SLACK * (1.0 + abs(best[0]))
    ):
        # Without constraints or bounds every accepted step must lower the objective. The
        # filter line search accepts any trial point when the step is not a descent
        # direction and the constraint violation is zero (Ipopt's h-type test,
        # 0 <= (1 - gamma) * 0); near a flat, nearly singular minimiser (a robust loss
        # with a weak gauge prior) a full step can jump onto the loss' plateau, whose
        # vanishing gradient then passes the convergence test at a far worse objective.
        # Keep the best iterate, reported as not converged.
        res.status[rows] = OBJECTIVE_ROSE
        res.delta[rows] = best[1].reshape(k, n)
        res.solved[rows] = np.isfinite(res.delta[rows]).all(axis=1)
        res.converged[rows] = False
        return
    x = raw["x"].reshape(k, n)
    xl, xu = (b.reshape(k, n) for b in raw["bounds"])
    z_l, z_u = raw["z_l"].reshape(k, n), raw["z_u"].reshape(k, n)
    x, at_lo, at_hi = project_onto_bounds(x, xl, xu, z_l, z_u)
    res.delta[rows], res.z_l[rows], res.z_u[rows] = x, z_l, z_u
    res.at_lo[rows], res.at_hi[rows] = at_lo, at_hi
    if m:
        res.lam[rows] = raw["lambda"].reshape(k, m)
    res.solved[rows] = np.isfinite(x).all(axis=1)
    res.kkt_error[rows] = float(raw["kkt_error"])
    res.converged[rows] = res.solved[rows] & (
        (raw["status"] in SUCCESS) | (raw["status"] == ERROR_CONVERGED)
        | (res.kkt_error[rows] <= acceptable_tol)
    )


def _chart_stretch(chart, delta: np.ndarray) -> np.ndarray:
    """Largest rotation angle (tangent norm of the rotation part) of any rotation-carrying
    variable in its chart, per row; Vector/Point charts never degrade."""
    far = np.zeros(delta.shape[0])
    for v in chart.vars:
        rot = _ROTATION_COORDS.get(type(v))
        if rot is not None:
            start = chart.offsets[v.name].start
            part = delta[:, start + rot.start : start + rot.stop]
            far = np.maximum(far, np.linalg.norm(part, axis=1))
    return far


def write_solution(nlp: BatchNlp, res: BatchResult) -> None:
    """Set the optim vars to the solution and re-centre the chart there. Active bounds hold
    exactly (``x0 + (bound - x0)`` can differ from the bound by an ulp)."""
    chart = nlp.chart
    chart.apply(torch.as_tensor(res.delta, dtype=chart.base[0].dtype))
    for bnd in nlp.bounds:
        sl = chart.offsets[bnd.var.name]
        t = bnd.var.tensor.reshape(res.batch_size, -1)
        lo_m, hi_m = torch.as_tensor(res.at_lo[:, sl]), torch.as_tensor(res.at_hi[:, sl])
        t = torch.maximum(torch.minimum(t, bnd.upper), bnd.lower)
        t = torch.where(lo_m, bnd.lower.detach(), torch.where(hi_m, bnd.upper.detach(), t))
        bnd.var.update(t.reshape(bnd.var.tensor.shape))
    chart.recenter()
    chart.restore()
