"""Every use of Theseus internals by pounce_theseus, in one place, checked against the
installed theseus-ai version.

Written against theseus-ai 0.2.x. Another version warns once at import; each accessor
below names the private attribute it reads or writes, so a Theseus upgrade is checked
here and in tests/test_theseus_*.py.

- :func:`error_metric`, :func:`is_least_squares`: ``Objective._error_metric_fn`` (the
  metric turning weighted errors into ``f``; Theseus' default is ``1/2 |e|^2``).
- :func:`error_row_blocks`: ``Objective._get_error_iter()`` (the cost functions, or
  vectorisation wrappers, in the order of ``objective.error()``'s rows).
- :func:`has_vector_retract`: ``Manifold._retract_impl`` (whether a variable retracts as
  ``x + delta``).
- :func:`init_info`: ``NonlinearOptimizer._init_info``.
- :func:`defer_vectorized_jacobians`: ``Objective._vectorized_jacobians_iter``,
  ``Objective._vectorization_run`` and the wrappers' ``_cached_error`` /
  ``_cached_jacobians``.
- :func:`register_optimizer`: adds the class to the ``theseus`` namespace (public).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import theseus
import torch
from theseus import Objective, Vector
from theseus.constants import __FROM_THESEUS_LAYER_TOKEN__ as FROM_LAYER_TOKEN
from theseus.core.objective import error_squared_norm_fn

__all__ = [
    "FROM_LAYER_TOKEN", "SUPPORTED_VERSIONS", "defer_vectorized_jacobians", "error_metric",
    "error_row_blocks", "has_vector_retract", "init_info", "is_least_squares",
    "register_optimizer",
]

SUPPORTED_VERSIONS = ("0.2.",)
THESEUS_VERSION = getattr(theseus, "__version__", "unknown")
if not THESEUS_VERSION.startswith(SUPPORTED_VERSIONS):
    warnings.warn(
        f"pounce_theseus was written against theseus-ai {SUPPORTED_VERSIONS}; found "
        f"{THESEUS_VERSION}. Its use of Theseus internals is in pounce_theseus/compat.py.",
        stacklevel=2,
    )


def error_metric(objective: Objective, error: torch.Tensor) -> torch.Tensor:
    """The objective's metric of the weighted errors (B, m_e), shape (B,)."""
    return objective._error_metric_fn(error).reshape(-1)


def is_least_squares(objective: Objective) -> bool:
    """The metric is Theseus' default ``1/2 |e|^2``."""
    return objective._error_metric_fn is error_squared_norm_fn


def error_row_blocks(objective: Objective) -> Iterator[tuple[int, list[str]]]:
    """``(rows, optim var names)`` per cost function, in the order of ``error()``'s rows
    (a vectorised objective groups them by schema)."""
    for item in objective._get_error_iter():
        cf = getattr(item, "cost_fn", item)  # a vectorisation wrapper or the cost function
        yield item.dim(), [v.name for v in cf.optim_vars]


def has_vector_retract(var) -> bool:
    """``var`` retracts as Theseus' Vector does (``x + delta``)."""
    return type(var)._retract_impl is Vector._retract_impl


def init_info(optimizer, track_best_solution: bool, track_err_history: bool,
              track_state_history: bool):
    """A fresh ``NonlinearOptimizerInfo`` as Theseus' optimizers start one."""
    return optimizer._init_info(track_best_solution, track_err_history, track_state_history)


def register_optimizer(cls: type) -> None:
    """Make ``cls`` reachable as ``theseus.<name>`` (configs pick optimizers with
    ``getattr(th, name)``); a name Theseus itself defines is never replaced."""
    if not hasattr(theseus, cls.__name__):
        setattr(theseus, cls.__name__, cls)


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
    """Make a vectorised objective's Jacobian run lazy; True when it is (now or already),
    False when the objective is not vectorised or its vectorisation is not the expected one.

    A vectorised ``Objective`` recomputes every cost function's weighted error and
    Jacobians whenever a variable changed and ``update`` asks for it (e.g. at the start of
    every ``TheseusLayer.forward``). PounceOptimizer never reads them (it differentiates
    the error itself). Lazily, a request only marks the run pending, with the grad mode in
    force at the time, and the first iteration over the Jacobian iterable (what
    ``_get_jacobians_iter`` returns) runs it then, under that grad mode; between a request
    and the run the variables keep the tensors the request saw (any ``update`` makes a new
    request), so a reader gets the Jacobians the eager run would have given.
    """
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
