"""Minimum-norm solutions of singular KKT adjoint systems (non-unique solutions).

At a non-unique solution (an LP optimal along an edge, a QP whose P is singular on the
optimal face, redundant active constraints) the adjoint system ``K [u; v] = rhs`` of
docs/design.md is singular. Where ``rhs`` has a component outside range(K) the regularised
solve's refinement (pounce_kkt/kkt_solve.py) cannot remove it: that component stays in the
residual and the solution grows like 1/delta (about 1e10 |g|), so the gradients come back
as +-1e10. The derivative of the solution map does not exist there; the choice made instead
is documented and bounded:

    [u; v] = pinv(K) rhs

the minimum-norm least-squares solution of the singular system (singular values below
PINV_RTOL of the largest are taken as zero), computed with Torch ops on the same
(equilibrated) K, so it stays differentiable. Items whose regularised solve converged are
left untouched (a consistent singular system already gives the minimum-norm solution).
"""

from __future__ import annotations

import numpy as np
import torch

# The regularised solve failed when its refined residual stays above this fraction of
# max|rhs| (a converged solve reaches ~1e-14; an inconsistent singular one keeps the
# part of rhs outside range(K), O(|rhs|)).
RESIDUAL_RTOL: float = 1e-8
# Singular values of K below this fraction of the largest are treated as zero.
PINV_RTOL: float = 1e-9
# A result larger than GROWTH_LIMIT max|rhs| is rechecked on the dense K (the sparse
# native adjoint does not report its residual).
GROWTH_LIMIT: float = 1e6


def failed_solves(K: torch.Tensor, rhs: torch.Tensor, sol: torch.Tensor) -> torch.Tensor:
    """(B,) bool: items whose `sol` leaves a residual above RESIDUAL_RTOL max|rhs|."""
    with torch.no_grad():
        res = (rhs - (K @ sol[:, :, None])[:, :, 0]).abs().amax(1)
        scale = rhs.abs().amax(1).clamp_min(torch.finfo(K.dtype).tiny)
        return res > RESIDUAL_RTOL * scale


def min_norm_where_singular(K: torch.Tensor, rhs: torch.Tensor, sol: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """`sol`, with pinv(K) rhs for the items whose regularised solve failed; and their mask.

    K (B, N, N) symmetric, rhs and sol (B, N).
    """
    bad = failed_solves(K, rhs, sol)
    if not bool(bad.any()):
        return sol, bad
    idx = bad.nonzero().flatten()
    out = sol.clone()
    out[idx] = min_norm(K[idx], rhs[idx])
    return out, bad


def min_norm(K: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """pinv(K) rhs per item: the minimum-norm least-squares solution of K sol = rhs, with
    singular values below PINV_RTOL of the largest taken as zero.

    K (B, N, N) symmetric (its symmetric part is used), rhs (B, N); differentiable in both.
    """
    Ks = 0.5 * (K + K.transpose(1, 2))
    return (torch.linalg.pinv(Ks, rtol=PINV_RTOL, hermitian=True) @ rhs[:, :, None])[:, :, 0]


def exploded(sol: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(B,) bool: items whose solution is above GROWTH_LIMIT max|rhs| (worth a recheck).

    sol (B, k) and rhs (B, j) tensors, or both numpy arrays (then a numpy mask: the sparse
    backward's arrays, checked without Torch's per-op dispatch)."""
    if isinstance(sol, np.ndarray):
        scale = np.maximum(np.abs(rhs).max(1), np.finfo(sol.dtype).tiny)
        return np.abs(sol).max(1) > GROWTH_LIMIT * scale
    scale = rhs.abs().amax(1).clamp_min(torch.finfo(sol.dtype).tiny)
    return sol.abs().amax(1) > GROWTH_LIMIT * scale


__all__ = ["GROWTH_LIMIT", "PINV_RTOL", "RESIDUAL_RTOL", "exploded", "failed_solves",
           "min_norm", "min_norm_where_singular"]
