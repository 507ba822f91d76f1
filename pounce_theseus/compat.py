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
- :func:`weighted_error`, :func:`cost_function_groups`: a vectorised objective's
  ``Vectorize`` instance (the object
  behind ``Objective._get_error_iter``) and its ``_schema_dict``, ``_var_names``,
  ``_vectorized_cost_fns``, ``_get_all_vars``, ``_update_all_cost_fns_var_tensors`` and
  ``_update_vectorized_vars``.
- :func:`weighted_jacobians_error`: ``CostFunction._supports_masking`` (the batch mask a
  vectorised cost function applies in ``weighted_jacobians_error``), and
  :func:`accurate_se2_log_jacobian`: ``SE2._log_map_impl`` (wrapped while the Jacobians are
  taken) and the global parameter ``("se2", "d_near_zero")`` (its Taylor switch).
- :func:`linearized_cost`: ``RobustCostFunction._evaluate_loss``, ``_linearize``, ``_EPS``
  and ``flatten_dims`` (its ``weighted_error`` and ``weighted_jacobians_error`` formed
  from one evaluation of the inner cost function's Jacobians).
- :func:`differentiable_jacobians`: the global parameter ``fast_approx_local_jacobians``
  (``th.Local``'s Jacobians are then a cached identity, not the error's derivative).
- :func:`register_optimizer`: adds the class to the ``theseus`` namespace and registers it
  as a virtual ``th.NonlinearLeastSquares`` (both public API).
"""

from __future__ import annotations

import itertools
import operator
import threading
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import theseus
import torch
from theseus import Objective, Variable, Vector
from theseus.constants import __FROM_THESEUS_LAYER_TOKEN__ as FROM_LAYER_TOKEN
from theseus.core.objective import error_squared_norm_fn
from theseus.core.vectorizer import Vectorize
from theseus.geometry import SE2, LieGroup
from theseus.global_params import _THESEUS_GLOBAL_PARAMS
from theseus.optimizer.nonlinear import NonlinearOptimizerInfo, NonlinearOptimizerStatus

__all__ = [
    "FROM_LAYER_TOKEN", "SUPPORTED_VERSIONS", "accurate_se2_log_jacobian",
    "cost_function_groups", "defer_vectorized_jacobians", "differentiable_jacobians",
    "error_metric",
    "error_row_blocks", "has_vector_retract", "init_info", "is_least_squares",
    "linearized_cost", "register_optimizer", "rows_of", "weighted_error",
    "weighted_jacobians_error",
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


def weighted_error(objective: Objective, sources: dict | None = None) -> torch.Tensor:
    """``objective.error()`` (B, m_e), the same numbers in the same row order; for a
    vectorised objective each schema's rows come from its vectorised cost function as one
    tensor, reordered, instead of one slice per cost function: in a backward pass every
    slice materialises a gradient of the whole vectorised error, so ``error()``'s backward
    grows with the square of the number of cost functions (on a 200-pose graph, 89% of a
    Hessian callback)."""
    vec = getattr(objective._get_error_iter, "__self__", None)
    if not isinstance(vec, Vectorize):
        return objective.error()
    bsz = objective.batch_size
    parts = []
    for cost_fns, evaluator in cost_function_groups(objective, sources):
        err = evaluator.weighted_error()  # (K * B, dim), cost-function-major
        parts.append(err.view(len(cost_fns), bsz, -1).transpose(0, 1).reshape(bsz, -1))
    return torch.cat(parts, dim=1)


def weighted_jacobians_error(cost_fn) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``cost_fn.weighted_jacobians_error()``, the same numbers. A vectorised cost function
    (``_supports_masking``, set by ``Vectorize``) evaluates its Jacobians on the rows whose
    weight is not zero and scatters them into zeros (``masked_jacobians``: copies of every
    variable and boolean-mask writes; on a 100-pose robust SE3 graph 0.47 s of the 1.26 s
    spent in ``weighted_jacobians_error`` over one solve, cProfile); where no row's weight
    is zero that mask selects every row, so the call is made unmasked. SE2 log-map
    Jacobians are taken accurately (:func:`accurate_se2_log_jacobian`). A ``th.Local``
    takes :func:`_local_jacobians` where Theseus would call its ``jacobians``."""
    with accurate_se2_log_jacobian():
        if not getattr(cost_fn, "_supports_masking", False):
            return _unmasked_jacobians_error(cost_fn)
        with torch.no_grad():
            every_row = bool((~cost_fn.weight.is_zero()).all())
        if not every_row:
            return cost_fn.weighted_jacobians_error()
        cost_fn._supports_masking = False
        try:
            return _unmasked_jacobians_error(cost_fn)
        finally:
            cost_fn._supports_masking = True


def _unmasked_jacobians_error(cost_fn) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``CostFunction.weighted_jacobians_error`` without masking: the cost function's
    Jacobians and error, weighted."""
    if (type(cost_fn) is theseus.Local
            and type(cost_fn.target)._local_impl is LieGroup._local_impl
            and not _THESEUS_GLOBAL_PARAMS.fast_approx_local_jacobians):
        jacs, err = _local_jacobians(cost_fn)
        return cost_fn.weight.weight_jacobians_and_error(jacs, err)
    return cost_fn.weighted_jacobians_error()


def _local_jacobians(cost_fn) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``th.Local.jacobians()`` (a target whose ``local`` is ``LieGroup``'s): the error
    ``log(target^-1 var)`` and its Jacobian in the variable, the same numbers, without the
    Jacobian in the target that Theseus' ``LieGroup.local`` also forms and ``Local`` drops
    (an inverse, an adjoint and a matrix product; SE2, 8 rows: 1.30 -> 0.85 ms, SE3 2.40 ->
    1.67 ms)."""
    dlog: list[torch.Tensor] = []
    error = cost_fn.target.between(cost_fn.var).log_map(jacobians=dlog)
    return [dlog[0]], error


def linearized_cost(cost_fn) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor,
                                      torch.Tensor | None]:
    """``(jacobians, error)`` of :func:`weighted_jacobians_error`, ``cost_fn.weighted_error()``
    and, for a ``th.RobustCostFunction``, its inner cost function's weighted error (else
    None). A robust cost function's ``weighted_error`` and ``weighted_jacobians_error`` each
    evaluate its inner cost function; here the inner Jacobians and error are evaluated once
    and both results formed from them as ``RobustCostFunction`` forms them (a subclass that
    overrides either method is called as it is)."""
    robust = theseus.RobustCostFunction
    if not isinstance(cost_fn, robust):
        jacs, err = weighted_jacobians_error(cost_fn)
        return jacs, err, err, None
    if (type(cost_fn).weighted_error is not robust.weighted_error
            or type(cost_fn).weighted_jacobians_error is not robust.weighted_jacobians_error):
        jacs, err = weighted_jacobians_error(cost_fn)
        return jacs, err, cost_fn.weighted_error(), cost_fn.cost_function.weighted_error()
    jacs, inner = weighted_jacobians_error(cost_fn.cost_function)
    dim, eps, flat = cost_fn.dim(), robust._EPS, cost_fn.flatten_dims
    err = inner.reshape(-1, 1) if flat else inner
    if flat:
        jacs = [j.view(-1, 1, j.shape[2]) for j in jacs]
    squared_norm = torch.sum(err**2, dim=1, keepdim=True)
    rescale = (cost_fn._linearize(squared_norm) + eps).sqrt()
    jacs = [rescale.view(-1, 1, 1) * j for j in jacs]
    rescaled = rescale * err
    loss = cost_fn._evaluate_loss(squared_norm)
    if flat:
        return ([j.reshape(-1, dim, j.shape[2]) for j in jacs], rescaled.reshape(-1, dim),
                (loss.reshape(-1, dim) + eps).sqrt(), inner)
    return jacs, rescaled, torch.ones_like(err) * (loss / dim + eps).sqrt(), inner


