"""Implicit-function-theorem derivative of a smooth NLP at a KKT point ("implicit step").

Problem, per batch element, with parameters theta::

    minimize f(x; theta)  subject to  c_i(x; theta) = 0   for the active rows i in A

(equality constraints, active inequality constraints and active variable bounds; the
inactive rows carry zero multipliers and drop out). At a KKT point (x*, lambda*) with
Lagrangian L = f + lambda' c, define

    r(x, theta) = [ grad_x L(x, lambda*; theta) ;  c_A(x; theta) ]

    K = [ H    A' ]     H = hess_xx L(x*, lambda*; theta),   A = jac_x c_A(x*; theta).
        [ A    0  ]

Differentiating r(x*(theta), theta) = 0 (the implicit function theorem, valid when K is
nonsingular and strict complementarity holds) gives

    [dx*/dtheta ; dlambda*/dtheta] = -K^-1 d_theta r.

The implicit step ``delta(theta) = -[K^-1 r(x*, theta)]_x`` with K held constant (detached)
has exactly that derivative, ``d delta / d theta = dx*/dtheta``, and value ~0 at the solution.
Callers return ``x* (+) (delta - delta.detach())``: the value is x* and autograd sees the
IFT derivative. Gradients are first order only (K is detached, so double backward through
the step is not the second derivative of the solution map).

Inactive rows are kept in K so every element has the same size: with the 0/1 mask M of
active rows the solved system is

    [ H     A'M      ] [u]   [ r_x  ]
    [ M A   -(I - M) ] [v] = [ M r_c ],

which forces v_i = 0 on inactive rows and reduces to the system above on the active ones.

Degenerate K. The derivative above exists when the reduced Hessian (H on the null space of
the active rows A) is positive definite and A has full row rank: then K has n positive and
p negative eigenvalues (inertia). At an iterate short of a minimum (an element stopped by its
iteration limit on a robust cost's concave side, near an inflection) or at a gauge freedom
K can be indefinite or (nearly) singular, and ``K^-1 r`` is meaningless or explodes (1e27).
An element is degenerate when K's inertia is not (n, p) or an eigenvalue of K is at most
``SINGULAR_EPS`` machine epsilons times its largest in magnitude (2.2e-15 in float64: an
eigenvalue that small is not resolved, eigvalsh's error being about eps max|l|; a weak
prior pinning a gauge freedom, 4e-13 to 8e-13 relative in 20- and 30-pose graphs with
Theseus' 1e-3 prior, stays regular and keeps its LU solution). Its step uses instead the
bounded choice

    [u; v] = pinv(K_+) r,   K_+ = K with H replaced by H_+ = V diag(l_i if l_i > t else 0) V',

H = V diag(l) V', t = PINV_RTOL max|l| (``PINV_RTOL`` of pounce_kkt/singular_kkt.py): the
Hessian's negative and near-zero curvature directions are dropped and the minimum-norm
least-squares solution of what remains is taken (``singular_kkt.min_norm``; without
constraints, the Newton step restricted to H's positive curvature directions).
A :class:`pounce_kkt.errors.DegenerateGradientWarning` names those batch elements. Other
elements keep the LU solution of K unchanged.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from pounce_kkt.errors import DegenerateGradientWarning
from pounce_kkt.kkt_solve import solve_kkt
from pounce_kkt.singular_kkt import PINV_RTOL, min_norm

__all__ = [
    "SINGULAR_EPS", "active_constraints", "implicit_step", "implicit_step_sparse",
    "implicit_step_with_limits",
    "kkt_matrix", "project_onto_bounds",
]

# Magnitude from which a variable or constraint limit counts as absent (Ipopt's 1e19
# default, with margin).
INF = 1e20
# K is numerically singular when an eigenvalue is at most this many machine epsilons of the
# largest in magnitude (module docstring).
SINGULAR_EPS = 10.0


def kkt_matrix(hessian: torch.Tensor, jac: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The masked KKT matrix ``[[H, A'M], [MA, -(I - M)]]`` of shape (B, n + p, n + p).

    ``hessian`` (B, n, n) is hess_xx L, ``jac`` (B, p, n) the constraint Jacobian rows and
    ``active`` (B, p) a boolean mask of the rows held active (equalities always active).
    """
    b, n, _ = hessian.shape
    p = jac.shape[1]
    m = active.to(hessian.dtype)
    mj = jac * m.unsqueeze(-1)
    k = hessian.new_zeros(b, n + p, n + p)
    k[:, :n, :n] = hessian
    k[:, :n, n:] = mj.transpose(1, 2)
    k[:, n:, :n] = mj
    k[:, n:, n:] = torch.diag_embed(m - 1.0)
    return k


