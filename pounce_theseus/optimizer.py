"""``PounceOptimizer``: Theseus' NonlinearOptimizer solved by POUNCE's NLP interior-point
method, with exact implicit gradients, bounds and general constraints.

Forward: the batch is one block-diagonal NLP in tangent coordinates around the current
values (:mod:`pounce_theseus.batch_nlp`), solved natively (filter line search, restoration
phase). The chart is re-centred at the solution and, if a Lie-group variable moved by more
than ``recenter_angle`` radians in its chart, the NLP is solved again from there (at most
``max_recenters`` times). Bounds are projected onto exactly at the end: the interior-point
iterate stays ~1e-9 inside an active bound, and the reported solution sits on it.

Backward: the implicit function theorem at the KKT point with the exact Lagrangian Hessian
(:func:`pounce_kkt.nlp_kkt.implicit_step`), active bounds and constraints included.
Theseus' ``unroll`` and ``truncated`` modes give that same gradient (an interior-point
iteration has no meaningful unroll; a one-time note says so); ``implicit`` is native and
``dlm`` works through ``TheseusLayer``. Unlike Theseus' implicit mode (one Gauss-Newton
step at the solution) the second-order residual terms are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from theseus import Objective, Vectorize
from theseus.constants import __FROM_THESEUS_LAYER_TOKEN__
from theseus.geometry import SE2, SE3, SO2, SO3
from theseus.optimizer.nonlinear import (
    BackwardMode,
    NonlinearOptimizer,
    NonlinearOptimizerInfo,
    NonlinearOptimizerStatus,
)

from pounce_kkt.nlp_kkt import implicit_step

from .batch_nlp import INF, BatchNlp, Evaluation, ProblemStructure
from .constraints import Constraint, resolve_bounds
from .hessian import ExactHessian, make_hessian
from .lazy_jacobians import defer_vectorized_jacobians
from .native import require_nlp_solve

__all__ = ["PounceOptimizer"]

# optimize() keywords Theseus' own optimizers use that mean nothing for an interior-point
# solve; each is accepted with a one-time warning.
_IGNORED_KEYS = {
    "damping", "adaptive_damping", "ellipsoidal_damping", "damping_eps", "down_damping_ratio",
    "up_damping_ratio", "backward_num_iterations", "dlm_epsilon", "num_solver_contexts",
    "trust_region_size", "accept_threshold", "__keep_final_step_size__",
    "__strict_implicit_final_gn__",
}
# constructor keywords of GaussNewton/LevenbergMarquardt with no meaning here.
_IGNORED_INIT_KEYS = {
    "linear_solver_cls", "linear_solver_kwargs", "linearization_cls", "linearization_kwargs",
    "step_size",
}
_SUCCESS = {"solve_succeeded", "solved_to_acceptable_level"}
# Rotation coordinates inside each group's tangent vector (Theseus' ordering).
_ROTATION_COORDS = {SO2: slice(0, 1), SE2: slice(2, 3), SO3: slice(0, 3), SE3: slice(3, 6)}


class PounceOptimizer(NonlinearOptimizer):
    """Drop-in replacement for ``th.GaussNewton`` / ``th.LevenbergMarquardt``.

    Args:
        objective: the Theseus objective.
        max_iterations: interior-point iteration limit.
        tol: interior-point convergence tolerance (Ipopt's ``tol``, scaled KKT error).
        hessian: ``"exact"`` (default; Lagrangian Hessian with residual curvature) or
            ``"gauss-newton"`` (J'J, cheaper; the backward stays exact).
        bounds: ``{var_or_name: (lower, upper)}`` on Vector variables.
        constraints: a list of :class:`pounce_theseus.Constraint`.
        acceptable_tol: per-element KKT error under which an element of a solve that did
            not converge as a whole still counts as CONVERGED.
        solver_options: extra POUNCE/Ipopt options, e.g. ``{"mu_strategy": "monotone"}``.
        vectorize, abs_err_tolerance, rel_err_tolerance: as in Theseus.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        max_iterations: int = 100,
        tol: float = 1e-8,
        hessian: str = "exact",
        bounds: dict | None = None,
        constraints: Sequence[Constraint] | None = None,
        acceptable_tol: float = 1e-6,
        solver_options: dict[str, Any] | None = None,
        recenter_angle: float = 1.0,
        max_recenters: int = 3,
        vectorize: bool = False,
        abs_err_tolerance: float = 1e-10,
        rel_err_tolerance: float = 1e-8,
        **kwargs: Any,
    ):
        ignored = sorted(set(kwargs) & _IGNORED_INIT_KEYS)
        unknown = sorted(set(kwargs) - _IGNORED_INIT_KEYS)
        if unknown:
            raise TypeError(f"PounceOptimizer: unexpected keyword argument(s) {unknown}")
        if ignored:
            warnings.warn(
                f"PounceOptimizer ignores {ignored}: it solves with POUNCE's interior-point "
                "method, not a linear solver/step-size loop.",
                stacklevel=2,
            )
        super().__init__(
            objective,
            vectorize=vectorize,
            abs_err_tolerance=abs_err_tolerance,
            rel_err_tolerance=rel_err_tolerance,
            max_iterations=max_iterations,
            step_size=1.0,
        )
        self.tol = float(tol)
        self.acceptable_tol = float(acceptable_tol)
        self.hessian = make_hessian(hessian)
        self.bounds_spec = dict(bounds or {})
        self.constraints = list(constraints or [])
        self.solver_options = dict(solver_options or {})
        self.recenter_angle = float(recenter_angle)
        self.max_recenters = int(max_recenters)
        self._warned: set[str] = set()
        self._obj64: Objective | bool | None = None
        self.last_solve: dict[str, Any] = {}
        self._restoration_iterations = 0
        self._structure: ProblemStructure | None = None

    # ------------------------------------------------------------------ keywords
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _check_kwargs(self, kwargs: dict[str, Any], backward_mode: BackwardMode) -> None:
        for key in kwargs:
            if key == __FROM_THESEUS_LAYER_TOKEN__:
                continue
            if key in _IGNORED_KEYS:
                self._warn_once(key, f"PounceOptimizer.optimize ignores {key!r}: it has no "
                                     "meaning for an interior-point solve.")
            else:
                self._warn_once(key, f"PounceOptimizer.optimize ignores unknown key {key!r}.")
        if backward_mode in (BackwardMode.UNROLL, BackwardMode.TRUNCATED):
            self._warn_once(
                "backward_mode",
                f"PounceOptimizer: backward_mode={backward_mode.name.lower()} gives the "
                "implicit-function-theorem gradient at the KKT point (an interior-point "
                "iteration has no meaningful unroll).",
            )

    # ------------------------------------------------------------------ main loop
    def _optimize_impl(
        self,
        track_best_solution: bool = False,
        track_err_history: bool = False,
        track_state_history: bool = False,
        verbose: bool = False,
        backward_mode: BackwardMode | str = BackwardMode.UNROLL,
        end_iter_callback=None,
        **kwargs: Any,
    ) -> NonlinearOptimizerInfo:
        backward_mode = BackwardMode.resolve(backward_mode)
        self._check_kwargs(kwargs, backward_mode)
        with torch.no_grad():
            info = self._init_info(track_best_solution, track_err_history, track_state_history)
        bsz = self.objective.batch_size
        self._restoration_iterations = 0
        # This solve never reads the vectorised Jacobians: later updates need not compute them.
        defer_vectorized_jacobians(self.objective)
        solve_obj, constraints = self._float64_problem()
        structure = self._structure_for(solve_obj, constraints)
        bounds = resolve_bounds(self.bounds_spec, solve_obj, bsz)
        tracker = _IterationTracker(self, info, verbose, end_iter_callback)

        with torch.no_grad():
            result = self._solve_batch(structure, bounds, tracker)
        self._write_solution(structure, bounds, result)
        if solve_obj is not self.objective:
            with torch.no_grad():
                self.objective.update({
                    name: var.tensor.to(self.objective.dtype)
                    for name, var in solve_obj.optim_vars.items()
                })
            structure = self._structure_for(self.objective, self.constraints)
            bounds = resolve_bounds(self.bounds_spec, self.objective, bsz)
            result.final_hessian = None  # it belongs to the float64 copy's chart
        self._fill_info(info, result, track_best_solution)
        if torch.is_grad_enabled():
            self._attach_implicit_gradient(structure, bounds, result)
        return info

    def _structure_for(self, objective: Objective, constraints) -> ProblemStructure:
        """The layout of the solve on ``objective``: kept across calls when that is the
        optimizer's own objective (Theseus refuses to optimize an objective changed after
        the optimizer was built), with the chart re-centred at the current values; built
        afresh for the float64 copy, whose constraints are rebound on every call."""
        if objective is not self.objective:
            return ProblemStructure(objective, constraints)
        if self._structure is None:
            self._structure = ProblemStructure(objective, constraints)
        else:
            self._structure.chart.recenter()
        return self._structure

    def _float64_problem(self) -> tuple[Objective, list[Constraint]]:
        """The objective (and constraints) the solve evaluates: the objective itself when
        it is float64, else a float64 copy synchronised with its current tensors (the
        solve runs in float64; the solution is cast back and the backward runs on the
        original objective)."""
        if self.objective.dtype == torch.float64:
            return self.objective, self.constraints
        if self._obj64 is False:
            return self.objective, self.constraints
        if self._obj64 is None:
            try:
                obj64 = self.objective.copy()
            except Exception as exc:  # a cost function without a working _copy_impl
                self._obj64 = False
                self._warn_once("copy", f"PounceOptimizer: cannot copy the objective to "
                                        f"float64 ({exc!r}); solving in {self.objective.dtype}.")
                return self.objective, self.constraints
            obj64.to(dtype=torch.float64)
            if self.objective.vectorized:
                Vectorize(obj64)
                defer_vectorized_jacobians(obj64)
            self._obj64 = obj64
        obj64 = self._obj64
        named = {**self.objective.optim_vars, **self.objective.aux_vars}
        obj64.update({
            name: v.tensor.detach().to(torch.float64)
            for name, v in named.items()
            if name in obj64.optim_vars or name in obj64.aux_vars
        })
        return obj64, [c.rebind(obj64) for c in self.constraints]

    # ------------------------------------------------------------------ forward
    def _solve_batch(self, structure, bounds, tracker) -> _BatchResult:
        """Solve every element; isolate elements that make a joint solve fail."""
        bsz = self.objective.batch_size
        n, chart = structure.n, structure.chart
        res = _BatchResult(bsz, n)
        first = self._start_nlp(structure, bounds, tracker)
        finite = first.finite_start()
        res.status[~finite] = "invalid_number_detected"
        todo = np.flatnonzero(finite)
        # The check's evaluation at the starting point is the solve's first one.
        reuse = first if todo.size == bsz else None
        groups = [todo] if todo.size else []
        rounds = 0
        while groups:
            idx = groups.pop(0)
            out = self._solve_recentred(structure, bounds, idx, tracker, reuse)
            # One joint solve of the whole batch: its final Hessian serves the backward.
            res.final_hessian = out.get("final_hessian") if reuse is not None else None
            reuse = None
            res.absorb(idx, out)
            failed = idx[~out["converged"]]
            if failed.size and failed.size < idx.size and rounds < 1:
                groups.append(failed)
            elif failed.size > 1 and failed.size == idx.size and rounds < 2:
                groups.extend(np.array([i]) for i in failed)
            rounds += 1
        chart.restore()
        return res

    def _start_nlp(self, structure, bounds, tracker, idx=None) -> BatchNlp:
        idx = np.arange(self.objective.batch_size) if idx is None else idx
        return BatchNlp(structure, self.hessian, idx, bounds, tracker.callback_for(idx))

    def _solve_recentred(self, structure, bounds, idx, tracker, nlp=None) -> dict[str, Any]:
        """Solve elements ``idx``; re-centre Lie-group charts that moved far and re-solve."""
        chart = structure.chart
        total_iters = 0
        for attempt in range(self.max_recenters + 1):
            out = self._solve_once(structure, bounds, idx, tracker, nlp)
            nlp = None
            total_iters += out["iterations"]
            delta = out["delta"]
            far = self._chart_stretch(chart, delta) > self.recenter_angle
            if attempt == self.max_recenters or not bool(far.any()) or out["x"] is None:
                break
            # Move the base to the solution for the elements that need it, and solve again.
            d_full = chart.zeros(self.objective.batch_size)
            d_full[torch.as_tensor(idx)] = torch.as_tensor(delta, dtype=d_full.dtype)
            chart.apply(d_full)
            chart.recenter()
            out["recentred_delta"] = delta
        out["iterations"] = total_iters
        self._restoration_iterations += out["restoration_iterations"]
        return out

    @staticmethod
    def _chart_stretch(chart, delta: np.ndarray) -> torch.Tensor:
        """Largest rotation angle (tangent norm of the rotation part) of any rotation-
        carrying variable in its chart, per element; Vector/Point charts never degrade."""
        d = torch.as_tensor(delta)
        far = torch.zeros(d.shape[0], dtype=d.dtype)
        for v in chart.vars:
            rot = _ROTATION_COORDS.get(type(v))
            if rot is not None:
                start = chart.offsets[v.name].start
                part = d[:, start + rot.start : start + rot.stop]
                far = torch.maximum(far, part.norm(dim=1))
        return far

    def _solve_once(self, structure, bounds, idx, tracker, nlp=None) -> dict[str, Any]:
        nlp_solve = require_nlp_solve()
        if nlp is None:
            nlp = self._start_nlp(structure, bounds, tracker, idx)
        tracker.bind(nlp)
        k, n, m = nlp.k, structure.n, nlp.m
        xl, xu = nlp.variable_bounds()
        gl, gu = nlp.constraint_bounds()
        jr, jc = nlp.jacobian_structure()
        hr, hc = nlp.hessian_structure()
        x0 = nlp.start()
        options = {
            "tol": self.tol,
            "max_iter": int(self.params.max_iterations),
            "print_level": 0,
            "bound_relax_factor": 0.0,
            "honor_original_bounds": "yes",
            "acceptable_tol": self.acceptable_tol,
        }
        options.update(self.solver_options)
        raw = nlp_solve(
            nlp, x0, xl, xu, gl, gu, jr, jc, hr, hc, options, tracker.wants_iterates
        )
        if raw["callback_error"] is not None and raw["x"] is None:
            raise raw["callback_error"]
        out: dict[str, Any] = {
            "status": raw["status"],
            "iterations": int(raw["iterations"]),
            "restoration_iterations": nlp.restoration_iterations,
            "x": raw["x"],
        }
        if raw["x"] is None:
            out.update(
                delta=np.zeros((k, n)), z_l=np.zeros((k, n)), z_u=np.zeros((k, n)),
                at_lo=np.zeros((k, n), dtype=bool), at_hi=np.zeros((k, n), dtype=bool),
                lam=np.zeros((k, m)), converged=np.zeros(k, dtype=bool),
                kkt_error=np.full(k, np.inf),
            )
            return out
        x = raw["x"].reshape(k, n)
        z_l, z_u = raw["z_l"].reshape(k, n), raw["z_u"].reshape(k, n)
        lam = raw["lambda"].reshape(k, m) if m else np.zeros((k, 0))
        x, at_lo, at_hi = _project_onto_bounds(x, xl.reshape(k, n), xu.reshape(k, n), z_l, z_u)
        if raw["status"] in _SUCCESS:
            # The joint KKT error is the max over the blocks: every element converged.
            err = np.full(k, float(raw["kkt_error"]))
            converged = np.ones(k, dtype=bool)
        else:
            err = self._element_kkt_error(
                nlp, x, z_l, z_u, lam, gl.reshape(k, m), gu.reshape(k, m)
            )
            converged = err <= max(self.acceptable_tol, self.tol)
        out.update(delta=x, z_l=z_l, z_u=z_u, lam=lam, converged=converged, kkt_error=err,
                   at_lo=at_lo, at_hi=at_hi)
        # The solver's last Hessian, when it was evaluated at the returned point (POUNCE
        # evaluates one there), is the backward's: kept with the chart it lives in.
        h = nlp.objective_hessian_at(raw["x"]) if np.array_equal(x.reshape(-1), raw["x"]) else None
        if h is not None:
            # without bounds the solution is written exactly as evaluated: its error
            # metric is the cached one
            f = None if bounds else nlp.evaluate(raw["x"]).f.detach()
            out["final_hessian"] = _FinalHessian(h, list(structure.chart.base), x, f)
        return out

    def _element_kkt_error(self, nlp, x, z_l, z_u, lam, gl, gu) -> np.ndarray:
        """Unscaled per-element max(dual infeasibility, constraint violation)."""
        flat = x.reshape(-1)
        k, n = x.shape
        grad = nlp.gradient(flat).reshape(k, n)
        stat = grad - z_l + z_u
        viol = np.zeros(k)
        if nlp.m:
            jac = nlp.dense_jacobian(nlp.evaluate(flat))[nlp.idx].cpu().numpy()
            stat = stat + np.einsum("kmn,km->kn", jac, lam)
            g = nlp.constraints(flat).reshape(k, nlp.m)
            viol = np.maximum(np.maximum(gl - g, g - gu), 0.0).max(axis=1)
        return np.maximum(np.abs(stat).max(axis=1), viol)

    # ------------------------------------------------------------------ solution
    def _write_solution(self, structure, bounds, res) -> None:
        chart = structure.chart
        delta = torch.as_tensor(res.delta, dtype=chart.base[0].dtype)
        with torch.no_grad():
            chart.apply(delta)
            # Active bounds hold exactly: x0 + (bound - x0) can differ from bound by an ulp.
            for bnd in bounds:
                sl = chart.offsets[bnd.var.name]
                t = bnd.var.tensor.reshape(res.batch_size, -1)
                lo_m = torch.as_tensor(res.at_lo[:, sl])
                hi_m = torch.as_tensor(res.at_hi[:, sl])
                t = torch.maximum(torch.minimum(t, bnd.upper), bnd.lower)
                t = torch.where(lo_m, bnd.lower.detach(), torch.where(hi_m, bnd.upper.detach(), t))
                bnd.var.update(t.reshape(bnd.var.tensor.shape))
        chart.recenter()
        chart.restore()

    def _fill_info(self, info: NonlinearOptimizerInfo, res, track_best_solution: bool) -> None:
        final = res.final_hessian
        if final is not None and final.f is not None:
            err = final.f.clone()
        else:
            with torch.no_grad():
                err = self.objective.error_metric().detach()
        statuses = []
        for b in range(res.batch_size):
            if res.converged[b]:
                statuses.append(NonlinearOptimizerStatus.CONVERGED)
            elif res.status[b] == "maximum_iterations_exceeded":
                statuses.append(NonlinearOptimizerStatus.MAX_ITERATIONS)
            else:
                statuses.append(NonlinearOptimizerStatus.FAIL)
        info.status = np.array(statuses)
        iters = torch.as_tensor(res.iterations, dtype=torch.long)
        conv = torch.as_tensor(res.converged)
        info.converged_iter = torch.where(conv, iters, torch.full_like(iters, -1))
        info.last_err = err
        # Theseus' convention: err_history[:, best_iter + 1] is the best error.
        info.best_iter = (iters - 1).clamp(min=0)
        if track_best_solution:
            info.best_err = err.clone()
            info.best_solution = {
                v.name: v.tensor.detach().clone().cpu()
                for v in self.objective.optim_vars.values()
            }
        if info.err_history is not None:
            last = torch.as_tensor(res.iterations).clamp(max=self.params.max_iterations)
            info.err_history[torch.arange(res.batch_size), last] = err.cpu().to(
                info.err_history.dtype
            )
        if info.state_history is not None:
            last = torch.as_tensor(res.iterations).clamp(max=self.params.max_iterations)
            for v in self.objective.optim_vars.values():
                hist = info.state_history[v.name]
                hist[torch.arange(res.batch_size), ..., last] = v.tensor.detach().cpu().to(
                    hist.dtype
                )
        if info.err_history is not None:
            # The first iterate reaching the history's minimum (Theseus keeps the first of
            # equal errors); in exact arithmetic the interior-point errors decrease here.
            hist_arg = info.err_history.argmin(dim=1)
            info.best_iter = (hist_arg - 1).clamp(min=0).to(torch.long)
        self.last_solve = {
            "status": list(res.status), "iterations": res.iterations.copy(),
            "kkt_error": res.kkt_error.copy(),
            "restoration_iterations": self._restoration_iterations,
        }

    # ------------------------------------------------------------------ backward
    def _attach_implicit_gradient(self, structure, bounds, res) -> None:
        """Leave ``x* (+) (delta - delta.detach())`` in the optim vars, with ``delta`` the
        implicit step of :func:`pounce_kkt.nlp_kkt.implicit_step` (value x*, derivative
        the IFT one). Elements that did not converge get no gradient."""
        ok = torch.as_tensor(res.converged)
        if not bool(ok.any()):
            return
        saved = self._sanitise_failed_rows(ok)
        try:
            self._implicit_step(structure, bounds, res, ok)
        finally:
            for var, tensor in saved:
                var.update(tensor)

    def _sanitise_failed_rows(self, ok: torch.Tensor) -> list:
        """Give elements that did not converge finite, detached aux data (a copy of a
        converged element's) for the backward, so their NaNs cannot reach a shared
        parameter through 0 * NaN products; returns what to restore."""
        saved = []
        if bool(ok.all()):
            return saved
        good = int(ok.nonzero()[0])
        for var in self.objective.aux_vars.values():
            t = var.tensor
            if t.ndim >= 1 and t.shape[0] == ok.numel() and ok.numel() > 1:
                mask = ok.view(-1, *([1] * (t.ndim - 1))).to(t.device)
                saved.append((var, t))
                var.update(torch.where(mask, t, t[good : good + 1].detach()))
        return saved

    def _implicit_step(self, structure, bounds, res, ok: torch.Tensor) -> None:
        """Leave the implicit step in the optim vars. It is taken in the chart around the
        solution, or, when the solver's final Hessian is at hand, in the chart that
        Hessian lives in (at ``delta*``; same point, same function: the IFT derivative
        does not depend on the chart)."""
        chart = structure.chart
        recentred = chart.base
        reuse = res.final_hessian
        if reuse is not None:
            chart.base = reuse.base
        try:
            attached = self._implicit_step_in_chart(structure, bounds, res, ok, reuse)
        finally:
            chart.base = recentred
        if not attached:
            chart.restore()

    def _implicit_step_in_chart(self, structure, bounds, res, ok, reuse) -> bool:
        chart = structure.chart
        bsz, n = self.objective.batch_size, structure.n
        dtype = chart.base[0].dtype
        # The backward always uses the exact Lagrangian Hessian, whatever the forward used.
        nlp = BatchNlp(structure, ExactHessian(), np.arange(bsz), bounds)
        at = chart.zeros(bsz)
        if reuse is not None:
            at = torch.as_tensor(reuse.delta, dtype=dtype, device=at.device).clone()
        with torch.enable_grad():
            delta0 = at.requires_grad_(True)
            chart.apply(delta0)
            e = self.objective.error()
            f = self.objective._error_metric_fn(e).reshape(-1)
            c = structure.constraint_values()
            lam = torch.as_tensor(res.lam, dtype=dtype)
            lag = f.sum() + ((lam * c).sum() if c is not None else 0.0)
            (grad_l,) = torch.autograd.grad(lag, delta0, create_graph=True, allow_unused=True)
            if grad_l is None or not grad_l.requires_grad:
                return False
            ev = Evaluation(delta0, e, f, c, structure.vjp)
            if reuse is not None:
                h = structure.hess.dense(reuse.values.to(dtype))
            else:
                h = structure.hess.dense(
                    nlp.hessian_values(ev, 1.0, lam if c is not None else None)
                )
            rows, resid, active = [], [], []
            if c is not None:
                jac = nlp.dense_jacobian(ev)
                lo, hi = _constraint_limits(structure, bsz, chart.base[0])
                act_c, target = _active_constraints(c.detach(), lam, lo.detach(), hi.detach())
                # inactive rows may have an infinite limit; their residual is unused
                tgt = torch.where(target, hi, lo)
                tgt = torch.where(torch.isfinite(tgt), tgt, torch.zeros_like(tgt))
                rows.append(jac)
                resid.append(c - tgt)
                active.append(act_c)
            if bounds:
                lo_b, hi_b, at_lo, at_hi = _bound_rows(chart, bounds, res, bsz, n, dtype)
                rows.append(torch.eye(n, dtype=dtype).expand(bsz, n, n))
                resid.append(delta0 - torch.where(at_hi, hi_b, lo_b))
                active.append(at_lo | at_hi)
            if rows:
                step = implicit_step(
                    grad_l, h, torch.cat(rows, 1), torch.cat(resid, 1), torch.cat(active, 1)
                )
            else:
                step = implicit_step(grad_l, h)
            step = torch.where(ok.unsqueeze(1), step, torch.zeros_like(step))
            # value: exactly the solution written (delta* + 0); derivative: the step's
            chart.apply(delta0.detach() + (step - step.detach()))
        return True


class _FinalHessian:
    """The objective Hessian (B, nnz) the solver evaluated at its final point ``delta``
    (B, n) of the chart with base ``base``, and the error metric there (B,) when that
    point is the solution as written (None otherwise)."""

    def __init__(self, values: torch.Tensor, base: list[torch.Tensor], delta: np.ndarray,
                 f: torch.Tensor | None = None):
        self.values, self.base, self.delta, self.f = values, base, delta, f


class _BatchResult:
    """Per-element outcome gathered over the (possibly several) joint solves."""

    def __init__(self, batch_size: int, n: int):
        self.batch_size = batch_size
        self.delta = np.zeros((batch_size, n))
        self.z_l = np.zeros((batch_size, n))
        self.z_u = np.zeros((batch_size, n))
        self.at_lo = np.zeros((batch_size, n), dtype=bool)
        self.at_hi = np.zeros((batch_size, n), dtype=bool)
        self.lam: np.ndarray | None = None
        self.status = np.array(["not_solved"] * batch_size, dtype=object)
        self.converged = np.zeros(batch_size, dtype=bool)
        self.iterations = np.zeros(batch_size, dtype=np.int64)
        self.kkt_error = np.full(batch_size, np.inf)
        self.final_hessian: _FinalHessian | None = None

    def absorb(self, idx: np.ndarray, out: dict[str, Any]) -> None:
        if self.lam is None:
            self.lam = np.zeros((self.batch_size, out["lam"].shape[1]))
        keep = out["converged"] | ~self.converged[idx]
        sel = idx[keep]
        self.delta[sel] = out["delta"][keep]
        self.z_l[sel] = out["z_l"][keep]
        self.z_u[sel] = out["z_u"][keep]
        self.at_lo[sel] = out["at_lo"][keep]
        self.at_hi[sel] = out["at_hi"][keep]
        self.lam[sel] = out["lam"][keep]
        self.status[sel] = out["status"]
        self.converged[sel] = out["converged"][keep]
        self.iterations[sel] = out["iterations"]
        self.kkt_error[sel] = out["kkt_error"][keep]


class _IterationTracker:
    """Per-iteration bookkeeping (err/state history, verbose, end_iter_callback) from the
    interior-point iterates the native solver reports."""

    def __init__(self, opt: PounceOptimizer, info, verbose: bool, end_iter_callback):
        self.opt, self.info, self.verbose = opt, info, verbose
        self.end_iter_callback = end_iter_callback
        self.wants_iterates = bool(
            verbose or end_iter_callback is not None
            or info.err_history is not None or info.state_history is not None
        )
        self.nlp: BatchNlp | None = None
        self._prev: torch.Tensor | None = None

    def bind(self, nlp: BatchNlp) -> None:
        self.nlp = nlp
        self._prev = None
        self._last_it = -1

    def callback_for(self, idx: np.ndarray):
        return self.on_iteration if self.wants_iterates else None

    def on_iteration(self, it: int, x: np.ndarray | None, restoration: bool) -> bool:
        # POUNCE may run a short second pass from the converged point (its iteration
        # count restarts at 0); only the first pass's iterates are the history.
        if x is None or self.nlp is None or restoration or it <= self._last_it:
            return True
        self._last_it = it
        opt, info, nlp = self.opt, self.info, self.nlp
        obj = nlp.th_objective
        with torch.no_grad():
            delta = nlp.to_delta(x)
            nlp.chart.apply(delta)
            err = obj.error_metric().detach()
            col = it
            if col <= opt.params.max_iterations:
                if info.err_history is not None:
                    hist = info.err_history
                    hist[nlp.idx, col] = err[nlp.idx].cpu().to(hist.dtype)
                if info.state_history is not None:
                    for v in obj.optim_vars.values():
                        hist = info.state_history[v.name]
                        hist[nlp.idx, ..., col] = v.tensor.detach()[nlp.idx].cpu().to(hist.dtype)
            if self.verbose:
                print(f"Nonlinear optimizer. Iteration: {it}. Error: {err.mean().item()}")
            if self.end_iter_callback is not None and it > 0:
                step = delta - (self._prev if self._prev is not None else torch.zeros_like(delta))
                self.end_iter_callback(opt, info, step, it - 1)
            self._prev = delta
            nlp.chart.restore()
        return True


def _project_onto_bounds(x, xl, xu, z_l, z_u) -> np.ndarray:
    """Clip into the box and put elements whose bound is active exactly on it (an
    interior-point iterate keeps a ~sqrt(mu) gap; the multiplier exceeding the gap marks
    the bound as active)."""
    x = np.clip(x, xl, xu)
    at_lo = np.isfinite(xl) & (xl > -INF) & (z_l > x - xl)
    at_hi = np.isfinite(xu) & (xu < INF) & (z_u > xu - x)
    at_hi &= ~at_lo
    x = np.where(at_lo, xl, x)
    return np.where(at_hi, xu, x), at_lo, at_hi


def _constraint_limits(structure, bsz, like):
    los, his = [], []
    for con, k in zip(structure.constraints, structure.con_rows, strict=True):
        lo, hi = con.limits(bsz, k, like)
        los.append(lo)
        his.append(hi)
    return torch.cat(los, 1), torch.cat(his, 1)


def _active_constraints(c, lam, lo, hi):
    """(active mask, use-upper mask) for constraint rows; equalities always active."""
    eq = lo == hi
    slack_lo = c - lo
    slack_hi = hi - c
    at_lo = (lam < 0) & (lam.abs() > slack_lo) & torch.isfinite(lo)
    at_hi = (lam > 0) & (lam.abs() > slack_hi) & torch.isfinite(hi)
    return eq | at_lo | at_hi, at_hi & ~eq


def _bound_rows(chart, bounds, res, bsz, n, dtype):
    """Bounds on the tangent coordinates around the solution (the chart's base) and the
    masks of the active ones (as decided when projecting the solution onto them)."""
    lo = torch.zeros((bsz, n), dtype=dtype)
    hi = torch.zeros((bsz, n), dtype=dtype)
    base = dict(zip((v.name for v in chart.vars), chart.base, strict=True))
    for bnd in bounds:
        sl = chart.offsets[bnd.var.name]
        x0 = base[bnd.var.name].reshape(bsz, -1)
        lo[:, sl] = torch.where(torch.isfinite(bnd.lower), bnd.lower - x0, 0.0)
        hi[:, sl] = torch.where(torch.isfinite(bnd.upper), bnd.upper - x0, 0.0)
    return lo, hi, torch.as_tensor(res.at_lo), torch.as_tensor(res.at_hi)
