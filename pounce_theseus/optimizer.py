"""``PounceOptimizer``: Theseus' NonlinearOptimizer solved by POUNCE's NLP interior-point
method, with exact implicit gradients, bounds and general constraints.

Forward: each batch element is an NLP in tangent coordinates around the current values
(:class:`~pounce_theseus.batch_nlp.BatchNlp`), solved natively by the filter line-search
interior-point method, elementwise in lockstep or jointly (:mod:`pounce_theseus.solve`).
Backward: the implicit step at the returned point (:mod:`pounce_theseus.backward`) for
every element that converged. Under Theseus' ``unroll`` and ``truncated`` modes an element
that ends unconverged is differentiated through its steps instead
(:mod:`pounce_theseus.unrolled`, replayed from the iterates' chart points that the solve
records in those modes); ``implicit`` keeps the implicit step there too, and ``dlm`` works
through ``TheseusLayer``. Under ``unroll`` and ``truncated`` (Theseus' default is unroll) a
least-squares solve without constraints or bounds takes Theseus' step, with or without a
gradient: ``step_size`` times the (LevenbergMarquardt-damped) Gauss-Newton step as the
interior-point iteration's Newton step, so that a budget too small to converge returns
the iterate, and the derivative, that Theseus' optimizer configured the same way would
(``unrolled.StepRule``); under ``implicit`` (and with constraints or bounds) it takes full
interior-point steps: the path does not change a converged answer or its gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from theseus import Objective
from theseus.optimizer.nonlinear import (
    BackwardMode,
    NonlinearOptimizer,
    NonlinearOptimizerInfo,
)

from .backward import attach_implicit_gradient
from .batch_nlp import BatchNlp, ProblemStructure
from .compat import (
    FROM_LAYER_TOKEN,
    defer_vectorized_jacobians,
    init_info,
    is_least_squares,
    weighted_error,
)
from .constraints import Constraint, resolve_bounds
from .float64 import Float64Copy
from .hessian import make_hessian
from .info import fill_info, replay_iterations
from .linear_solver import LinearSolverAtSolution
from .solve import BATCH_SOLVES, SolveSettings, solve_batch, write_solution
from .unrolled import (
    REPLAY_MAX_ENTRIES,
    STEP_RTOL,
    StepRule,
    TheseusStepNlp,
    attach_unrolled_gradient,
    replay_plan,
)

__all__ = ["PounceOptimizer"]

DEFAULT_TOL = 1e-8

# optimize() keywords Theseus' own optimizers use that mean nothing for an interior-point
# solve; each is accepted with a one-time warning.
_IGNORED_KEYS = {
    "adaptive_damping", "down_damping_ratio",
    "up_damping_ratio", "dlm_epsilon", "num_solver_contexts",
    "trust_region_size", "accept_threshold", "__keep_final_step_size__",
    "__strict_implicit_final_gn__",
}
# LevenbergMarquardt's damping keywords: they shape the steps of a solve whose steps are
# differentiated (unrolled.StepRule) and are ignored, with a one-time warning, elsewhere.
_STEP_KEYS = ("damping", "ellipsoidal_damping", "damping_eps")


class PounceOptimizer(NonlinearOptimizer):
    """Drop-in replacement for ``th.GaussNewton`` / ``th.LevenbergMarquardt``.

    The positional arguments are theirs; the linear-solver ones (``linear_solver_cls``,
    ``linearization_cls``, their kwargs) have no meaning here and are ignored with one
    warning. ``step_size`` (and ``optimize``'s ``damping``, ``ellipsoidal_damping``,
    ``damping_eps``) shape the steps under ``backward_mode`` unroll and truncated (see
    the module docstring); ``implicit`` solves take full steps. Unknown keywords warn and
    are ignored.

    Args:
        objective: the Theseus objective.
        vectorize, abs_err_tolerance, rel_err_tolerance: as in Theseus.
        max_iterations: interior-point iteration budget of each element per call.
        tol: interior-point convergence tolerance (Ipopt's ``tol``, scaled KKT error).
            Given, the solve converges on Ipopt's tests alone; None (default): ``tol``
            is 1e-8 and an unconstrained, unbounded solve also stops when Theseus' own
            test holds (the error changed by less than ``abs_err_tolerance`` or
            ``rel_err_tolerance`` of itself over one iteration), as Theseus' optimizers do.
        hessian: ``"exact"`` (default; Lagrangian Hessian with residual curvature) or
            ``"gauss-newton"`` (J'J, cheaper; the backward stays exact).
        bounds: ``{var_or_name: (lower, upper)}`` on Vector variables.
        constraints: a list of :class:`pounce_theseus.Constraint`.
        acceptable_tol: Ipopt's acceptable-level tolerance: an element whose KKT error
            stays under it for Ipopt's ``acceptable_iter`` iterations counts as CONVERGED.
        solver_options: extra POUNCE/Ipopt options, e.g. ``{"mu_strategy": "monotone"}``.
        max_restarts, recenter_angle: an element that stopped unconverged, or whose
            rotation moved more than ``recenter_angle`` radians in its chart, is solved
            again from where it stopped, in a chart centred there, at most
            ``max_restarts`` times (within ``max_iterations``).
        batch_solve: ``"elementwise"`` (one solve per element, in lockstep), ``"joint"``
            (one block-diagonal solve first, one line search for all) or ``"auto"``
            (elementwise up to 8 elements; see :mod:`pounce_theseus.solve`).
    """

    @property
    def linear_solver(self) -> Any:
        """A Theseus linear solver linearised at the current point (for LEO's sampling
        and models that read it); the solve never uses it (pounce_theseus.linear_solver)."""
        return self._linear_solver.read()

    @linear_solver.setter
    def linear_solver(self, solver: Any) -> None:
        self._linear_solver.replace(solver)

    def __init__(
        self,
        objective: Objective,
        linear_solver_cls: Any = None,
        vectorize: bool = False,
        linearization_cls: Any = None,
        linearization_kwargs: dict | None = None,
        linear_solver_kwargs: dict | None = None,
        abs_err_tolerance: float = 1e-10,
        rel_err_tolerance: float = 1e-8,
        max_iterations: int = 20,
        step_size: float = 1.0,
        *,
        tol: float | None = None,
        hessian: str = "exact",
        bounds: dict | None = None,
        constraints: Sequence[Constraint] | None = None,
        acceptable_tol: float = 1e-6,
        solver_options: dict[str, Any] | None = None,
        max_restarts: int = 3,
        recenter_angle: float = 1.0,
        batch_solve: str = "auto",
        **kwargs: Any,
    ):
        linear = {"linear_solver_cls": linear_solver_cls, "linearization_cls": linearization_cls,
                  "linearization_kwargs": linearization_kwargs,
                  "linear_solver_kwargs": linear_solver_kwargs}
        ignored = sorted(k for k, v in linear.items() if v is not None)
        if ignored:
            warnings.warn(f"PounceOptimizer ignores {ignored} in its solve: it uses POUNCE's "
                          "interior-point method, not a linear solver (the "
                          "linear-solver arguments only build `linear_solver`, read by "
                          "LEO-style code at the solution).", stacklevel=2)
        if not float(step_size) > 0.0:
            raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
        self._linear_solver = LinearSolverAtSolution(objective, **linear)
        if kwargs:
            warnings.warn(f"PounceOptimizer ignores unknown keyword argument(s) "
                          f"{sorted(kwargs)}.", stacklevel=2)
        if batch_solve not in BATCH_SOLVES:
            raise ValueError(f"batch_solve: expected one of {BATCH_SOLVES}, got {batch_solve!r}")
        super().__init__(objective, vectorize=vectorize, abs_err_tolerance=abs_err_tolerance,
                         rel_err_tolerance=rel_err_tolerance, max_iterations=max_iterations,
                         step_size=float(step_size))
        self.tol = DEFAULT_TOL if tol is None else float(tol)
        self.error_test = tol is None
        self.acceptable_tol = float(acceptable_tol)
        self.hessian = make_hessian(hessian)
        self.bounds_spec = dict(bounds or {})
        self.constraints = list(constraints or [])
        self.solver_options = dict(solver_options or {})
        self.max_restarts = int(max_restarts)
        self.recenter_angle = float(recenter_angle)
        self.batch_solve = batch_solve
        self.last_solve: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._float64 = Float64Copy()
        self._structure: ProblemStructure | None = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _check_kwargs(self, kwargs: dict[str, Any], backward_mode: BackwardMode,
                      theseus_steps: bool) -> None:
        for key in kwargs:
            if key in (FROM_LAYER_TOKEN, "backward_num_iterations"):
                continue
            if key in _STEP_KEYS:
                if theseus_steps:
                    continue
                why = ("it shapes the steps only under backward_mode unroll or truncated "
                       "(unconstrained least squares); this solve takes full "
                       "interior-point steps")
            elif key in _IGNORED_KEYS:
                why = "it has no meaning for an interior-point solve"
            else:
                why = "unknown key"
            self._warn_once(key, f"PounceOptimizer.optimize ignores {key!r}: {why}.")
        if "backward_num_iterations" in kwargs and backward_mode != BackwardMode.TRUNCATED:
            self._warn_once("backward_num_iterations", "PounceOptimizer.optimize ignores "
                            "'backward_num_iterations' outside backward_mode=truncated.")

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
        # the optim vars as the layer received them (their graph reaches the start)
        start = [v.tensor for v in self.objective.optim_vars.values()]
        grad_follows = torch.is_grad_enabled() and _error_requires_grad(self.objective)
        with torch.no_grad():
            info = init_info(self, track_best_solution, track_err_history, track_state_history)
        bsz = self.objective.batch_size
        # This solve never reads the vectorised Jacobians: later updates need not compute them.
        defer_vectorized_jacobians(self.objective)
        solve_obj, constraints = self._float64.problem(self.objective, self.constraints,
                                                       self._warn_once)
        structure = self._structure_for(solve_obj, constraints)
        bounds = resolve_bounds(self.bounds_spec, solve_obj, bsz)
        # In Theseus' unroll and truncated modes the layer is the iteration as configured:
        # Theseus' steps (pounce_theseus.unrolled.StepRule), with or without a gradient,
        # so that a budget too small to converge gives the same map in training and under
        # no_grad; unconverged elements are then differentiated through those steps.
        theseus_steps = (backward_mode in (BackwardMode.UNROLL, BackwardMode.TRUNCATED)
                         and not constraints and not bounds
                         and is_least_squares(self.objective))
        self._check_kwargs(kwargs, backward_mode, theseus_steps)
        rule = StepRule(step_size=float(self.params.step_size),
                        damping=float(kwargs.get("damping", 0.0)),
                        ellipsoidal=bool(kwargs.get("ellipsoidal_damping", False)),
                        damping_eps=_or_default(kwargs.get("damping_eps"), 1e-8)
                        ) if theseus_steps else None
        if rule is not None and not rule.plain:
            nlp = TheseusStepNlp(structure, self.hessian, bounds, rule)
        else:
            nlp = BatchNlp(structure, self.hessian, bounds)
        unrolled = theseus_steps and grad_follows and nlp.m == 0
        settings = SolveSettings(
            max_iterations=int(self.params.max_iterations),
            options={"tol": self.tol, "acceptable_tol": self.acceptable_tol,
                     **self.solver_options},
            max_restarts=self.max_restarts, recenter_angle=self.recenter_angle,
            batch_solve=self.batch_solve,
            error_tolerances=(float(self.params.abs_err_tolerance),
                              float(self.params.rel_err_tolerance)) if self.error_test else None,
            polish=torch.is_grad_enabled(),
            track_iterates=bool(verbose or end_iter_callback is not None
                                or track_err_history or track_state_history),
            # the replay needs the chart points only; it builds the rest, for the elements
            # that end unconverged, when a gradient follows
            record_points=unrolled,
        )
        with torch.no_grad():
            res = solve_batch(nlp, settings)
            # the last chart's base, for the replay of the elements that end unconverged
            replay = unrolled and bool((res.solved & ~res.converged).any())
            last_base = [t.clone() for t in structure.chart.base] if replay else []
            write_solution(nlp, res)
        if solve_obj is not self.objective:
            with torch.no_grad():
                self.objective.update({name: var.tensor.to(self.objective.dtype)
                                       for name, var in solve_obj.optim_vars.items()})
            structure = self._structure_for(self.objective, self.constraints)
        solution = {name: v.tensor for name, v in self.objective.optim_vars.items()}
        self.last_solve = {
            "status": list(res.status), "iterations": res.iterations.copy(),
            "kkt_error": res.kkt_error.copy(),
            "restoration_iterations": res.restoration_iterations,
        }
        # the error metric at the solution: the implicit step's evaluation where it makes
        # one (attach_implicit_gradient), else its own
        err = None
        if torch.is_grad_enabled():
            plans = {}
            if unrolled:
                steps = kwargs.get("backward_num_iterations") \
                    if backward_mode == BackwardMode.TRUNCATED else None
                for b in np.flatnonzero(res.solved & ~res.converged):
                    plan = replay_plan(res.points[b], res.delta[b], steps)
                    if plan is not None:
                        plans[int(b)] = plan
                if plans and bsz * self.objective.dim() * structure.n > REPLAY_MAX_ENTRIES:
                    self._warn_once("replay_size", "PounceOptimizer: the problem is too large "
                                    "to replay its steps densely; unconverged elements get "
                                    "the implicit step at their last iterate.")
                    plans = {}
            implicit = res.solved.copy()
            implicit[list(plans)] = False
            bounds = resolve_bounds(self.bounds_spec, self.objective, bsz)
            err = attach_implicit_gradient(structure, bounds, res, implicit)
            miss = attach_unrolled_gradient(self.objective, start, last_base, plans, rule)
            if miss > STEP_RTOL:
                self._warn_once("replay", f"PounceOptimizer: an unconverged element's "
                                f"recorded step differs from its Gauss-Newton replay by "
                                f"{miss:.1e} (relative; the solve regularised its Hessian "
                                "or took exact-Hessian steps): its gradient through the "
                                "steps is that of the nearest damped Gauss-Newton steps.")
        if err is None:
            with torch.no_grad():
                err = self.objective.error_metric().detach()
        fill_info(info, res, err, solution, settings.max_iterations, track_best_solution)
        replay_iterations(self, info, res, verbose, end_iter_callback)
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


def _or_default(value: Any, default: float) -> float:
    """``value`` as a float, ``default`` when it is None (Theseus' ``damping_eps``)."""
    return default if value is None else float(value)


def _error_requires_grad(objective: Objective) -> bool:
    """The weighted errors at the current values have a graph: a starting value, an aux
    variable (data, cost weights) or a tensor a cost function closes over requires grad,
    so the solution will be differentiated. A variable that requires grad answers at once;
    otherwise the errors are evaluated (a closed-over tensor is no variable)."""
    variables = (*objective.optim_vars.values(), *objective.aux_vars.values())
    if any(v.tensor is not None and v.tensor.requires_grad for v in variables):
        return True
    with torch.enable_grad():
        return bool(weighted_error(objective).requires_grad)