def implicit_step(
    grad_lagrangian: torch.Tensor,
    hessian: torch.Tensor,
    jac: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    used: torch.Tensor | None = None,
    item_ids: list[int] | None = None,
) -> torch.Tensor:
    """Return ``delta = -[K^-1 r]_x`` (B, n) with K detached (see the module docstring).

    ``grad_lagrangian`` (B, n) is grad_x L at the solution and ``residual`` (B, p) the
    constraint rows c_A, both still attached to the parameters' autograd graph;
    ``hessian`` (B, n, n) and ``jac`` (B, p, n) are the values at the solution (detached
    here). Degenerate elements (K indefinite on the active rows' null space or singular)
    get the minimum-norm step of the module docstring and are named in a
    ``DegenerateGradientWarning``; ``used`` (B,) bool limits the check and the warning to
    the elements whose step the caller keeps (default all); ``item_ids`` names the
    elements in the warning (default their positions).
    """
    b, n = grad_lagrangian.shape
    h = hessian.detach()
    if jac is None or jac.shape[1] == 0:
        k = h
        rhs = grad_lagrangian
        act = h.new_zeros(b, 0, dtype=torch.bool)
    else:
        act = active if active is not None else torch.ones(jac.shape[:2], dtype=torch.bool)
        act = act.to(jac.device)
        k = kkt_matrix(h, jac.detach(), act)
        rhs = torch.cat([grad_lagrangian, torch.where(act, residual, 0.0)], dim=1)
    sol = _solve(k, rhs, n, act, used, item_ids)
    return -sol[:, :n]


def _solve(k: torch.Tensor, rhs: torch.Tensor, n: int, active: torch.Tensor,
           used: torch.Tensor | None, item_ids: list[int] | None = None) -> torch.Tensor:
    """Solve K u = rhs per element (K constant) with the shared dense KKT solve
    (pounce_kkt/kkt_solve.py), unregularised: a regularisation above a weak prior's
    eigenvalue (~4e-13 relative) would change the answer, and the singular elements are set
    aside here. The degenerate elements among ``used`` get ``pinv(K_+) rhs`` instead
    (module docstring) and a warning; the elements not ``used`` get ``rhs`` (a placeholder
    the caller discards)."""
    bad = _degenerate(k, n, active)
    skip = bad  # K replaced by I in the LU: no inf/NaN from a singular K reaches the graph
    if used is not None:
        bad = bad & used.to(bad.device)
        skip = bad | ~used.to(bad.device)
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    sol = solve_kkt(torch.where(skip[:, None, None], eye, k), rhs, n)
    if not bool(bad.any()):
        return sol
    idx = bad.nonzero().flatten()
    kp = _scaled_inactive(k[idx], n, active[idx])
    kp[:, :n, :n] = _positive_part(kp[:, :n, :n])
    out = sol.clone()
    out[idx] = min_norm(kp, rhs[idx])
    names = idx.tolist() if item_ids is None else [item_ids[i] for i in idx.tolist()]
    warnings.warn(f"implicit step: batch items {names} have a KKT matrix that is "
                  "singular or indefinite on the active constraints' null space (e.g. an "
                  "iterate short of a minimum); their gradient drops the Hessian's negative "
                  "and near-zero curvature directions and is the minimum-norm solution of "
                  "what remains (pounce_kkt/nlp_kkt.py)", DegenerateGradientWarning,
                  stacklevel=3)
    return out


def _scaled_inactive(k: torch.Tensor, n: int, active: torch.Tensor) -> torch.Tensor:
    """K with the inactive rows' diagonal -1 replaced by -max|K[:n]| (the same solution,
    since their rows of rhs are 0; a scale that leaves K's spectrum comparable to H's)."""
    out = k.clone()
    if active.shape[1] == 0:
        return out
    scale = k[:, :n].abs().flatten(1).amax(1).clamp_min(torch.finfo(k.dtype).tiny)
    rows = torch.arange(n, k.shape[-1], device=k.device)
    out[:, rows, rows] = torch.where(active, out[:, rows, rows], -scale[:, None])
    return out


