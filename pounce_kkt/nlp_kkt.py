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

import torch

__all__ = ["implicit_step", "kkt_matrix"]


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
