"""Solution refinement: semismooth Newton steps on the conic optimality conditions.

After the interior-point solve, (x, y, s) is refined in the variables ``(x, w)``, ``w = s - y``,
on the residual map of Busseti, Moursi and Boyd ("Solution refinement at regular points of
conic problems", 2019) written without the homogeneous embedding:

    s = Pi_K(w),   y = Pi_K(w) - w                     (complementary, in K x K*, exactly)
    F(x, w) = [P_eff x + q + A'y;  A x + s - b]

Its Jacobian ``[[P_eff, A'(D - I)], [A, D]]`` (D = dPi_K/dw) is nonsingular at a regular
point (strict complementarity and a unique solution). With ``dy = (D - I) dw`` and
``ds = D dw = -H dy``, ``H = D (I - D)^-1``, the Newton step is the backward's own KKT solve

    [[P_eff, A'], [A, -H]] [dx; dy] = -F,     ds = -F_2 - A dx,     dw = ds - dy

with H the active-set scaling (pounce_kkt/active_set.py), so it runs through the same dense
or sparse path as the backward. The given point is first snapped to ``(Pi_K(w), Pi_K(w) - w)``;
Newton steps follow where that point's residual is above a target (:func:`default_target`),
for LP/QP only where the given point's is too (the smaller of the two bounds the error there).
A point (snapped or stepped) is kept only if the residual ``res`` (below) falls, a step
halved up to twice; an item stops when no step is kept or its residual is below
REFINE_FLOOR, except that once per item, above target, it continues from the full step
(semismooth Newton on a row the iterate left ambiguous: the first step flips it and may
raise ``res``, the next lands on the right piece). The best point is kept apart, so
refinement never returns a worse point than it was given:

    res = max(|F_1|_inf / (1 + max(|P_eff x|_inf, |q|_inf, |A'y|_inf)),
              |F_2|_inf / (1 + max(|A x|_inf, |s|_inf, |b|_inf)),
              |s - Pi_K(s - y)|_inf / (1 + max(|s|_inf, |y|_inf)))

(the last term, 0 at a snapped point, measures the given point's complementarity and cone
membership).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pounce_kkt.active_set import snap
from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.cones.arrays import plain
from pounce_kkt.dense_kkt import dense_matrix
from pounce_kkt.structure import ConicStructure
from pounce_kkt.torch_threads import serial_torch

# Residual below which no Newton step is taken: LP/QP (zero and nonneg rows only: a
# piecewise-affine solution map, where the given or the snapped residual bounds the error,
# 1e-10 leaving a margin for the 1e-9 error target: 1e-9 left 1.3e-9 on test_refine's LP
# family) and, on the snapped residual, problems
# with a curved cone (SOC, PSD, exp, power: an iterate's error there is ~sqrt of its
# residual, so they get at least one Newton step); then the floor below which steps stop,
# and the step budget.
REFINE_TARGET = 1e-10
REFINE_TARGET_CURVED = 1e-14
# An "optimal_inaccurate" item refined below this residual is reported "optimal".
REFINE_OPTIMAL = 1e-9
REFINE_FLOOR = 1e-15
REFINE_STEPS = 8
BACKTRACKS = 2

# solve(x, y, s, rhs_x, rhs_y, items) -> (dx, dy): the KKT solve with the active-set H at
# (s, y), for the batch items in the bool mask `items` (others may return anything finite).
# A solve that is the native sparse adjoint's may carry `native_steps` (NativeSteps): the
# whole refinement then runs natively (:func:`refine`).
KktSolve = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# native_steps(P, A, q, b, x, y, s, ok, target, floor, max_steps) on numpy arrays ->
# ConicProblem.newton_steps' dict (rust/py/src/problem.rs; the core's newton_steps.rs: this
# module's loop per item, every cone, items in parallel).
NativeSteps = Callable[..., dict]
# The environment switch that keeps the Newton steps in Python ("0" or "off"), for
# comparisons.
NATIVE_STEPS_ENV = "POUNCE_LAYERS_NATIVE_STEPS"


def native_steps(path: str) -> bool:
    """Whether refinement's Newton steps run natively (NativeSteps, every cone:
    rust/core/src/cone_snap.rs) when its KKT solve takes `path` ("dense" or "sparse"): on
    the sparse path, unless NATIVE_STEPS_ENV is off."""
    return path == "sparse" and os.environ.get(NATIVE_STEPS_ENV, "").lower() not in ("0", "off")


@dataclass
class Refinement:
    """Refined x, y, s (B, ...), the residual before and after (B,), Newton steps (B,)."""

    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    steps: torch.Tensor


# Below this many entries per batch (B (n^2 + m n)) the operators are applied as dense bmm.
DENSE_OPERATOR_ENTRIES = 4_000_000


class KktOperators:
    """x -> P_eff x, x -> A x, y -> A'y, P_eff = (P + P')/2, for a batch of values (B, nnz)
    on the structure's patterns (dense batched products when small, index_add over the
    patterns otherwise)."""

    def __init__(self, structure: ConicStructure, P: torch.Tensor | None, A: torch.Tensor):
        self.st, self.P, self.A = structure, P, A
        n, m = structure.n, structure.m
        self.dense = _dense_operators(structure, A.shape[0])
        if self.dense:
            self.Ad = _dense(A, structure.a_rows, structure.a_cols, (m, n))
            self.Pd = None
            if P is not None:
                Pd = _dense(P, structure.p_rows, structure.p_cols, (n, n))
                self.Pd = 0.5 * (Pd + Pd.transpose(1, 2))

    def take(self, idx: torch.Tensor) -> KktOperators:
        """The operators of the batch items idx (a 1-D index tensor or array, increasing):
        `self` when idx is every item."""
        if len(idx) == self.A.shape[0]:
            return self
        sub = object.__new__(KktOperators)  # the same fields, batch rows idx
        sub.st, sub.dense = self.st, self.dense
        sub.P = None if self.P is None else self.P[idx]
        sub.A = self.A[idx]
        if self.dense:
            sub.Ad = self.Ad[idx]
            sub.Pd = None if self.Pd is None else self.Pd[idx]
        return sub

    def p(self, x: torch.Tensor) -> torch.Tensor:
        if self.P is None:
            return _xp(x).zeros_like(x)
        if self.dense:
            return (self.Pd @ x[:, :, None])[:, :, 0]
        st = self.st
        return 0.5 * (_spmv(self.P, st.p_rows, st.p_cols, x, st.n)
                      + _spmv(self.P, st.p_cols, st.p_rows, x, st.n))

    def a(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return (self.Ad @ x[:, :, None])[:, :, 0]
        return _spmv(self.A, self.st.a_rows, self.st.a_cols, x, self.st.m)

    def at(self, y: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return (y[:, None, :] @ self.Ad)[:, 0, :]
        return _spmv(self.A, self.st.a_cols, self.st.a_rows, y, self.st.n)

    @classmethod
    def on_numpy(cls, structure: ConicStructure, P: torch.Tensor | None, A: torch.Tensor
                 ) -> KktOperators | BlockOperators:
        """The operators on numpy arrays (CPU float64 values; see `_numpy_start`): p, a, at
        then take and return numpy arrays. Block-diagonal sparse (:class:`BlockOperators`)
        when the patterns are sparse (:func:`_sparse_operators`), else dense (B, r, c)."""
        if _sparse_operators(structure):
            return BlockOperators(structure, None if P is None else P.detach().numpy(),
                                  A.detach().numpy())
        ops = object.__new__(cls)
        ops.st, ops.dense = structure, True
        ops.P = None if P is None else P.detach().numpy()
        ops.A = A.detach().numpy()
        ops.Ad = _dense(ops.A, structure.a_rows, structure.a_cols, (structure.m, structure.n))
        ops.Pd = None
        if ops.P is not None:
            Pd = _dense(ops.P, structure.p_rows, structure.p_cols, (structure.n, structure.n))
            ops.Pd = 0.5 * (Pd + Pd.transpose(0, 2, 1))
        return ops


class BlockOperators:
    """KktOperators' p, a, at, take on numpy arrays (B, k), through one block-diagonal CSC
    matrix per batch (scipy): B nnz multiply-adds per product instead of the dense B m n."""

    def __init__(self, structure: ConicStructure, P: np.ndarray | None, A: np.ndarray):
        self.st, self.P, self.A = structure, P, A
        n, m = structure.n, structure.m
        self.Ab = _block_csc(A, structure.a_indptr, structure.a_indices, m, n)
        self.Pb = None if P is None else _block_csc(P, structure.p_indptr, structure.p_indices,
                                                    n, n)

    def take(self, idx: np.ndarray) -> BlockOperators:
        """The operators of the batch items idx (increasing): `self` when idx is every item."""
        if len(idx) == self.A.shape[0]:
            return self
        return BlockOperators(self.st, None if self.P is None else self.P[idx], self.A[idx])

    def p(self, x: np.ndarray) -> np.ndarray:
        if self.Pb is None:
            return np.zeros_like(x)
        v = x.reshape(-1)
        return (0.5 * (self.Pb @ v + self.Pb.T @ v)).reshape(x.shape)

    def a(self, x: np.ndarray) -> np.ndarray:
        return (self.Ab @ x.reshape(-1)).reshape(x.shape[0], self.st.m)

    def at(self, y: np.ndarray) -> np.ndarray:
        return (self.Ab.T @ y.reshape(-1)).reshape(y.shape[0], self.st.n)


def _block_csc(values: np.ndarray, indptr: np.ndarray, indices: np.ndarray, rows: int,
               cols: int):
    """The block-diagonal (B rows) x (B cols) CSC matrix of B items' values (B, nnz) on one
    CSC pattern (indptr, indices)."""
    import scipy.sparse as sp

    B, nnz = values.shape
    item = np.arange(B, dtype=np.int64)[:, None]
    ind = (np.asarray(indices, dtype=np.int64)[None, :] + rows * item).reshape(-1)
    ptr = np.append((np.asarray(indptr[:-1], dtype=np.int64)[None, :] + nnz * item).reshape(-1),
                    B * nnz)
    return sp.csc_matrix((np.ascontiguousarray(values).reshape(-1), ind, ptr),
                         shape=(B * rows, B * cols))


# Patterns at most this dense (stored entries of A and P over m n + n n) get the sparse numpy
# operators (BlockOperators); denser ones the dense batched products.
SPARSE_OPERATOR_DENSITY = 0.1


def _sparse_operators(structure: ConicStructure) -> bool:
    """Whether the numpy operators are block-sparse (SPARSE_OPERATOR_DENSITY)."""
    n, m = structure.n, structure.m
    return structure.nnz_a + structure.nnz_p <= SPARSE_OPERATOR_DENSITY * (m * n + n * n)


def _dense_operators(structure: ConicStructure, batch: int) -> bool:
    """Whether a batch's operators are applied as dense bmm (DENSE_OPERATOR_ENTRIES)."""
    return batch * (structure.n * structure.n + structure.m * structure.n) \
        <= DENSE_OPERATOR_ENTRIES