def _degenerate(k: torch.Tensor, n: int, active: torch.Tensor) -> torch.Tensor:
    """(B,) bool: finite elements whose K's inertia is not (n, p) or whose smallest
    eigenvalue in magnitude is at most SINGULAR_EPS eps times the largest."""
    finite = torch.isfinite(k).flatten(1).all(1)
    bad = torch.zeros_like(finite)
    if not bool(finite.any()):
        return bad
    lam = torch.linalg.eigvalsh(_scaled_inactive(k[finite], n, active[finite]))
    mag = lam.abs()
    tiny = mag.amin(1) <= SINGULAR_EPS * torch.finfo(k.dtype).eps * mag.amax(1)
    inertia = ((lam > 0).sum(1) != n) | ((lam < 0).sum(1) != k.shape[-1] - n)
    bad[finite] = tiny | inertia
    return bad


def _positive_part(h: torch.Tensor) -> torch.Tensor:
    """H_+ = V diag(l_i if l_i > PINV_RTOL max|l| else 0) V' for symmetric H (B, n, n)."""
    lam, vec = torch.linalg.eigh(0.5 * (h + h.transpose(1, 2)))
    keep = lam > PINV_RTOL * lam.abs().amax(1, keepdim=True)
    lam = torch.where(keep, lam, torch.zeros_like(lam))
    return (vec * lam[:, None, :]) @ vec.transpose(1, 2)


def project_onto_bounds(
    x: np.ndarray, xl: np.ndarray, xu: np.ndarray, z_l: np.ndarray, z_u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, at_lo, at_hi)``: ``x`` clipped into ``[xl, xu]`` with the active bounds held
    exactly. An interior-point iterate keeps a ~sqrt(mu) gap to an active bound; a bound
    counts as active when its multiplier exceeds the gap (strict complementarity).
    Limits beyond ``INF`` in magnitude are absent."""
    x = np.clip(x, xl, xu)
    at_lo = np.isfinite(xl) & (xl > -INF) & (z_l > x - xl)
    at_hi = np.isfinite(xu) & (xu < INF) & (z_u > xu - x) & ~at_lo
    x = np.where(at_lo, xl, x)
    return np.where(at_hi, xu, x), at_lo, at_hi


def active_constraints(
    c: torch.Tensor, lam: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(active, at_upper)`` masks (B, p) of constraint rows ``lo <= c <= hi`` with
    multipliers ``lam`` (positive at an upper limit, negative at a lower one). Equalities
    (``lo == hi``) are always active; an inequality is active when its multiplier exceeds
    its slack."""
    eq = lo == hi
    at_lo = (lam < 0) & (lam.abs() > c - lo) & torch.isfinite(lo)
    at_hi = (lam > 0) & (lam.abs() > hi - c) & torch.isfinite(hi)
    return eq | at_lo | at_hi, at_hi & ~eq


