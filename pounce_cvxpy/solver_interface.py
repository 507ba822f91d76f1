"""`PounceSolver`: POUNCE as a cvxpylayers 1.2 `SolverInterface`.

`CvxpyLayer(problem, parameters, variables, solver=PounceSolver(**options))`, or after
`import pounce_cvxpy` simply `solver="pounce"`. Each batch is one call of the core's
forward (`pounce_kkt.conic_forward`) and one of its adjoint (`pounce_kkt.conic_vjp`); this
class only translates layouts (pounce_cvxpy/canon_layout.py) and options
(pounce_cvxpy/solver_args.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from cvxpylayers.interfaces.base import SolverInterface

from pounce_cvxpy.canon_layout import CanonLayout
from pounce_cvxpy.compat import layer_problem, layer_solver
from pounce_cvxpy.cvxpy_solver import NAME
from pounce_cvxpy.solver_args import PounceArgs, resolve
from pounce_kkt import SolverError, conic_forward, conic_vjp
from pounce_kkt.accuracy import SolveInfo
from pounce_kkt.torch_threads import serial_torch
from pounce_kkt.validation import check_finite, check_real

try:
    from diffcp import SolverError as _DiffcpSolverError
except ImportError:  # diffcp is optional: cvxpylayers' default solver, not ours

    class _DiffcpSolverError(Exception):  # type: ignore[no-redef]
        """Stand-in base when diffcp is not installed."""


class LayerSolverError(SolverError, _DiffcpSolverError):
    """`pounce_kkt.SolverError` (batch index and status) that is also a `diffcp.SolverError`,
    so code written for cvxpylayers' default solver catches it unchanged."""


@dataclass
class _ThreadCalls:
    """One thread's calls of one layer: the only mutable state a `PounceSolver` keeps.

    out_dtype: the parameters' dtype noted by `set_params` for the call about to solve (it
    is consumed by that solve); warm: the warm-start cache, batch size -> (x, y, s) of this
    thread's previous solve; data: batch size -> the canonical (P, q, A, b) values of that
    solve, for warm_start="auto"; info: this thread's last solve (`last_solve_info`).
    """

    out_dtype: torch.dtype | None = None
    warm: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict)
    data: dict[int, tuple[torch.Tensor | None, ...]] = field(default_factory=dict)
    info: SolveInfo | None = None


# warm_start="auto" warm starts when every item's canonical values moved by at most this
# fraction of their size (max-norm, per item, against max(1, max|old|)) since the cached
# solve. benchmarks/warm_start_training.py: on an OptNet-style training loop re-solving the
# same items after Adam steps (lr 1e-3) the warm start halves the IPM iterations (7.1 ->
# 3.7 per item); on minibatches of other items it adds 4% (7.07 -> 7.36), which "auto"
# avoids by starting those cold. A cached point with a non-finite entry (an on_failure=
# "nan" item) is never used, nor one on a non-CPU device.
WARM_AUTO_REL = 1e-2


def _usable(warm: tuple[torch.Tensor, ...] | None) -> bool:
    """A cached (x, y, s) that can start a solve: on the CPU and finite everywhere."""
    return warm is not None and all(
        t.device.type == "cpu" and bool(torch.isfinite(t).all()) for t in warm)


def _moved_little(old: tuple[torch.Tensor | None, ...], new: tuple[torch.Tensor | None, ...]
                  ) -> bool:
    """Whether every item of `new` is within WARM_AUTO_REL of `old` (same shapes, per item)."""
    if len(old) != len(new):  # nothing cached (the previous call was not "auto")
        return False
    for a, b in zip(old, new, strict=True):
        if a is None or b is None:
            if a is not b:
                return False
            continue
        if a.shape != b.shape or a.device.type != "cpu" or b.device.type != "cpu":
            return False
        if a.shape[-1] == 0:
            continue
        size = a.abs().amax(-1).clamp_min(1.0)
        if bool(((b - a).abs().amax(-1) > WARM_AUTO_REL * size).any()):
            return False
    return True


