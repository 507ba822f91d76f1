"""Errors raised by the shared core."""

from __future__ import annotations

#: Statuses whose solution is used (and differentiated); every other status is a failure.
SOLVED_STATUSES: tuple[str, ...] = ("optimal", "optimal_inaccurate")


class InaccurateSolutionWarning(UserWarning):
    """Batch items ended "optimal_inaccurate" and their solutions are used (on_inaccurate)."""


class DegenerateGradientWarning(UserWarning):
    """A KKT adjoint system was singular (a non-unique solution): the gradient returned for
    the items named is the minimum-norm one (pounce_kkt/singular_kkt.py)."""


class SolverError(RuntimeError):
    """A batch item was not solved (or, with on_inaccurate="raise", solved inaccurately).

    Attributes:
        batch_index: index of the first failed item in the batch.
        status: its solver status (one of the native statuses, e.g. "primal_infeasible").
        statuses: the statuses of the whole batch.

    `message` replaces the default text (which names the item, its status and the failed
    items); `hint` is appended to it (e.g. a note on the problem's scaling).
    """

    def __init__(self, batch_index: int, status: str, statuses: list[str] | None = None,
                 message: str | None = None, hint: str = ""):
        self.batch_index = int(batch_index)
        self.status = str(status)
        self.statuses = list(statuses) if statuses is not None else [self.status]
        if message is None:
            failed = [i for i, st in enumerate(self.statuses) if st not in SOLVED_STATUSES]
            more = (f" ({len(failed)} failed items in total: {failed[:10]})"
                    if len(failed) > 1 else "")
            message = (f"POUNCE did not solve batch item {self.batch_index}: status "
                       f"{self.status!r}{more}; pass on_failure='nan' to get NaN for failed "
                       "items instead")
        super().__init__(message + (f". {hint}" if hint else ""))