def implicit_step_with_limits(
    grad_lagrangian: torch.Tensor,
    hessian: torch.Tensor,
    *,
    c: torch.Tensor | None = None,
    c_jac: torch.Tensor | None = None,
    c_lo: torch.Tensor | None = None,
    c_hi: torch.Tensor | None = None,
    lam: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
    x_lo: torch.Tensor | None = None,
    x_hi: torch.Tensor | None = None,
    at_lo: torch.Tensor | None = None,
    at_hi: torch.Tensor | None = None,
    used: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`implicit_step` for ``min f`` s.t. ``c_lo <= c(x) <= c_hi``,
    ``x_lo <= x <= x_hi``: the active rows are the constraints picked by
    :func:`active_constraints` (values ``c`` (B, p), Jacobian ``c_jac`` (B, p, n),
    multipliers ``lam``) held at the limit they touch, and the bounds marked ``at_lo`` /
    ``at_hi`` (B, n), held at ``x_lo`` / ``x_hi``. ``c``, the limits and ``x`` stay
    attached to the parameters' graph; infinite limits of inactive rows are unused.
    ``used`` is passed on to :func:`implicit_step`."""
    rows, resid, active = [], [], []
    if c is not None:
        act, upper = active_constraints(c.detach(), lam, c_lo.detach(), c_hi.detach())
        target = torch.where(upper, c_hi, c_lo)
        target = torch.where(torch.isfinite(target), target, torch.zeros_like(target))
        rows.append(c_jac)
        resid.append(c - target)
        active.append(act)
    if x is not None:
        b, n = x.shape
        rows.append(torch.eye(n, dtype=x.dtype, device=x.device).expand(b, n, n))
        resid.append(x - torch.where(at_hi, x_hi, x_lo))
        active.append(at_lo | at_hi)
    if not rows:
        return implicit_step(grad_lagrangian, hessian, used=used)
    return implicit_step(grad_lagrangian, hessian, torch.cat(rows, 1), torch.cat(resid, 1),
                         torch.cat(active, 1), used=used)


def implicit_step_sparse(
    grad_lagrangian: torch.Tensor,
    rows: np.ndarray,
    cols: np.ndarray,
    values: torch.Tensor,
    used: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`implicit_step` without constraints, for a sparse Hessian: ``values`` (B, nnz)
    on the lower-triangular pattern ``(rows, cols)`` (rows >= cols) of hess_xx L.

    Each element's H is factored once by a sparse LU with diagonal pivots in a symmetric
    fill-reducing order (SuperLU, ``SymmetricMode``), so its pivots are those of an LDL'
    factorisation: all positive means H is positive definite, and each pivot lies between
    H's smallest and largest eigenvalue, so a pivot ratio at most ``SINGULAR_EPS`` eps
    proves H numerically singular. Elements that are not positive definite, or proved
    singular, get :func:`implicit_step` on their dense H (its degenerate-K rule and
    warning); the others ``-H^-1 grad_lagrangian``, differentiable in ``grad_lagrangian``
    (first order: H is constant)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    b, n = grad_lagrangian.shape
    vals = values.detach().double().cpu().numpy()
    off = rows != cols
    full_r = np.concatenate([rows, cols[off]])
    full_c = np.concatenate([cols, rows[off]])
    keep = torch.ones(b, dtype=torch.bool) if used is None else used.cpu().clone()
    factors: list = [None] * b
    dense = torch.zeros(b, dtype=torch.bool)
    eps = np.finfo(np.float64).eps
    for i in range(b):
        if not bool(keep[i]):
            continue
        v = vals[i]
        h = sp.csc_matrix((np.concatenate([v, v[off]]), (full_r, full_c)), shape=(n, n))
        try:
            lu = splu(h, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options={"SymmetricMode": True})
            piv = lu.U.diagonal()
            ok = (np.isfinite(piv).all() and (piv > 0).all()
                  and piv.min() > SINGULAR_EPS * eps * piv.max())
        except RuntimeError:  # exactly singular
            ok = False
        if ok:
            factors[i] = lu
        else:
            dense[i] = True
    step = -_SparseSolve.apply(grad_lagrangian, factors)
    if bool(dense.any()):
        idx = dense.nonzero().flatten()
        h = values.detach().new_zeros(idx.numel(), n, n)
        r = torch.as_tensor(rows, device=values.device)
        c = torch.as_tensor(cols, device=values.device)
        h[:, r, c] = values.detach()[idx].to(h.dtype)
        h[:, c, r] = values.detach()[idx].to(h.dtype)
        step = step.clone()
        step[idx] = implicit_step(grad_lagrangian[idx], h, item_ids=idx.tolist())
    return step


class _SparseSolve(torch.autograd.Function):
    """u = H^-1 r per element from given factors (H symmetric and constant); elements
    without a factor get u = 0."""

    @staticmethod
    def forward(ctx, rhs, factors):  # noqa: D102
        ctx.factors = factors
        return _apply_factors(rhs, factors)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return _apply_factors(grad, ctx.factors), None


def _apply_factors(rhs: torch.Tensor, factors: list) -> torch.Tensor:
    r = rhs.detach().double().cpu().numpy()
    out = np.zeros_like(r)
    for i, lu in enumerate(factors):
        if lu is not None:
            out[i] = lu.solve(r[i])
    return torch.as_tensor(out, dtype=rhs.dtype, device=rhs.device)