def _dense(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
           shape: tuple[int, int]) -> torch.Tensor:
    """(B, r, c) from CSC values (a tensor, or a numpy array giving one); a full pattern
    (sorted, no duplicates: every entry, column by column) is a reshape."""
    if values.shape[1] == shape[0] * shape[1]:
        full = values.reshape(values.shape[0], shape[1], shape[0])  # (B, c, r): by column
        return full.transpose(0, 2, 1) if isinstance(values, np.ndarray) else full.transpose(1, 2)
    if isinstance(values, np.ndarray):
        return dense_matrix(torch.from_numpy(values), rows, cols, shape).numpy()
    return dense_matrix(values, rows, cols, shape)


def _spmv(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, v: torch.Tensor,
          n_out: int) -> torch.Tensor:
    """Batched sparse matrix-vector product: out[b, rows[k]] += values[b, k] v[b, cols[k]]."""
    B = v.shape[0]
    flat = (torch.arange(B, device=v.device)[:, None] * n_out + rows[None, :]).reshape(-1)
    out = v.new_zeros(B * n_out).index_add_(0, flat, (values * v[:, cols]).reshape(-1))
    return out.reshape(B, n_out)


def _xp(t: torch.Tensor | np.ndarray):
    """The array module of `t`: numpy for an ndarray, else torch. The residuals, the snap of
    LP/QP rows and the first refinement decision are written once for both (the same
    function names and semantics: where, maximum, amax, abs, zeros, zeros_like)."""
    return np if isinstance(t, np.ndarray) else torch


