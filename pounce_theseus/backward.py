"""The backward of a PounceOptimizer solve: the implicit step at the returned point.

At the written solution ``x*`` (the chart's base) the optim vars are set to
``x* (+) (step - step.detach())`` with ``step`` from
:func:`pounce_kkt.nlp_kkt.implicit_step_with_limits`: the value is ``x*`` and autograd sees
``-K^-1 d_theta r``, with ``r`` the KKT residual (Lagrangian gradient, active constraint
rows and active bounds) and ``K`` its Jacobian in ``x`` (exact Lagrangian Hessian).
At a KKT point this is the implicit-function-theorem derivative of the solution map.
At an iterate that is not one (an element stopped by its iteration limit or a failed
solve), it is the derivative of one Newton step on the KKT conditions taken from that
iterate, the active set read from the final multipliers: what the IFT derivative would be
if the iterate were the solution. Elements without a finite iterate get a zero gradient,
and their aux data is swapped for a finite element's, detached, while the step is formed,
so their NaNs cannot reach a shared parameter through 0 * NaN products.
"""

from __future__ import annotations

import numpy as np
import torch

from pounce_kkt.nlp_kkt import implicit_step_sparse, implicit_step_with_limits
from pounce_kkt.torch_threads import serial_torch

from .batch_nlp import BatchNlp, Evaluation, ProblemStructure
from .compat import error_metric, weighted_error
from .constraints import Bound
from .hessian import ExactHessian
from .solve import BatchResult

__all__ = ["attach_implicit_gradient"]


def attach_implicit_gradient(structure: ProblemStructure, bounds: list[Bound],
                             res: BatchResult, ok: np.ndarray) -> torch.Tensor | None:
    """Leave the implicit step in the optim vars for the elements ``ok`` (see the module
    docstring); the chart's base is the written solution. Its Torch work runs on one
    intra-op thread (:func:`pounce_kkt.torch_threads.serial_torch`). Returns the error
    metric (B,), detached, at the written solution from the step's own evaluation of the
    errors when every element is ``ok`` (no element's aux data swapped), else None."""
    if not ok.any():
        return None
    objective = structure.chart.objective
    saved = _sanitise_rows(objective, torch.as_tensor(ok))
    metric: list[torch.Tensor] = []
    try:
        with serial_torch():
            if not _implicit_step(structure, bounds, res, torch.as_tensor(ok), metric):
                structure.chart.restore()
    finally:
        for var, tensor in saved:
            var.update(tensor)
    return metric[0] if metric and not saved else None


def _sanitise_rows(objective, ok: torch.Tensor) -> list:
    """Give the elements not ``ok`` a finite element's aux data, detached; returns what
    to restore."""
    saved = []
    if bool(ok.all()) or ok.numel() < 2:
        return saved
    good = int(ok.nonzero()[0])
    for var in objective.aux_vars.values():
        t = var.tensor
        if t.ndim >= 1 and t.shape[0] == ok.numel():
            mask = ok.view(-1, *([1] * (t.ndim - 1))).to(t.device)
            saved.append((var, t))
            var.update(torch.where(mask, t, t[good : good + 1].detach()))
    return saved