_EXACT_JACOBIAN_WEIGHTS = (theseus.ScaleCostWeight, theseus.DiagonalCostWeight)


def differentiable_jacobians(cost_fn) -> bool:
    """Whether ``weighted_jacobians_error(cost_fn)``, evaluated with the optim vars set
    from tensors that require grad, is a differentiable function of them whose values are
    the weighted error's exact derivative: a ``th.Between`` of two or a ``th.Local`` of one
    Lie-group or ``th.Vector`` variable (Theseus' analytic Jacobians, plain torch ops;
    ``th.Local``'s only while ``fast_approx_local_jacobians`` is off), weighted by a
    ``ScaleCostWeight`` or ``DiagonalCostWeight``, possibly inside a
    ``th.RobustCostFunction`` (exact classes only: a subclass may redefine its Jacobians)."""
    cf = cost_fn.cost_function if type(cost_fn) is theseus.RobustCostFunction else cost_fn
    kind = type(cf)
    if type(cf.weight) not in _EXACT_JACOBIAN_WEIGHTS:
        return False
    groups = (theseus.SE2, theseus.SE3, theseus.SO2, theseus.SO3, Vector)
    if kind is theseus.Between:
        return type(cf.v0) in groups and type(cf.v1) is type(cf.v0)
    if kind is theseus.Local:
        return (type(cf.var) in groups
                and not _THESEUS_GLOBAL_PARAMS.fast_approx_local_jacobians)
    return False