_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {}


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """Torch's dtype of a numpy floating dtype (memoised: a lookup per call)."""
    out = _TORCH_DTYPES.get(dtype)
    if out is None:
        out = _TORCH_DTYPES[dtype] = torch.from_numpy(np.empty(0, dtype)).dtype
    return out


class PounceSolver(SolverInterface):
    """A cvxpylayers solver backed by POUNCE's interior-point method and the KKT adjoint.

    Args:
        **options: default `solver_args` for every call (see pounce_cvxpy.solver_args for
            the table of ours and of the diffcp/SCS keys that are translated or ignored).

    The layer canonicalises for the cvxpy solver "POUNCE" (SCS's cone order and PSD svec,
    quadratic objective kept), so a parametrised `quad_form` objective is accepted.

    Threads: one layer may be called from several threads at once. Concurrent calls share
    only what `setup` captured (the layout, immutable) and the options; everything a call
    carries to a later one (the output dtype between `set_params` and the solve, the
    warm-start cache, the last call's `SolveInfo`) is kept per thread, so a thread warm
    starts from its own previous solve and reads its own statuses.
    """

    canon_solver = NAME
    supports_quad_obj = True
    is_parametric = False

    def __init__(self, **options: Any) -> None:
        self._args = resolve(PounceArgs(), options)
        self._layout: CanonLayout | None = None
        # (name, ndim) of each of the layer's cvxpy Parameters, in the layer's order.
        self._parameters: tuple[tuple[str, int], ...] = ()
        self._gp = False
        self._threads = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles keep the options and layout, not any thread's calls."""
        state = dict(self.__dict__)
        del state["_threads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._threads = threading.local()

    def _calls(self) -> _ThreadCalls:
        """The calling thread's `_ThreadCalls` (created on its first call)."""
        calls = getattr(self._threads, "calls", None)
        if calls is None:
            calls = self._threads.calls = _ThreadCalls()
        return calls

    @property
    def last_info(self) -> SolveInfo | None:
        """The calling thread's last solve through this solver (None before the first)."""
        return self._calls().info

    def setup(self, ctx: Any) -> None:
        """Capture the sparsity patterns and cones of the canonicalised problem.

        cvxpylayers calls this once per `CvxpyLayer`; the solve calls do not say which layer
        they serve, so one instance serves one layer and a second `setup` raises.
        """
        if self._layout is not None:
            raise ValueError(
                "this PounceSolver is already attached to a CvxpyLayer; create one "
                "PounceSolver(**options) per layer"
            )
        problem = layer_problem(ctx)
        self._layout = CanonLayout.from_layer_problem(problem)
        self._parameters = tuple((p.name(), len(p.shape)) for p in problem.parameters)
        self._gp = problem.gp

    def set_params(self, params: list) -> None:
        """Check the parameter values and note their floating dtype before a solve.

        cvxpylayers evaluates P, q and A with scipy, in float64, whatever the parameters'
        dtype; the solution is returned in the parameters' dtype (float32 in, float32 out).
        A complex value (TypeError) or a NaN/Inf (ValueError) is reported here, naming the
        cvxpy Parameter and the batch index, before it is spread over the canonical data.
        """
        arrays = [np.asarray(p) for p in params]
        self._check_parameters(arrays)
        floating = [a.dtype for a in arrays if a.dtype.kind == "f"]
        dtype = np.result_type(*floating) if floating else None
        self._calls().out_dtype = None if dtype is None else _torch_dtype(dtype)

    def _check_parameters(self, arrays: list[np.ndarray]) -> None:
        for i, a in enumerate(arrays):
            if a.dtype.kind in "biu" or (a.dtype.kind == "f" and bool(np.isfinite(a).all())):
                continue  # real and finite: nothing to name
            pname, ndim = self._parameters[i] if i < len(self._parameters) else ("?", a.ndim)
            name = f"Parameter {pname!r} (layer parameter {i})"
            check_real(name, a)
            if not np.issubdtype(a.dtype, np.floating):
                continue
            batched = a.ndim == ndim + 1
            flat = a.reshape(a.shape[0], -1) if batched and a.size else a.reshape(-1)
            try:
                check_finite(name, torch.as_tensor(flat))
            except ValueError as err:
                note = " (after the log that gp=True takes of it)" if self._gp else ""
                raise ValueError(f"{err}{note}") from None

    @property
    def layout(self) -> CanonLayout:
        """The layout captured by `setup`; raises if the solver is not attached to a layer."""
        if self._layout is None:
            raise RuntimeError("PounceSolver.setup(ctx) has not run: pass it to CvxpyLayer")
        return self._layout

    def solve_torch_batch(
        self,
        P: torch.Tensor | None,
        q: torch.Tensor,
        A: torch.Tensor,
        dims: Any,
        solver_args: dict[str, Any],
        needs_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Solve the batch; returns primal x (B, n), dual y (B, m) and the adjoint's state.

        The state is None when `needs_grad` is False, so no backward work is prepared.
        """
        calls = self._calls()
        out_dtype, calls.out_dtype = calls.out_dtype, None
        calls.info = None
        args = resolve(self._args, solver_args)
        layout = self.layout
        try:
            with serial_torch():
                P_c, q_c, A_c, b_c = layout.to_core(P, q, A)
                data = tuple(None if t is None else t.detach() for t in (P_c, q_c, A_c, b_c))
                warm = calls.warm.get(q_c.shape[0]) if args.warm_start else None
                if not _usable(warm) or (args.warm_start == "auto" and not _moved_little(
                        calls.data.get(q_c.shape[0], ()), data)):
                    warm = None
                solution, state = conic_forward(
                    layout.structure, P_c, q_c, A_c, b_c, args.solve_options(),
                    warm_start=warm)
        except SolverError as err:
            raise LayerSolverError(err.batch_index, err.status, err.statuses,
                                   message=str(err)) from None
        calls.info = solution.info
        if args.warm_start:
            calls.warm[q_c.shape[0]] = (solution.x.detach(), solution.y.detach(),
                                        solution.s.detach())
            if args.warm_start == "auto":
                calls.data[q_c.shape[0]] = data
        x, y = solution.x, solution.y
        if out_dtype is not None:
            x, y = x.to(out_dtype), y.to(out_dtype)
        return x, y, state if needs_grad else None

    def derivative_torch_batch(
        self, dprimal: torch.Tensor, ddual: torch.Tensor, saved_state: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Pull (dx, dy) back to cvxpylayers' (dP, dq, d[A_c | b]) with the KKT adjoint."""
        if saved_state is None:
            raise RuntimeError("PounceSolver: backward called on a solve run without gradients")
        with serial_torch():
            dP, dq, dA, db = conic_vjp(saved_state, dprimal, ddual, None)
            return self.layout.to_layers(dP, dq, dA, db)


def last_solve_info(layer: Any) -> SolveInfo | None:
    """Per-item outcome of the calling thread's last call of `layer` (None before one).

    `layer` is a `CvxpyLayer` built with `solver="pounce"` (or a `PounceSolver`). The
    `SolveInfo` holds `status` (one string per batch item), `iterations`, `solve_time`,
    `residual` (the relative KKT residual of "optimal_inaccurate" items, NaN elsewhere) and
    the index lists `inaccurate` and `failed`. Each thread reads its own last call; a call
    that raised leaves None (the error carries the statuses).
    """
    solver = layer if isinstance(layer, PounceSolver) else layer_solver(layer)
    if not isinstance(solver, PounceSolver):
        raise TypeError(f"last_solve_info needs a CvxpyLayer built with solver='pounce' or a "
                        f"PounceSolver; got {type(layer).__name__}")
    return solver.last_info
