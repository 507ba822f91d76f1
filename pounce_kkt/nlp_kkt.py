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
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "active_constraints", "implicit_step", "implicit_step_with_limits", "kkt_matrix",
    "project_onto_bounds",
]

# Magnitude from which a variable or constraint limit counts as absent (Ipopt's 1e19
# default, with margin).
INF = 1e20


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
) -> torch.Tensor:
    """Return ``delta = -[K^-1 r]_x`` (B, n) with K detached (see the module docstring).

    ``grad_lagrangian`` (B, n) is grad_x L at the solution and ``residual`` (B, p) the
    constraint rows c_A, both still attached to the parameters' autograd graph;
    ``hessian`` (B, n, n) and ``jac`` (B, p, n) are the values at the solution (detached
    here). Elements whose K is singular use the least-squares (pseudo-inverse) solution.
    """
    b, n = grad_lagrangian.shape
    h = hessian.detach()
    if jac is None or jac.shape[1] == 0:
        k = h
        rhs = grad_lagrangian
    else:
        act = active if active is not None else torch.ones(jac.shape[:2], dtype=torch.bool)
        act = act.to(jac.device)
        k = kkt_matrix(h, jac.detach(), act)
        rhs = torch.cat([grad_lagrangian, torch.where(act, residual, 0.0)], dim=1)
    sol = _solve(k, rhs)
    return -sol[:, :n]


def _solve(k: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve K u = rhs per element (K constant); pseudo-inverse where K is singular."""
    lu, piv, info = torch.linalg.lu_factor_ex(k)
    ok = info == 0
    if bool(ok.all()):
        return torch.linalg.lu_solve(lu, piv, rhs.unsqueeze(-1)).squeeze(-1)
    pinv = torch.linalg.pinv(k)
    return (pinv @ rhs.unsqueeze(-1)).squeeze(-1)


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
) -> torch.Tensor:
    """:func:`implicit_step` for ``min f`` s.t. ``c_lo <= c(x) <= c_hi``,
    ``x_lo <= x <= x_hi``: the active rows are the constraints picked by
    :func:`active_constraints` (values ``c`` (B, p), Jacobian ``c_jac`` (B, p, n),
    multipliers ``lam``) held at the limit they touch, and the bounds marked ``at_lo`` /
    ``at_hi`` (B, n), held at ``x_lo`` / ``x_hi``. ``c``, the limits and ``x`` stay
    attached to the parameters' graph; infinite limits of inactive rows are unused."""
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
        return implicit_step(grad_lagrangian, hessian)
    return implicit_step(grad_lagrangian, hessian, torch.cat(rows, 1), torch.cat(resid, 1),
                         torch.cat(active, 1))