@contextmanager
def rows_of(cost_fn, rows: torch.Tensor, total: int):
    """Within: every variable of ``cost_fn`` (optim, aux and its weight's, as
    ``Vectorize._get_all_vars`` lists them) whose tensor has ``total`` rows holds only the
    rows ``rows`` (a vectorised cost function evaluated for some batch elements); a
    broadcast (one-row) tensor is left as it is."""
    saved = []
    for v in Vectorize._get_all_vars(cost_fn):
        t = v.tensor
        if t.shape[0] == total:
            saved.append((v, t))
            v.update(t[rows])
    try:
        yield
    finally:
        for v, t in reversed(saved):
            v.update(t)


_SE2_LOG_MAP_IMPL = SE2._log_map_impl
_SE2_LOCK = threading.Lock()
_se2_users = 0
# Per thread: how deep the current thread is inside accurate_se2_log_jacobian.
_SE2_ACTIVE = threading.local()


@contextmanager
def accurate_se2_log_jacobian():
    """Within: ``SE2.log_map(jacobians=...)`` gives its Jacobian to a few ulps. Theseus
    forms two of its entries by cancellation for ``|theta|`` at or above its Taylor switch
    (1e-3 in float64): ``(theta/2) sin(theta) / (1 - cos(theta))`` (relative error
    ~eps / theta^2) and ``1/theta - sin(theta) / (2 (1 - cos(theta)))`` (absolute error
    ~eps / theta^3: 2.6e-9 at theta = 2e-3 against a 50-digit reference). On robust SE2
    pose graphs their gradient was 1e-7..1e-6 off autograd's at the solution, above
    Ipopt's tol. Both are recomputed from ``cot(theta/2)`` (and a series below 0.1); the
    log itself and every other entry are Theseus'. The class attribute is swapped while
    any caller is inside (reference-counted under a lock); the swapped method corrects the
    Jacobian only on threads that are inside, so other threads using SE2 meanwhile get
    Theseus' own numbers."""
    global _se2_users
    with _SE2_LOCK:
        if _se2_users == 0:
            SE2._log_map_impl = _accurate_se2_log_map_impl
        _se2_users += 1
    _SE2_ACTIVE.depth = getattr(_SE2_ACTIVE, "depth", 0) + 1
    try:
        yield
    finally:
        _SE2_ACTIVE.depth -= 1
        with _SE2_LOCK:
            _se2_users -= 1
            if _se2_users == 0:
                SE2._log_map_impl = _SE2_LOG_MAP_IMPL