def _inf(t: torch.Tensor) -> torch.Tensor:
    """Row-wise max |t| of a (B, k) tensor or array, (B,); 0 where k = 0."""
    if not t.shape[1]:
        return _xp(t).zeros(t.shape[0], dtype=t.dtype)
    return np.abs(t).max(1) if isinstance(t, np.ndarray) else t.abs().amax(1)


def kkt_residual(ops: KktOperators, q: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor, s: torch.Tensor, px: torch.Tensor | None = None,
                 ax: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(res, F_1, F_2) of the stationarity and primal rows, batch-first float64:

        F_1 = P_eff x + q + A'y,   F_2 = A x + s - b,
        res = max(|F_1|_inf / (1 + max(|P_eff x|_inf, |q|_inf, |A'y|_inf)),
                  |F_2|_inf / (1 + max(|A x|_inf, |s|_inf, |b|_inf)))      (B,)

    px, ax: P_eff x and A x when the caller has them (x unchanged, only y or s moved).
    """
    xp = _xp(x)
    px = ops.p(x) if px is None else px
    ax = ops.a(x) if ax is None else ax
    aty = ops.at(y)
    r1, r2 = px + q + aty, ax + s - b
    dual = _inf(r1) / (1 + xp.maximum(xp.maximum(_inf(px), _inf(q)), _inf(aty)))
    primal = _inf(r2) / (1 + xp.maximum(xp.maximum(_inf(ax), _inf(s)), _inf(b)))
    return xp.maximum(dual, primal), r1, r2


def _moreau(s: torch.Tensor, y: torch.Tensor, cones: ConeDims) -> torch.Tensor:
    """The complementarity term |s - Pi_K(s - y)|_inf / (1 + max(|s|_inf, |y|_inf)), (B,)."""
    return _moreau_at(s, y, _snap(s, y, cones)[0])


def _moreau_at(s: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """:func:`_moreau` given p = Pi_K(s - y)."""
    return _inf(s - p) / (1 + _xp(s).maximum(_inf(s), _inf(y)))


def _snap(s: torch.Tensor, y: torch.Tensor, cones: ConeDims
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """active_set.snap: (Pi_K(w), Pi_K(w) - w), w = s - y, in the type of s. On numpy arrays
    with zero and nonneg rows only, written out (Pi_K is 0 on zero rows and max(w, 0) on
    nonneg rows, the two classes' `project` in pounce_kkt/cones/); with curved cones,
    active_set.snap on tensors sharing the arrays' memory."""
    if not isinstance(s, np.ndarray):
        return snap(s, y, cones)
    if _curved(cones):
        p, d = snap(torch.from_numpy(s), torch.from_numpy(y), cones)
        return p.numpy(), d.numpy()
    w = s - y
    p = np.maximum(w, 0.0)
    p[:, :cones.z] = 0.0
    return p, p - w


def residual(structure: ConicStructure, P: torch.Tensor | None, q: torch.Tensor,
             A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             s: torch.Tensor) -> torch.Tensor:
    """The relative residual ``res`` of the module docstring, (B,), computed as
    :func:`refine` computes it (in numpy where `_numpy_start` says so)."""
    if _numpy_start(structure, A, x):
        ops = KktOperators.on_numpy(structure, P, A)
        q, b, x, y, s = (t.detach().numpy() for t in (q, b, x, y, s))
        res = np.maximum(kkt_residual(ops, q, b, x, y, s)[0], _moreau(s, y, structure.cones))
        return torch.from_numpy(res)
    res = kkt_residual(KktOperators(structure, P, A), q, b, x, y, s)[0]
    return torch.maximum(res, _moreau(s, y, structure.cones))


def _curved(cones: ConeDims) -> bool:
    """Whether any SOC, PSD, exp or power cone is present (not LP/QP rows only)."""
    return bool(cones.q or cones.s or cones.ep or cones.p)


def default_target(cones: ConeDims) -> float:
    """REFINE_TARGET for LP/QP cones, REFINE_TARGET_CURVED with any SOC, PSD, exp, power."""
    return REFINE_TARGET_CURVED if _curved(cones) else REFINE_TARGET


def refine(structure: ConicStructure, P: torch.Tensor | None, q: torch.Tensor,
           A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
           s: torch.Tensor, ok: torch.Tensor, solve: KktSolve,
           target: float | None = None, max_steps: int = REFINE_STEPS,
           floor: float = REFINE_FLOOR) -> Refinement:
    """Refine the solved items (ok) of a batch; see the module docstring.

    All tensors batch-first float64 on one device, no graph. Items not ok come back
    unchanged; no Newton step is taken where the snapped point's residual is below
    ``target`` (None: :func:`default_target`), nor for LP/QP where the given point's is;
    an item stops stepping once its residual is at most ``floor``.
    Each step's KKT solve sees only the items still stepping (``solve``'s mask), and its
    trial points are evaluated on them alone. Runs on one Torch thread
    (pounce_kkt/torch_threads.py); on CPU float64 values with sparse or small operators
    (:func:`_numpy_start`), the residuals, snaps and steps run on numpy views instead (the
    same code, `_xp`: at B = 1 to 256 a small Torch op's dispatch costs more than its work)
    and only `solve` and the curved cones' projections see tensors. A KKT matrix `solve`
    cannot factor raises RuntimeError (its caller keeps the given points).

    A `solve` carrying `native_steps` (CPU float64 values) runs the whole loop natively
    (:func:`_native_refine`): the same steps per item, and an item whose K cannot be
    factored comes back as given with NaN residuals while the others are refined.
    """
    target = default_target(structure.cones) if target is None else target
    cones = structure.cones
    native = getattr(solve, "native_steps", None)
    if native is not None and plain(*(t for t in (P, q, A, b, x, y, s) if t is not None)):
        return _native_refine(native, P, q, A, b, x, y, s, ok, target, max_steps, floor)
    with torch.no_grad(), serial_torch():
        numpy = _numpy_start(structure, A, x)
        if numpy:  # the same steps on numpy arrays; the KKT solves stay `solve`'s (Torch)
            ops = KktOperators.on_numpy(structure, P, A)
            q, b, x, y, s, ok = (t.detach().numpy() for t in (q, b, x, y, s, ok))
            solve = _numpy_solve(solve)
        else:
            ops = KktOperators(structure, P, A)
        xp = _xp(x)
        best_x, best_y, best_s, before, best_res, cx, cy, cs, cres, cr1, cr2, live = _start(
            ops, q, b, x, y, s, ok, target, cones)
        best = [best_x, best_y, best_s]
        steps = xp.zeros_like(cres, dtype=xp.int64)
        spare = _copy(ok)  # one step per item that may raise the residual
        for _ in range(max_steps if bool(live.any()) else 0):
            live = live & (cres > floor)
            idx = _nonzero(live)
            if len(idx) == 0:
                break
            dx, dy = (t[idx] for t in solve(cx, cy, cs, -cr1, -cr2, live))
            sub = ops.take(idx)
            x0, y0, s0, res0 = cx[idx], cy[idx], cs[idx], cres[idx]
            qi, bi = q[idx], b[idx]
            w, dw = s0 - y0, -cr2[idx] - sub.a(dx) - dy  # dw = ds - dy, ds = -F_2 - A dx
            new = [x0, y0, s0, res0, cr1[idx], cr2[idx]]
            taken = xp.zeros_like(res0) > 0
            t, full = 1.0, None
            for _ in range(BACKTRACKS + 1):
                tx = x0 + t * dx
                ts_, ty = _snap(w + t * dw, xp.zeros_like(w), cones)
                tres, tr1, tr2 = kkt_residual(sub, qi, bi, tx, ty, ts_)
                full = full or (tx, ty, ts_, tres, tr1, tr2)
                better = ~taken & xp.isfinite(tres) & (tres < res0)
                new = [xp.where(better[:, None] if v.ndim == 2 else better, v, c)
                       for v, c in zip((tx, ty, ts_, tres, tr1, tr2), new, strict=True)]
                taken = taken | better
                if bool(taken.all()):
                    break
                t *= 0.5
            # An item still above target that no trial point improved continues once from
            # the full step: a step that flips a row the iterate left ambiguous (s_i, y_i both
            # ~sqrt(mu)) can raise the residual before the next one ends on the right piece.
            jump = ~taken & spare[idx] & xp.isfinite(full[3]) & (res0 > target)
            new = [xp.where(jump[:, None] if v.ndim == 2 else jump, v, c)
                   for v, c in zip(full, new, strict=True)]
            spare = _put(spare, idx, spare[idx] & ~jump)
            moved = taken | jump
            cx, cy, cs, cres, cr1, cr2 = (_put(c, idx, v) for c, v in
                                          zip((cx, cy, cs, cres, cr1, cr2), new, strict=True))
            steps = _put(steps, idx, steps[idx] + moved)
            live = _put(live, idx, moved)
            kept = _put(xp.zeros_like(live), idx, moved)
            best_res = _keep(best, best_res, kept & (cres < best_res), (cx, cy, cs), cres)
        out = (*best, before, best_res, steps)
        return Refinement(*(torch.from_numpy(np.asarray(t)) if numpy else t for t in out))


def _native_refine(native: NativeSteps, P: torch.Tensor | None, q: torch.Tensor,
                   A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   s: torch.Tensor, ok: torch.Tensor, target: float, max_steps: int,
                   floor: float) -> Refinement:
    """:func:`refine` through the native Newton steps (NativeSteps). An item whose K could
    not be factored (or that panicked natively) comes back as given, with NaN residuals
    before and after and no step, and the other items are refined."""
    arr = [None if t is None else np.ascontiguousarray(t.detach().numpy())
           for t in (P, A, q, b, x, y, s)]
    out = native(*arr, np.ascontiguousarray(ok.numpy()), target=float(target),
                 floor=float(floor), max_steps=int(max_steps))
    return Refinement(*(torch.from_numpy(np.asarray(out[k])) for k in
                        ("x", "y", "s", "before", "after", "steps")))


def _numpy_start(structure: ConicStructure, A: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether refinement runs in numpy: CPU float64 values whose operators are sparse
    (:func:`_sparse_operators`) or small enough to be dense (:func:`_dense_operators`). A
    small Torch op costs ~2-15 us of dispatch, its numpy twin ~1-3 us, and refinement's
    start is ~40 of them per call (docs/profile-layers.md, section 5); the curved cones'
    projections and H run on tensors sharing the arrays' memory."""
    return ((_sparse_operators(structure) or _dense_operators(structure, A.shape[0]))
            and x.device.type == A.device.type == "cpu"
            and x.dtype == A.dtype == torch.float64)


def _start(ops: KktOperators, q: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
           y: torch.Tensor, s: torch.Tensor, ok: torch.Tensor, target: float, cones: ConeDims
           ) -> list[torch.Tensor]:
    """The given and the snapped point, in Torch or numpy (`_xp`): returns best x, y, s,
    before, best_res, the snapped point cx, cy, cs, its (res, F_1, F_2) and the mask of
    the items that take a Newton step."""
    xp = _xp(x)
    okc = ok[:, None]
    best = [xp.where(okc, t, t) for t in (x, y, s)]  # copies
    x, y, s = (xp.where(okc, t, 0.0) for t in (x, y, s))
    px, ax = ops.p(x), ops.a(x)  # x is the same at the given and the snapped point
    cs, cy = _snap(s, y, cones)
    given = kkt_residual(ops, q, b, x, y, s, px, ax)
    before = xp.where(ok, xp.maximum(given[0], _moreau_at(s, y, cs)), xp.nan)
    if _equal(cs, s) and _equal(cy, y):  # a snapped point given (a kept answer)
        cres, cr1, cr2 = given
    else:
        cres, cr1, cr2 = kkt_residual(ops, q, b, x, cy, cs, px, ax)
    better = ok & (cres < before)
    best = [xp.where(better[:, None], c, t) for c, t in zip((x, cy, cs), best, strict=True)]
    best_res = xp.where(better, cres, before)
    # LP/QP (a piecewise-affine map: either residual bounds the error linearly) step where
    # both the given and the snapped point are above target, curved cones where the
    # snapped one is (both terms see an iterate's complementarity error, y_i ~ mu / s_i
    # on a row 1e-4 from its kink, through Moreau's term min(s_i, y_i) of the given point).
    live = ok & ((cres if _curved(cones) else best_res) > target)
    return [*best, before, best_res, x, cy, cs, cres, cr1, cr2, live]


def _keep(best: list[torch.Tensor], best_res: torch.Tensor, mask: torch.Tensor,
          new: tuple[torch.Tensor, ...], new_res: torch.Tensor) -> torch.Tensor:
    """Replace best[i] by new[i] on the mask's items; returns the best residuals."""
    xp = _xp(best_res)
    for i, t in enumerate(new):
        best[i] = xp.where(mask[:, None], t, best[i])
    return xp.where(mask, new_res, best_res)


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """The indices of a (B,) mask's true entries (tensor or array, like the mask)."""
    return np.flatnonzero(mask) if isinstance(mask, np.ndarray) else mask.nonzero().flatten()


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors or two arrays hold the same values."""
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else torch.equal(a, b)


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.copy() if isinstance(t, np.ndarray) else t.clone()


def _put(c: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`c` with its rows idx (unique) replaced by v: a new tensor or array."""
    if isinstance(c, np.ndarray):
        out = c.copy()
        out[idx] = v
        return out
    return c.index_copy(0, idx, v)


def _numpy_solve(solve: KktSolve) -> KktSolve:
    """`solve` (Torch in and out) called with and returning numpy arrays (shared memory)."""

    def on_numpy(*arrays):
        return tuple(t.numpy() for t in solve(*(torch.from_numpy(a) for a in arrays)))

    return on_numpy
