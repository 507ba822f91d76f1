"""The scaling H of the linearised complementarity ``ds = -H dy`` for the product cone.

At a converged interior-point iterate ``(s, y)`` the KKT adjoint (docs/design.md) needs a
symmetric positive semidefinite H with ``ds = -H dy``. Each cone's H lives in its class
(:mod:`pounce_kkt.cones`: the recentred Nesterov-Todd scaling for nonneg, SOC and PSD, the
barrier-based one for exp and power); this module lays them out for the whole cone and
equilibrates them. Everything is batched over a leading dimension B and written in
differentiable Torch ops, so the dense backward can be differentiated again.

The compact layout, shared with the native ``ConicProblem.adjoint``: ``h_diag (B, z + l)`` (0 on
zero-cone rows) and ``h_blocks (B, sum d_k^2)``, each SOC, PSD, exp and power block dense
row-major, in cone order.
"""

from __future__ import annotations

import torch

from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.cones.nonneg import NonnegCone
from pounce_kkt.cones.registry import block_groups, blocks
from pounce_kkt.cones.zero import ZeroCone


def cone_scaling(s: torch.Tensor, y: torch.Tensor, cones: ConeDims
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """H for the whole product cone at (s, y), both (B, m) in SCS row order, in the compact
    layout (module docstring). Cones of one kind and size are computed together."""
    z, nd = cones.z, cones.n_diag
    h_diag = torch.cat([ZeroCone().scaling(s[:, :z], y[:, :z]),
                        NonnegCone().scaling(s[:, z:nd], y[:, z:nd])], dim=1)
    return h_diag, block_scaling(s, y, cones)


def block_scaling(s: torch.Tensor, y: torch.Tensor, cones: ConeDims) -> torch.Tensor:
    """h_blocks of :func:`cone_scaling` alone (the SOC, PSD, exp and power blocks)."""
    B = s.shape[0]
    groups = block_groups(cones)
    size = sum(len(g.members) * g.dim * g.dim for g in groups)
    if size == 0:
        return s.new_zeros(B, 0)
    vals, where = [], []
    for group in groups:
        d, G = group.dim, len(group.members)
        cols = group.cols
        sg = s[:, cols].reshape(B * G, d)
        yg = y[:, cols].reshape(B * G, d)
        Hg = group.cone(B).scaling(sg, yg)
        vals.append(Hg.reshape(B, G * d * d))
        where.append(group.h_index)
    if len(groups) == 1:  # one group: its blocks are h_blocks in order
        return vals[0]
    idx = torch.cat(where).to(s.device)
    return s.new_zeros(B, size).index_copy(1, idx, torch.cat(vals, dim=1))


def dense_h(h_diag: torch.Tensor, h_blocks: torch.Tensor, scatter: torch.Tensor, m: int
            ) -> torch.Tensor:
    """(B, m, m) H from its compact layout; `scatter` is ConicStructure.h_scatter."""
    B = h_diag.shape[0]
    flat = h_diag.new_zeros(B, m * m).index_copy(
        1, scatter.to(h_diag.device), torch.cat([h_diag, h_blocks], dim=1))
    return flat.reshape(B, m, m)


def block_offsets(cones: ConeDims) -> dict[int, torch.Tensor]:
    """For each block size d: (count, d*d) positions of those blocks' entries in h_blocks."""
    groups: dict[int, list[int]] = {}
    off = 0
    for blk in blocks(cones):
        groups.setdefault(blk.dim, []).append(off)
        off += blk.dim * blk.dim
    return {d: torch.tensor(offs)[:, None] + torch.arange(d * d)[None, :]
            for d, offs in groups.items()}


def equilibration(h_diag: torch.Tensor, h_blocks: torch.Tensor, cones: ConeDims
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(I + H)^(-1/2), block by block, in the compact (h_diag, h_blocks) layout.

    Used (without gradient) to scale K before a dense solve: the scaled -H block has
    eigenvalues rho / (1 + rho) in [0, 1), so no direction's digits drown in another's.
    """
    d_diag = torch.rsqrt(1.0 + torch.clamp(h_diag, min=0.0))
    d_blocks = torch.zeros_like(h_blocks)
    B = h_blocks.shape[0]
    for d, pos in block_offsets(cones).items():
        pos = pos.to(h_blocks.device)
        Hb = h_blocks[:, pos].reshape(B, pos.shape[0], d, d)
        lam, V = torch.linalg.eigh(0.5 * (Hb + Hb.transpose(-1, -2)))
        Db = (V * torch.rsqrt(1.0 + torch.clamp(lam, min=0.0))[..., None, :]) @ V.transpose(-1, -2)
        d_blocks[:, pos.reshape(-1)] = Db.reshape(B, -1)
    return d_diag, d_blocks
