"""The PSD cone (SCS key "s") in svec coordinates: lower triangle, column-major,
off-diagonals x sqrt(2), so that ``svec(A) . svec(B) = trace(A B)``; order k has
``k(k+1)/2`` rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from pounce_kkt.cones.base import BlockCone, ConeCounts
from pounce_kkt.cones.centring import log_nt_ratio, tau, tau_rel


def svec_dim(order: int) -> int:
    """Rows of the svec of an order x order symmetric matrix (lower triangle)."""
    return order * (order + 1) // 2


@lru_cache(maxsize=32)
def _svec_maps(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and scale of every svec entry (lower triangle, column-major, x sqrt 2)."""
    rows, cols, scale = [], [], []
    for j in range(k):
        for i in range(j, k):
            rows.append(i)
            cols.append(j)
            scale.append(1.0 if i == j else math.sqrt(2.0))
    return np.array(rows), np.array(cols), np.array(scale)


def svec_to_mat(v: torch.Tensor, k: int) -> torch.Tensor:
    """(..., k(k+1)/2) svec -> (..., k, k) symmetric matrix."""
    rows, cols, scale = _svec_maps(k)
    off = rows != cols
    r_all = torch.as_tensor(np.concatenate([rows, cols[off]]))
    c_all = torch.as_tensor(np.concatenate([cols, rows[off]]))
    sc = torch.as_tensor(scale, dtype=v.dtype, device=v.device)
    vals = v / sc
    vals = torch.cat([vals, vals[..., torch.as_tensor(off)]], dim=-1)
    M = v.new_zeros(v.shape[:-1] + (k, k))
    M[..., r_all, c_all] = vals
    return M


def mat_to_svec(M: torch.Tensor) -> torch.Tensor:
    """(..., k, k) symmetric -> (..., k(k+1)/2) svec."""
    k = M.shape[-1]
    rows, cols, scale = _svec_maps(k)
    sc = torch.as_tensor(scale, dtype=M.dtype, device=M.device)
    return M[..., torch.as_tensor(rows), torch.as_tensor(cols)] * sc


def psd_nt_operator(Q: torch.Tensor, rho_sqrt: torch.Tensor) -> torch.Tensor:
    """svec matrix of dY -> W dY W for W = Q diag(rho_sqrt) Q' (batched: (B, k, k), (B, k)).

    Entry (a, b) of the result is svec_a(W E_b W) where E_b = smat(e_b).
    """
    k = Q.shape[-1]
    D = svec_dim(k)
    eye = torch.eye(D, dtype=Q.dtype, device=Q.device)
    E = svec_to_mat(eye, k)  # (D, k, k): smat of each unit svec
    W = Q @ (rho_sqrt[..., :, None] * Q.transpose(-1, -2))
    WEW = W[..., None, :, :] @ E @ W[..., None, :, :]  # (B, D, k, k)
    return mat_to_svec(WEW).transpose(-1, -2)


def psd_scaling(s: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """H for a PSD block of order k: (B, D) x (B, D) -> (B, D, D), D = k(k+1)/2.

    The svec operator of dY -> W dY W with the NT W of the recentred pair
    (:mod:`pounce_kkt.cones.centring`): in the eigenbasis Q of w = S - Y (eigenvalues
    lam_i), W = Q diag(sqrt(rho_i)) Q'.
    """
    S, Y = svec_to_mat(s, k), svec_to_mat(y, k)
    Wm = S - Y
    lam, Q = torch.linalg.eigh(Wm)
    t = tau((s * y).sum(-1), (lam * lam).sum(-1), float(k),
            tau_rel(lam[..., 0].detach(), lam[..., -1].detach()))
    rho_sqrt = torch.exp(0.5 * log_nt_ratio(lam, t[..., None]))
    return psd_nt_operator(Q, rho_sqrt)


class PsdCone(BlockCone):
    """K = K* = PSD matrices of order k, in svec coordinates (d = k(k+1)/2); one block per
    entry of "s" (the order k).

    With W = smat(w) = Q diag(lam) Q': Pi(w) = svec(Q diag(max(lam, 0)) Q'), and
    D[E] = svec(Q (G o (Q' smat(E) Q)) Q') with G_ij = (lam_i+ - lam_j+) / (lam_i - lam_j)
    (= [lam_i > 0] where lam_i = lam_j), the Loewner divided differences of max(., 0).
    H from :func:`psd_scaling`.
    """

    key = "s"

    def __init__(self, k: int):
        self.k = int(k)

    @staticmethod
    def params(cones: ConeCounts) -> Sequence[float]:
        return [float(k) for k in cones.s]

    @staticmethod
    def dim(param: float) -> int:
        return svec_dim(int(param))

    @classmethod
    def for_group(cls, params: Sequence[float], repeat: int) -> PsdCone:
        return cls(int(params[0]))

    def _eig(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.linalg.eigh(svec_to_mat(w, self.k))

    def project(self, w: torch.Tensor) -> torch.Tensor:
        lam, Q = self._eig(w)
        return mat_to_svec(Q @ (torch.clamp(lam, min=0.0)[..., :, None] * Q.transpose(-1, -2)))

    def derivative(self, w: torch.Tensor) -> torch.Tensor:
        k, D = self.k, svec_dim(self.k)
        lam, Q = self._eig(w)
        lp = torch.clamp(lam, min=0.0)
        diff = lam[..., :, None] - lam[..., None, :]
        same = diff.abs() <= 1e-14 * (1.0 + lam.abs().amax(-1))[..., None, None]
        pos = (lam > 0).to(w.dtype)
        G = torch.where(same, 0.5 * (pos[..., :, None] + pos[..., None, :]),
                        (lp[..., :, None] - lp[..., None, :]) / torch.where(same, 1.0, diff))
        E = svec_to_mat(torch.eye(D, dtype=w.dtype, device=w.device), k)  # (D, k, k)
        Qe = Q[..., None, :, :]
        inner = Qe.transpose(-1, -2) @ E @ Qe  # (N, D, k, k)
        out = Qe @ (G[..., None, :, :] * inner) @ Qe.transpose(-1, -2)
        return mat_to_svec(out).transpose(-1, -2)

    def scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return psd_scaling(s, y, self.k)
