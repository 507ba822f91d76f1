"""The float64 problem a PounceOptimizer solve evaluates.

The native solve runs in float64. A float64 objective is solved as it is; any other is
solved on a float64 copy (made once, synchronised with the objective's tensors before
every solve), and the solution is cast back; the backward then runs on the original
objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from theseus import Objective, Vectorize

from .compat import defer_vectorized_jacobians
from .constraints import Constraint

__all__ = ["Float64Copy"]


class Float64Copy:
    """The float64 copy of one objective, made on first use."""

    def __init__(self) -> None:
        self._copy: Objective | None = None
        self._failed = False

    def problem(self, objective: Objective, constraints: list[Constraint],
                warn: Callable[[str, str], None]) -> tuple[Objective, list[Constraint]]:
        """``(objective, constraints)`` to solve: the originals when float64 (or when the
        objective cannot be copied: then solved in its own dtype, with a warning), else
        the synchronised copy and the constraints rebound to it."""
        if objective.dtype == torch.float64 or self._failed:
            return objective, constraints
        if self._copy is None:
            try:
                obj64 = objective.copy()
            except Exception as exc:  # a cost function without a working copy
                self._failed = True
                warn("copy", f"PounceOptimizer: cannot copy the objective to float64 "
                             f"({exc!r}); solving in {objective.dtype}.")
                return objective, constraints
            obj64.to(dtype=torch.float64)
            if objective.vectorized:
                Vectorize(obj64)
                defer_vectorized_jacobians(obj64)
            self._copy = obj64
        obj64 = self._copy
        named = {**objective.optim_vars, **objective.aux_vars}
        obj64.update({
            name: v.tensor.detach().to(torch.float64) for name, v in named.items()
            if name in obj64.optim_vars or name in obj64.aux_vars
        })
        return obj64, [c.rebind(obj64) for c in constraints]
