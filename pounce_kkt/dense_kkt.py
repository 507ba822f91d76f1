"""Dense KKT adjoint in differentiable Torch ops (small systems, double backward).

Same formula as the native sparse adjoint (docs/design.md): with
``K = [[P_eff, A'], [A, -H]]`` and H the active-set scaling of
:mod:`pounce_kkt.active_set`, solve ``K [u; v] = [gx; gy - H gs]`` per item, then

    grad_q = -u,   grad_b = v,
    grad_A[i, j] = -(y_i u_j + v_i x_j)          on A's pattern,
    grad_P[i, j] = -(u_i x_j + u_j x_i) / 2      on P's full pattern.

Every step is a Torch op on (B, ...) tensors, so calling this with tensors that carry a graph
(inside a backward run with ``create_graph=True``) makes the gradient differentiable again.
"""

from __future__ import annotations

import torch

from pounce_kkt.active_set import limit_scaling
from pounce_kkt.cone_scaling import dense_h, equilibration
from pounce_kkt.kkt_solve import REG_REL, solve_kkt
from pounce_kkt.singular_kkt import min_norm_where_singular
from pounce_kkt.structure import ConicStructure


def dense_matrix(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 shape: tuple[int, int]) -> torch.Tensor:
    """(B, nnz) CSC values on (rows, cols) -> (B, r, c) dense (duplicates summed)."""
    B, size = values.shape[0], shape[0] * shape[1]
    # One flat index over the batch: index_add along dim 0 of a contiguous vector is the
    # fast path (along dim 1 of (B, size) it ran ~10x slower for B = 64, nnz = 2500).
    flat = (rows * shape[1] + cols).to(values.device)
    flat = (torch.arange(B, device=values.device)[:, None] * size + flat[None, :]).reshape(-1)
    out = values.new_zeros(B * size).index_add(0, flat, values.reshape(-1))
    return out.reshape(B, *shape)


def _assemble(structure: ConicStructure, P: torch.Tensor | None, Ad: torch.Tensor,
              H22: torch.Tensor) -> torch.Tensor:
    """[[P_eff, Ad'], [Ad, -H22]]; H22 is (B, m, m), or (B, m) for a diagonal block."""
    n, m = structure.n, structure.m
    K = Ad.new_zeros(Ad.shape[0], n + m, n + m)
    if P is not None:
        Pd = dense_matrix(P, structure.p_rows, structure.p_cols, (n, n))
        K[:, :n, :n] = 0.5 * (Pd + Pd.transpose(1, 2))
    K[:, n:, :n] = Ad
    K[:, :n, n:] = Ad.transpose(1, 2)
    if H22.dim() == 2:
        idx = torch.arange(n, n + m, device=Ad.device)
        K[:, idx, idx] = -H22
    else:
        K[:, n:, n:] = -H22
    return K


def dense_kkt_vjp(structure: ConicStructure, P: torch.Tensor | None, A: torch.Tensor,
                  x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, ok: torch.Tensor,
                  gx: torch.Tensor | None, gy: torch.Tensor | None, gs: torch.Tensor | None,
                  singular: list[int] | None = None,
                  ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dP, dq, dA, db) of <gx, x> + <gy, y> + <gs, s> w.r.t. the value arrays.

    All tensors are batch-first float64: P (B, nnzP) or None, A (B, nnzA), x (B, n),
    y and s (B, m), ok (B,) bool; items with ok False get zero gradients (their x, y, s
    may be NaN: they are replaced before any arithmetic so no NaN reaches a graph).
    Items whose K is singular (a non-unique solution) get the minimum-norm solution
    (pounce_kkt/singular_kkt.py); their indices are appended to `singular` when given.
    """
    n, m = structure.n, structure.m
    B = x.shape[0]
    okc = ok.to(x.device)[:, None]
    x = torch.where(okc, x, 0.0)
    y = torch.where(okc, y, 0.0)
    s = torch.where(okc, s, 0.0)
    gx = x.new_zeros(B, n) if gx is None else torch.where(okc, gx, 0.0)
    gy = y.new_zeros(B, m) if gy is None else torch.where(okc, gy, 0.0)
    gs = s.new_zeros(B, m) if gs is None else torch.where(okc, gs, 0.0)

    h_diag, h_blocks = limit_scaling(s, y, structure.cones)
    # Solve D K D [u; v'] = D rhs with D = blockdiag(I, Dm), Dm = (I + H)^(-1/2), v = Dm v'.
    # Any fixed invertible D gives the same solution, so D stays out of the graph; it makes
    # the spread of H (~tau to ~1/tau next to finite curvature) harmless to LU.
    with torch.no_grad():
        d_diag, d_blocks = equilibration(h_diag, h_blocks, structure.cones)
    Ad = dense_matrix(A, structure.a_rows, structure.a_cols, (m, n))
    if h_blocks.shape[1] == 0:  # every cone diagonal (zero, nonneg): no dense m x m at all
        r2 = gy - h_diag * gs
        K = _assemble(structure, P, d_diag[:, :, None] * Ad, h_diag * d_diag * d_diag)
        rhs2 = d_diag * r2
    else:
        H = dense_h(h_diag, h_blocks, structure.h_scatter, m)
        Dm = dense_h(d_diag, d_blocks, structure.h_scatter, m)
        r2 = gy - (H @ gs[:, :, None])[:, :, 0]
        K = _assemble(structure, P, Dm @ Ad, Dm @ H @ Dm)
        rhs2 = (Dm @ r2[:, :, None])[:, :, 0]
    if not bool(ok.all()):
        eye = torch.eye(n + m, dtype=K.dtype, device=K.device)
        K = torch.where(okc[:, :, None], K, eye)
    with torch.no_grad():
        delta = REG_REL * torch.cat([K[:, :n, :n].abs().flatten(1), A.abs(),
                                     A.new_ones(B, 1)], dim=1).amax(1)
    rhs = torch.cat([gx, rhs2], dim=1)
    sol, bad = min_norm_where_singular(K, rhs, solve_kkt(K, rhs, n, delta))
    if singular is not None:  # singular K (a non-unique solution): pounce_kkt/singular_kkt.py
        singular.extend((bad & ok.to(bad.device)).nonzero().flatten().tolist())
    u, v2 = sol[:, :n], sol[:, n:]
    v = d_diag * v2 if h_blocks.shape[1] == 0 else (Dm @ v2[:, :, None])[:, :, 0]

    dq = -u
    db = v
    ar, ac = structure.a_rows.to(x.device), structure.a_cols.to(x.device)
    dA = -(y[:, ar] * u[:, ac] + v[:, ar] * x[:, ac])
    dP = None
    if P is not None:
        pr, pc = structure.p_rows.to(x.device), structure.p_cols.to(x.device)
        dP = -0.5 * (u[:, pr] * x[:, pc] + u[:, pc] * x[:, pr])
        dP = torch.where(okc, dP, 0.0)
    return dP, torch.where(okc, dq, 0.0), torch.where(okc, dA, 0.0), torch.where(okc, db, 0.0)
