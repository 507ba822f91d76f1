"""The ``linear_solver`` attribute Theseus code reads from a nonlinear optimizer.

PounceOptimizer solves with POUNCE's interior-point method and never uses a Theseus linear
solver. Theseus code outside the optimizer still reads ``optimizer.linear_solver``:
``TheseusLayer.compute_samples`` (LEO) draws samples from its linearisation's ``A'A``, and
the motion-planning models read ``linear_solver.linearization`` for a covariance. So the
optimizer carries one, built as Gauss-Newton builds it (``linear_solver_cls`` or
``th.CholeskyDenseSolver``, with the given linearisation class and keyword arguments), and
linearised at the objective's current values (the returned solution after a solve) each
time it is read, once the objective holds values. It is built on first read only: a dense
linearisation is n x n per element, which pose-graph users who never read it do not pay.
"""

from __future__ import annotations

from typing import Any

import theseus as th
import torch


class LinearSolverAtSolution:
    """Builds the linear solver on first read and linearises it at every read."""

    def __init__(self, objective: th.Objective, linear_solver_cls: Any = None,
                 linearization_cls: Any = None, linearization_kwargs: dict | None = None,
                 linear_solver_kwargs: dict | None = None):
        self._objective = objective
        self._cls = linear_solver_cls or th.CholeskyDenseSolver
        self._linearization = (linearization_cls, linearization_kwargs)
        self._kwargs = dict(linear_solver_kwargs or {})
        self._solver: Any = None

    def read(self) -> Any:
        """The linear solver, its linearisation taken at the objective's current values."""
        if self._solver is None:
            cls, kwargs = self._linearization
            self._solver = self._cls(self._objective, linearization_cls=cls,
                                     linearization_kwargs=kwargs, **self._kwargs)
        if self._objective.batch_size is not None:  # None until the objective holds values
            with torch.no_grad():  # as Gauss-Newton's own linearisations: no graph
                self._solver.linearization.linearize()
        return self._solver

    def replace(self, solver: Any) -> None:
        """A solver the user assigned; it is then linearised at each read like ours."""
        self._solver = solver