def _accurate_se2_log_map_impl(self, jacobians=None):
    log = _SE2_LOG_MAP_IMPL(self, jacobians)
    if jacobians is not None and getattr(_SE2_ACTIVE, "depth", 0) > 0:
        _fix_se2_log_jacobian(jacobians[-1], log)
    return log


def _fix_se2_log_jacobian(jac: torch.Tensor, log: torch.Tensor) -> None:
    """Overwrite, where ``|theta| >= d_near_zero`` (Theseus' own series below), the entries
    ``(theta/2) cot(theta/2)`` on the translation diagonal and ``c(theta) = 1/theta -
    cot(theta/2)/2`` in ``jac[:, :2, 2] = c (ux, uy) + (uy, -ux)/2`` of the log-map
    Jacobian ``jac`` (rows, 3, 3) at ``log = (ux, uy, theta)``."""
    theta = log[:, 2]
    big = theta.abs() >= _THESEUS_GLOBAL_PARAMS.get_eps("se2", "d_near_zero", theta.dtype)
    if not bool(big.any()):
        return
    half = 0.5 * torch.where(big, theta, torch.ones_like(theta))
    half_cot = half * torch.cos(half) / torch.sin(half)
    small = theta.abs() < 0.1
    t = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    # 1/t - cot(t/2)/2 = t/12 + t^3/720 + t^5/30240 + t^7/1209600 + t^9/47900160 + O(t^11)
    series = theta * (1 / 12 + t2 * (1 / 720 + t2 * (1 / 30240 + t2 * (
        1 / 1209600 + t2 / 47900160))))
    coeff = torch.where(small, series, (1.0 - torch.where(small, 0.0, half_cot)) / t)
    ux, uy = log[:, 0], log[:, 1]
    jac[:, 0, 0] = torch.where(big, half_cot, jac[:, 0, 0])
    jac[:, 1, 1] = torch.where(big, half_cot, jac[:, 1, 1])
    jac[:, 0, 2] = torch.where(big, coeff * ux + 0.5 * uy, jac[:, 0, 2])
    jac[:, 1, 2] = torch.where(big, coeff * uy - 0.5 * ux, jac[:, 1, 2])


def cost_function_groups(objective: Objective, sources: dict | None = None) -> list[tuple]:
    """``(cost functions, evaluator)`` per group, in the order of ``error()``'s rows: a
    vectorised objective's schemas, each evaluator the schema's vectorised cost function
    with its variables set to the K cost functions' tensors stacked cost-function-major
    (K * B rows; ``sources`` as in :func:`weighted_error`), or the cost function itself
    for a schema of one; a plain objective's cost functions one by one (K = 1)."""
    vec = getattr(objective._get_error_iter, "__self__", None)
    if not isinstance(vec, Vectorize):
        return [([cf], cf) for cf in objective._get_error_iter()]
    bsz = objective.batch_size
    out = []
    for schema, wrappers in vec._schema_dict.items():
        if len(wrappers) == 1:
            out.append(([wrappers[0].cost_fn], wrappers[0].cost_fn))
            continue
        vectorized = vec._vectorized_cost_fns[schema]
        slots = Vectorize._get_all_vars(vectorized)
        grad = torch.is_grad_enabled()
        fill = _FILLED.get(vectorized)
        if fill is None or fill.bsz != bsz or fill.k != len(wrappers):
            fill = _FILLED[vectorized] = _Fill(bsz, wrappers)
        gathered = _gather_slots(slots, fill, sources or {})
        var_names = vec._var_names[schema]
        last = fill.last
        changed = [] if last is None else [
            i for i in range(len(slots))
            if i not in gathered and (
                slots[i].tensor is not fill.held[i]  # refilled since (Theseus' own fill)
                or any(map(operator.is_not, map(_TENSOR, fill.vars[i]), last[i]))
                # filled under no_grad from tensors that require grad: no graph to them
                or (grad and fill.graphless[i] and any(t.requires_grad for t in last[i])))
        ]
        if changed and all(_simple_slot(var_names, i) for i in changed):
            # only slots of one variable each changed (e.g. Vector optim vars set one by
            # one, new aux data): refill those as Theseus' fill would, without walking
            # every variable of the schema
            for i in changed:
                slot_tensors = list(map(_TENSOR, fill.vars[i]))
                slots[i].update(_slot_fill(var_names[i], slot_tensors, bsz))
                last[i] = slot_tensors
                fill.graphless[i] = not grad
        elif last is None or changed:
            # Theseus' own fill, then the gathers again
            tensors: dict = defaultdict(list)
            Vectorize._update_all_cost_fns_var_tensors(wrappers, var_names, bsz, tensors)
            Vectorize._update_vectorized_vars(slots, tensors, var_names, bsz, len(wrappers))
            _gather_slots(slots, fill, sources or {})
            fill.last = [list(map(_TENSOR, vs)) for vs in fill.vars]
            fill.graphless = [not grad] * len(slots)
        fill.held = [v.tensor for v in slots]
        out.append(([w.cost_fn for w in wrappers], vectorized))
    return out


