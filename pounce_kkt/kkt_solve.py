"""The one dense solve of a batch of KKT systems: LU of the regularised matrix, refined
against the unregularised one, in differentiable Torch ops.

Used by the conic dense adjoint and forward mode (:mod:`pounce_kkt.dense_kkt`) and by the
NLP implicit step (:mod:`pounce_kkt.nlp_kkt`). The systems are quasi-definite-shaped,
``K = [[K11, K12], [K21, K22]]`` with the first ``n`` rows primal: the regularisation adds
``+delta`` on the primal diagonal and ``-delta`` on the rest, as the native sparse adjoint
does (rust/, its one definition of REG_REL, REFINE_STEPS and REFINE_TOL, read here).
"""

from __future__ import annotations

import torch

from pounce_kkt import _native

# delta = REG_REL * max(1, max|P_eff|, max|A|) per item in the conic adjoint; at most
# REFINE_STEPS refinement steps down to REFINE_TOL of the right-hand side.
REG_REL: float = _native.KKT_REG_REL
REFINE_STEPS: int = _native.KKT_REFINE_STEPS
REFINE_TOL: float = _native.KKT_REFINE_TOL


def solve_kkt(K: torch.Tensor, rhs: torch.Tensor, n: int, delta: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Solve the (B, N, N) systems ``K sol = rhs`` (B, N) per item.

    LU of ``K + diag(+delta I_n, -delta I_(N-n))`` (delta (B,), held constant; None: no
    regularisation, for a caller that has already set singular items aside), then iterative
    refinement against the unregularised K, per item, until the max-abs residual is below
    REFINE_TOL max|rhs| or stops halving. On a singular, consistent K (a non-unique primal
    or dual solution) this converges to the solution with no component in K's null space,
    which is also what the native path returns (for a conic K the null space is
    (null P ∩ null A) x (null A' ∩ null H), invariant under the sign flip of the
    regularisation). Every step is a Torch op, so the result stays differentiable in K and
    rhs (twice, for the dense double backward).
    """
    N = K.shape[-1]
    if delta is None:
        Kreg = K
    else:
        sign = torch.ones(N, dtype=K.dtype, device=K.device)
        sign[n:] = -1.0
        Kreg = K + torch.diag_embed(delta.to(K)[:, None] * sign)
    lu, piv, _ = torch.linalg.lu_factor_ex(Kreg)

    def lu_apply(r: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(lu, piv, r[:, :, None])[:, :, 0]

    sol = lu_apply(rhs)
    with torch.no_grad():
        target = REFINE_TOL * rhs.abs().amax(1).clamp_min(torch.finfo(K.dtype).tiny)
    active = torch.ones(K.shape[0], dtype=torch.bool, device=K.device)
    last = torch.full_like(target, float("inf"))
    for _ in range(REFINE_STEPS):
        res = rhs - (K @ sol[:, :, None])[:, :, 0]
        with torch.no_grad():
            rn = res.abs().amax(1)
            active = active & (rn > target) & (rn < 0.5 * last)
            last = rn
        if not bool(active.any()):
            break
        sol = torch.where(active[:, None], sol + lu_apply(res), sol)
    return sol


__all__ = ["REFINE_STEPS", "REFINE_TOL", "REG_REL", "solve_kkt"]