def _implicit_step(structure: ProblemStructure, bounds: list[Bound], res: BatchResult,
                   ok: torch.Tensor, metric: list[torch.Tensor]) -> bool:
    chart, objective = structure.chart, structure.chart.objective
    bsz, n = objective.batch_size, structure.n
    dtype = chart.base[0].dtype
    nlp = BatchNlp(structure, ExactHessian(), bounds)
    with torch.enable_grad():
        delta0 = chart.zeros(bsz).requires_grad_(True)
        chart.apply(delta0)
        e = weighted_error(objective, chart.sources)
        f = error_metric(objective, e)
        metric.append(f.detach())  # at the base: the written solution's error metric
        c = structure.constraint_values()
        lam = torch.as_tensor(res.lam, dtype=dtype, device=delta0.device)
        lag = f.sum() + ((lam * c).sum() if c is not None else 0.0)
        if not lag.requires_grad:
            return False  # constant in the variables and with nothing upstream
        (grad_l,) = torch.autograd.grad(lag, delta0, create_graph=True, allow_unused=True)
        if grad_l is None or not grad_l.requires_grad:
            return False  # nothing upstream requires grad
        unconstrained = c is None and not bounds
        if unconstrained and not _depends_on_more_than(grad_l, delta0):
            # the step's derivative flows through grad_l alone: skip forming the Hessian
            return False  # nothing upstream (aux data, weights) requires grad
        if structure.linearization is not None:
            # each cost function's exact block from Theseus' linearisation (the chart is at
            # its base, so exact); the error graph above stays as it is
            values = structure.linearization.at(delta0.detach()).exact()
        else:
            ev = Evaluation(delta0, e, f, c, structure.vjp, nlp.least_squares)
            values = nlp.hessian_values(ev, 1.0, lam if c is not None else None)
        if unconstrained:
            step = implicit_step_sparse(grad_l, structure.hess.rows, structure.hess.cols,
                                        values, used=ok)
            step = torch.where(ok.unsqueeze(1).to(step.device), step, torch.zeros_like(step))
            chart.apply(delta0.detach() + (step - step.detach()))
            return True
        h = structure.hess.dense(values)
        kw: dict = {}
        if c is not None:
            lo, hi = _constraint_limits(structure, bsz, chart.base[0])
            kw.update(c=c, c_jac=nlp.dense_jacobian(ev), c_lo=lo, c_hi=hi, lam=lam)
        if bounds:
            lo_b, hi_b = _bound_limits(chart, bounds, bsz, n, dtype)
            kw.update(x=delta0, x_lo=lo_b, x_hi=hi_b, at_lo=torch.as_tensor(res.at_lo),
                      at_hi=torch.as_tensor(res.at_hi))
        step = implicit_step_with_limits(grad_l, h, used=ok, **kw)
        step = torch.where(ok.unsqueeze(1).to(step.device), step, torch.zeros_like(step))
        if not _depends_on_more_than(step, delta0):
            return False  # nothing upstream (aux data, weights, bounds, limits) requires grad
        # value: exactly the solution written (0 + 0); derivative: the step's
        chart.apply(delta0.detach() + (step - step.detach()))
    return True


def _constraint_limits(structure: ProblemStructure, bsz: int, like: torch.Tensor):
    los, his = [], []
    for con, k in zip(structure.constraints, structure.con_rows, strict=True):
        lo, hi = con.limits(bsz, k, like)
        los.append(lo)
        his.append(hi)
    return torch.cat(los, 1), torch.cat(his, 1)


def _bound_limits(chart, bounds: list[Bound], bsz: int, n: int, dtype):
    """Bounds on the tangent coordinates around the chart's base (0 where absent)."""
    lo = torch.zeros((bsz, n), dtype=dtype)
    hi = torch.zeros((bsz, n), dtype=dtype)
    base = dict(zip((v.name for v in chart.vars), chart.base, strict=True))
    for bnd in bounds:
        sl = chart.offsets[bnd.var.name]
        x0 = base[bnd.var.name].reshape(bsz, -1)
        lo[:, sl] = torch.where(torch.isfinite(bnd.lower), bnd.lower - x0, 0.0)
        hi[:, sl] = torch.where(torch.isfinite(bnd.upper), bnd.upper - x0, 0.0)
    return lo, hi


def _depends_on_more_than(t: torch.Tensor, leaf: torch.Tensor) -> bool:
    """``t``'s autograd graph reaches a leaf other than ``leaf``.

    The gradient of the Lagrangian is taken with ``create_graph=True``, so it always
    depends on the chart's own ``leaf`` (``delta0``); ``requires_grad`` alone cannot say
    whether anything upstream of the layer (aux data, cost weights, bounds) does.
    """
    stack, seen = [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None and var is not leaf:
            return True
        stack.extend(f for f, _ in fn.next_functions)
    return False
