"""`PounceSolver`: POUNCE as a cvxpylayers 1.2 `SolverInterface`.

`CvxpyLayer(problem, parameters, variables, solver=PounceSolver(**options))`, or after
`import pounce_cvxpy` simply `solver="pounce"`. Each batch is one call of the core's
forward (`pounce_kkt.conic_forward`) and one of its adjoint (`pounce_kkt.conic_vjp`); this
class only translates layouts (pounce_cvxpy/canon_layout.py) and options
(pounce_cvxpy/solver_args.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cvxpylayers.interfaces.base import SolverInterface

from pounce_cvxpy.canon_layout import CanonLayout
from pounce_cvxpy.registration import NAME
from pounce_cvxpy.solver_args import PounceArgs, resolve
from pounce_kkt import SolverError, conic_forward, conic_vjp

try:
    from diffcp import SolverError as _DiffcpSolverError
except ImportError:  # diffcp is optional: cvxpylayers' default solver, not ours

    class _DiffcpSolverError(Exception):  # type: ignore[no-redef]
        """Stand-in base when diffcp is not installed."""


class LayerSolverError(SolverError, _DiffcpSolverError):
    """`pounce_kkt.SolverError` (batch index and status) that is also a `diffcp.SolverError`,
    so code written for cvxpylayers' default solver catches it unchanged."""


class PounceSolver(SolverInterface):
    """A cvxpylayers solver backed by POUNCE's interior-point method and the KKT adjoint.

    Args:
        **options: default `solver_args` for every call (see pounce_cvxpy.solver_args for
            the table of ours and of the diffcp/SCS keys that are translated or ignored).

    The layer canonicalises for the cvxpy solver "POUNCE" (SCS's cone order and PSD svec,
    quadratic objective kept), so a parametrised `quad_form` objective is accepted.
    """

    canon_solver = NAME
    supports_quad_obj = True
    is_parametric = False

    def __init__(self, **options: Any) -> None:
        self._args = resolve(PounceArgs(), options)
        self._layout: CanonLayout | None = None
        self._warm: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._out_dtype: torch.dtype | None = None

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
        self._layout = CanonLayout.from_layers_context(ctx)

    def set_params(self, params: list) -> None:
        """Note the parameters' floating dtype before a solve.

        cvxpylayers evaluates P, q and A with scipy, in float64, whatever the parameters'
        dtype; the solution is returned in the parameters' dtype (float32 in, float32 out).
        """
        arrays = [np.asarray(p) for p in params]
        floating = [a.dtype for a in arrays if np.issubdtype(a.dtype, np.floating)]
        dtype = np.result_type(*floating) if floating else None
        self._out_dtype = None if dtype is None else torch.from_numpy(np.empty(0, dtype)).dtype

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
        args = resolve(self._args, solver_args)
        layout = self.layout
        P_c, q_c, A_c, b_c = layout.to_core(P, q, A)
        batch = q_c.shape[0]
        warm = self._warm.get(batch) if args.warm_start else None
        try:
            solution, state = conic_forward(
                layout.structure, P_c, q_c, A_c, b_c, args.solve_options(), warm_start=warm
            )
        except SolverError as err:
            raise LayerSolverError(err.batch_index, err.status, err.statuses) from None
        if args.warm_start:
            self._warm[batch] = (solution.x.detach(), solution.y.detach(), solution.s.detach())
        x, y = solution.x, solution.y
        if self._out_dtype is not None:
            x, y = x.to(self._out_dtype), y.to(self._out_dtype)
        return x, y, state if needs_grad else None

    def derivative_torch_batch(
        self, dprimal: torch.Tensor, ddual: torch.Tensor, saved_state: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Pull (dx, dy) back to cvxpylayers' (dP, dq, d[A_c | b]) with the KKT adjoint."""
        if saved_state is None:
            raise RuntimeError("PounceSolver: backward called on a solve run without gradients")
        dP, dq, dA, db = conic_vjp(saved_state, dprimal, ddual, None)
        return self.layout.to_layers(dP, dq, dA, db)