_TENSOR = operator.attrgetter("tensor")
_STACKED, _POSITION, _PIECE = (operator.itemgetter(k) for k in range(3))


class _Fill:
    """What :func:`cost_function_groups` knows of one vectorised cost function's slots:
    per slot its K cost functions' variables (``vars``) and their names, the tensors those
    held at its last fill (``last``; None before the first), the slots' own tensors as left
    then (``held``), whether that fill ran under no_grad (``graphless``), and per gathered
    slot the stacked rows it took (positions, rows). A slot whose variables hold the same
    tensors again and that still holds the tensor left there (Theseus' own fill, e.g.
    ``objective.error_metric()``, replaces it) still holds their concatenation, with a
    graph to them unless it was filled under no_grad."""

    __slots__ = ("bsz", "k", "vars", "names", "last", "held", "graphless", "rows")

    def __init__(self, bsz: int, wrappers: list) -> None:
        per_wrapper = [Vectorize._get_all_vars(w.cost_fn) for w in wrappers]
        self.bsz, self.k = bsz, len(wrappers)
        self.vars = [list(vs) for vs in zip(*per_wrapper, strict=True)]
        self.names = [[v.name for v in vs] for vs in self.vars]
        self.last: list | None = None
        self.held: list = []
        self.graphless: list[bool] = []
        self.rows: dict[int, tuple] = {}


# vectorised cost function -> its _Fill
_FILLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _simple_slot(var_names: list[str], i: int) -> bool:
    """Slot ``i`` of a schema holds one variable per cost function (its own, or one
    shared by all: Theseus' shared token) that is in no other slot of the schema, so
    :func:`_slot_fill` gives its vectorised tensor as Theseus' fill does."""
    return var_names.count(var_names[i]) == 1


def _slot_fill(name: str, tensors: list[torch.Tensor], bsz: int) -> torch.Tensor:
    """The vectorised tensor (K * B rows) of a :func:`_simple_slot` from its K cost
    functions' tensors, as ``Vectorize._update_all_cost_fns_var_tensors`` and
    ``_update_vectorized_vars`` form it: a shared variable of one row expanded, any other
    variable's tensors (one row expanded to ``bsz`` unless shared) concatenated."""
    if len(tensors) == 1:
        t = tensors[0]
        shared = Vectorize._SHARED_TOKEN in name
        return t if t.shape[0] > 1 or bsz == 1 or shared else Vectorize._expand(t, bsz)
    if Vectorize._SHARED_TOKEN in name:
        if tensors[0].shape[0] == 1:
            return Vectorize._expand(tensors[0], bsz * len(tensors))
        return torch.cat(tensors)
    return torch.cat([t if t.shape[0] > 1 or bsz == 1 else Vectorize._expand(t, bsz)
                      for t in tensors])


