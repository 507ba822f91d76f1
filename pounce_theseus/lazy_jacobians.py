"""Defer a vectorised Theseus objective's Jacobian run until something reads it.

A vectorised ``Objective`` recomputes every cost function's weighted error and Jacobians
(``Vectorize._vectorize`` in its FULL mode) whenever a variable changed and
``Objective.update`` (or a retraction) asks for it, e.g. once at the start of every
``TheseusLayer.forward``. Theseus' own optimizers read those Jacobians through
``Objective._get_jacobians_iter``; PounceOptimizer never does (it differentiates the error
itself, and ``Objective.error`` computes its own errors), so for it the run is wasted work
(about a tenth of a curve-fit solve at B=64).

:func:`defer_vectorized_jacobians` makes the run lazy: a request only marks it pending,
with the grad mode in force at the time, and the first iteration over the Jacobian
iterable (what ``_get_jacobians_iter`` returns) runs it then, under that grad mode.
Between a request and the run the variables keep the tensors the request saw (any
``update`` makes a new request), so a consumer gets the Jacobians the eager run would
have given. Objectives whose vectorisation does not have the expected shape (another
Theseus version) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from theseus import Objective

__all__ = ["defer_vectorized_jacobians"]


class _LazyJacobians:
    """Stands for the Vectorize wrappers list in ``objective._vectorized_jacobians_iter``
    and as ``objective._vectorization_run``: calling it defers, iterating runs."""

    def __init__(self, wrappers: list, run: Callable[[], object]):
        self.wrappers, self.run = wrappers, run
        self.pending_grad: bool | None = None  # grad mode of the pending request

    def request(self) -> None:
        self.pending_grad = torch.is_grad_enabled()
        for wrapper in self.wrappers:  # no stale values for a direct reader either
            wrapper._cached_error = wrapper._cached_jacobians = None

    def __iter__(self) -> Iterator:
        if self.pending_grad is not None:
            grad, self.pending_grad = self.pending_grad, None
            with torch.set_grad_enabled(grad):
                self.run()
        return iter(self.wrappers)

    def __len__(self) -> int:
        return len(self.wrappers)


def defer_vectorized_jacobians(objective: Objective) -> bool:
    """Make ``objective``'s vectorised Jacobian run lazy (see the module docstring); True
    when it is (now or already), False when the objective is not vectorised or its
    vectorisation is not the expected one."""
    if not objective.vectorized:
        return False
    wrappers = getattr(objective, "_vectorized_jacobians_iter", None)
    run = getattr(objective, "_vectorization_run", None)
    if isinstance(wrappers, _LazyJacobians):
        return True
    if not isinstance(wrappers, list) or not callable(run):
        return False
    lazy = _LazyJacobians(wrappers, run)
    objective._vectorized_jacobians_iter = lazy
    objective._vectorization_run = lazy.request
    return True
