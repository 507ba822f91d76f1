"""Projection onto the product cone K and the derivative of that projection.

For a closed convex cone K with dual K*, Moreau's decomposition splits any w as
``w = Pi_K(w) - Pi_K*(-w)`` with the two parts orthogonal. At a primal-dual solution of the
conic program (docs/design.md) ``w = s - y`` gives back ``s = Pi_K(w)`` and
``y = Pi_K(w) - w``, so ``(s, y)`` is complementary and in ``K x K*`` by construction; this is
what solution refinement (:mod:`pounce_kkt.refine`) iterates on and what the active-set
backward differentiates (``ds = D dw``, ``dy = (D - I) dw``, ``D = dPi_K/dw``).

Vectors are (B, m) float64 in the SCS row order; each cone's own projection and derivative
live in its class (:mod:`pounce_kkt.cones.registry`).
"""

from __future__ import annotations

import torch

from pounce_kkt.cones.base import ConeCounts
from pounce_kkt.cones.nonneg import NonnegCone
from pounce_kkt.cones.registry import block_groups


def project(w: torch.Tensor, cones: ConeCounts, derivative: bool = False
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """Pi_K(w) for the product cone, w (B, m) in SCS row order.

    With ``derivative``, also D as a list of (rows (G, d) index tensor, D (B, G, d, d))
    per group of equal blocks; the zero and nonneg rows' D is the diagonal
    ``[w > 0]`` on nonneg rows and 0 on zero rows (not listed). No graph is recorded.
    """
    B = w.shape[0]
    with torch.no_grad():
        p = torch.zeros_like(w)  # the zero cone's projection on rows [0, z)
        z, nd = cones.z, cones.n_diag
        p[:, z:nd] = NonnegCone().project(w[:, z:nd])
        parts = [] if derivative else None
        for group in block_groups(cones):
            rows, d, G, cols = group.rows, group.dim, len(group.members), group.cols
            wg = w[:, cols].reshape(B * G, d)
            cone = group.cone(B)
            if derivative:
                pg, Dg = cone.project_and_derivative(wg)
                parts.append((rows, Dg.reshape(B, G, d, d)))
            else:
                pg = cone.project(wg)
            p[:, cols] = pg.reshape(p[:, cols].shape)
    return p, parts


def apply_derivative(dw: torch.Tensor, w: torch.Tensor, cones: ConeCounts,
                     parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """D dw for the product cone (B, m), D from :func:`project` at w (differentiable in dw)."""
    B = dw.shape[0]
    z, nd = cones.z, cones.n_diag
    pieces = torch.cat([dw.new_zeros(B, z), (w[:, z:nd] > 0).to(dw.dtype) * dw[:, z:nd],
                        dw[:, nd:] * 0.0], dim=1)
    for rows, D in parts:
        G, d = rows.shape
        v = (D @ dw[:, rows].reshape(B, G, d, 1)).reshape(B, G * d)
        pieces = pieces.index_put((torch.arange(B)[:, None], rows.reshape(1, -1).expand(B, -1)),
                                  v)
    return pieces