def _gather_slots(slots: list, fill: _Fill, sources: dict) -> set[int]:
    """Refill each vectorised slot whose variables all come from one stacked tensor (and
    still hold their piece of it) by one gather from that tensor; returns the slots
    refilled."""
    done: set[int] = set()
    if not sources:
        return done
    bsz = fill.bsz
    for i, slot in enumerate(slots):
        found = list(map(sources.get, fill.names[i]))
        if None in found or any(map(operator.is_not, map(_PIECE, found),
                                    map(_TENSOR, fill.vars[i]))):
            continue
        stacked = found[0][0]
        if any(map(operator.is_not, map(_STACKED, found), itertools.repeat(stacked))):
            continue
        pos = tuple(map(_POSITION, found))
        got = fill.rows.get(i)
        if got is None or got[0] != pos or got[1].device != stacked.device:
            p = torch.as_tensor(pos, device=stacked.device)
            got = fill.rows[i] = (pos, (p[:, None] * bsz + torch.arange(
                bsz, device=stacked.device)).reshape(-1))
        slot.update(stacked[got[1]])
        done.add(i)
    return done


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


def plain_update(var) -> bool:
    """``var.update`` is Theseus' ``Variable.update`` (no subclass override), so
    :func:`set_tensor` may stand in for it."""
    return type(var).update is Variable.update


def set_tensor(var, tensor: torch.Tensor) -> None:
    """``var.update(tensor)`` for a variable with :func:`plain_update` and a tensor of its
    shape and dtype (the chart's pieces and base values): Theseus' assignment and update
    count, without its checks (0.1 microseconds instead of 1.1, ~1800 times per forward on
    a 100-pose graph)."""
    var.tensor = tensor
    var._num_updates += 1


def init_info(optimizer, track_best_solution: bool, track_err_history: bool,
              track_state_history: bool):
    """A fresh ``NonlinearOptimizerInfo`` as Theseus' optimizers start one. Theseus evaluates
    the objective's error metric for it, a value kept only in ``err_history`` and
    ``best_err``; with no history and no best solution tracked it is not evaluated, and
    ``last_err`` starts as NaN (:func:`pounce_theseus.info.fill_info` overwrites it and
    ``converged_iter`` and ``best_iter``)."""
    if track_best_solution or track_err_history or track_state_history:
        return optimizer._init_info(track_best_solution, track_err_history,
                                    track_state_history)
    obj = optimizer.objective
    last_err = torch.full((obj.batch_size,), float("nan"), dtype=obj.dtype, device=obj.device)
    return NonlinearOptimizerInfo(
        best_solution=None, last_err=last_err, best_err=None,
        status=np.array([NonlinearOptimizerStatus.START] * obj.batch_size),
        converged_iter=torch.zeros_like(last_err, dtype=torch.long),
        best_iter=torch.zeros_like(last_err, dtype=torch.long),
        err_history=None, state_history=None)


def register_optimizer(cls: type) -> None:
    """Make ``cls`` reachable as ``theseus.<name>`` (configs pick optimizers with
    ``getattr(th, name)``); a name Theseus itself defines is never replaced.

    ``cls`` is also registered as a virtual subclass of ``th.NonlinearLeastSquares`` (an
    ``abc`` registration: ``issubclass`` holds, nothing is inherited), because Theseus'
    ``MotionPlanner`` (used by its motion-planning examples) asserts
    ``issubclass(optimizer_cls, th.NonlinearLeastSquares)`` on the class its config names;
    no Theseus code dispatches on that relation otherwise (0.2.3)."""
    if not hasattr(theseus, cls.__name__):
        setattr(theseus, cls.__name__, cls)
    if not issubclass(cls, theseus.NonlinearLeastSquares):
        theseus.NonlinearLeastSquares.register(cls)


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
