"""General constraints and variable bounds for :class:`PounceOptimizer`.

``Constraint(fn, optim_vars, aux_vars, lower, upper)`` is written like Theseus'
``AutoDiffCostFunction``: ``fn(optim_vars, aux_vars) -> (B, k)`` is any differentiable
torch function of the variables (its Jacobian and Hessian come from autograd) and the
rows must satisfy ``lower <= fn(...) <= upper``; ``lower == upper`` is an equality.
Bounds are ``{var_or_name: (lower, upper)}`` on Vector (and Point) variables.
Each of ``lower``/``upper`` is a float, a tensor of shape (dof,), (1, dof) or (B, dof),
or None (unbounded); a bound tensor may require grad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from theseus import Objective, Variable, Vector

__all__ = ["Bound", "Constraint", "resolve_bounds"]

BoundValue = float | int | torch.Tensor | None


class Constraint:
    """``lower <= fn(optim_vars, aux_vars) <= upper`` row-wise, batched like a cost."""

    def __init__(
        self,
        fn: Callable[[Sequence[Variable], Sequence[Variable]], torch.Tensor],
        optim_vars: Sequence[Variable],
        aux_vars: Sequence[Variable] | None = None,
        lower: BoundValue = 0.0,
        upper: BoundValue = 0.0,
        name: str | None = None,
    ):
        if len(optim_vars) == 0:
            raise ValueError("Constraint: optim_vars must name at least one variable")
        self.fn = fn
        self.optim_vars = list(optim_vars)
        self.aux_vars = list(aux_vars or [])
        self.name = name or f"Constraint_{id(self):x}"
        for side, value in (("lower", lower), ("upper", upper)):
            if value is not None:
                _reject_nan(torch.as_tensor(value), f"Constraint {self.name!r} {side}")
        self.lower = lower
        self.upper = upper

    def __call__(self) -> torch.Tensor:
        out = self.fn(self.optim_vars, self.aux_vars)
        if out.ndim == 1:
            out = out.unsqueeze(1)
        if out.ndim != 2:
            raise ValueError(
                f"Constraint {self.name!r}: fn must return (batch, k), got {tuple(out.shape)}"
            )
        return out

    def rebind(self, objective: Objective) -> Constraint:
        """The same constraint on ``objective``'s variables of the same names, in its
        dtype (aux variables the objective does not hold are converted copies)."""
        def swap(v: Variable) -> Variable:
            if v.name in objective.optim_vars:
                return objective.optim_vars[v.name]
            if v.name in objective.aux_vars:
                return objective.aux_vars[v.name]
            return Variable(v.tensor.detach().to(objective.dtype), name=v.name)

        return Constraint(self.fn, [swap(v) for v in self.optim_vars],
                          [swap(v) for v in self.aux_vars], self.lower, self.upper, self.name)

    def limits(self, batch_size: int, k: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(lower, upper)`` broadcast to (B, k); None becomes -inf / +inf."""
        what = f"Constraint {self.name!r}"
        return (
            _broadcast(self.lower, batch_size, k, like, -torch.inf, f"{what} lower"),
            _broadcast(self.upper, batch_size, k, like, torch.inf, f"{what} upper"),
        )


@dataclass
class Bound:
    """Bounds of one Vector variable, broadcast to (B, dof)."""

    var: Vector
    lower: torch.Tensor
    upper: torch.Tensor


def resolve_bounds(
    bounds: dict | None, objective: Objective, batch_size: int
) -> list[Bound]:
    """Check a ``{var_or_name: (lower, upper)}`` dict against the objective."""
    out: list[Bound] = []
    for key, pair in (bounds or {}).items():
        name = key if isinstance(key, str) else getattr(key, "name", None)
        if name not in objective.optim_vars:
            raise ValueError(f"bounds: {name!r} is not an optimisation variable of the objective")
        var = objective.optim_vars[name]
        if not isinstance(var, Vector):
            raise ValueError(
                f"bounds: {name!r} is a {type(var).__name__}; bounds apply to Vector variables"
            )
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"bounds[{name!r}]: expected a (lower, upper) pair")
        ref = var.tensor
        lo = _broadcast(pair[0], batch_size, var.dof(), ref, -torch.inf, f"bounds[{name!r}][0]")
        hi = _broadcast(pair[1], batch_size, var.dof(), ref, torch.inf, f"bounds[{name!r}][1]")
        bad = (lo > hi).any(dim=1)
        if bool(bad.any()):
            raise ValueError(
                f"bounds[{name!r}]: lower > upper at batch index {int(bad.nonzero()[0])}"
            )
        out.append(Bound(var, lo, hi))
    return out


def _broadcast(
    value: BoundValue, batch_size: int, k: int, like: torch.Tensor, default: float, what: str
) -> torch.Tensor:
    if value is None:
        value = default
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    _reject_nan(t, what)
    if t.ndim == 0:
        return t.expand(batch_size, k)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != k or t.shape[0] not in (1, batch_size):
        raise ValueError(
            f"{what}: shape {tuple(t.shape)} does not broadcast to (batch={batch_size}, {k})"
        )
    return t.expand(batch_size, k)


def _reject_nan(t: torch.Tensor, what: str) -> None:
    """A NaN limit is an error (not "no bound": that is None or +-inf)."""
    if not t.is_floating_point():
        return
    nan = torch.isnan(t.detach())
    if bool(nan.any()):
        where = ""
        if t.ndim == 2:
            where = f" at batch index {int(nan.any(dim=1).nonzero()[0])}"
        raise ValueError(f"{what}: NaN{where}; use None or +-inf for no bound")
