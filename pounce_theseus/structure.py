"""Sparsity of the batch NLP, read from the objective's connectivity.

Per batch element the Hessian of the Lagrangian couples two variables when some cost
function or constraint depends on both; within such a pair of variables the block is
stored dense. The batch NLP is block diagonal over the elements, so one element's pattern
is repeated with offsets.

Hessian values come from Hessian-vector products with seed vectors built by a
distance-2 colouring of the variable graph (two variables share a colour only when no
variable is adjacent to both): one seed per (colour, tangent coordinate), and entry (i, j)
is read off the product of the seed that holds column j.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["GaussNewtonPattern", "HessianPattern", "JacobianPattern"]


class HessianPattern:
    """Lower-triangular Hessian pattern of one element plus its colouring seeds."""

    def __init__(self, offsets: dict[str, slice], groups: Iterable[Sequence[str]]):
        names = list(offsets)
        index = {name: k for k, name in enumerate(names)}
        adj = [set([k]) for k in range(len(names))]
        for group in groups:
            ids = [index[g] for g in group]
            for a in ids:
                adj[a].update(ids)
        colour = _distance2_colouring(adj)
        self.n = sum(s.stop - s.start for s in offsets.values())
        n_colours = max(colour, default=-1) + 1
        max_dof = max((s.stop - s.start for s in offsets.values()), default=0)
        # seed id for (colour, local coordinate)
        col_seed = np.zeros(self.n, dtype=np.int64)
        seeds = np.zeros((n_colours * max_dof, self.n))
        for k, name in enumerate(names):
            s = offsets[name]
            for local, j in enumerate(range(s.start, s.stop)):
                sid = colour[k] * max_dof + local
                col_seed[j] = sid
                seeds[sid, j] = 1.0
        used = np.flatnonzero(seeds.any(axis=1))
        remap = -np.ones(seeds.shape[0], dtype=np.int64)
        remap[used] = np.arange(used.size)
        self.seeds = seeds[used]
        rows, cols = [], []
        for a in range(len(names)):
            for b in adj[a]:
                sa, sb = offsets[names[a]], offsets[names[b]]
                for i in range(sa.start, sa.stop):
                    for j in range(sb.start, sb.stop):
                        if i >= j:
                            rows.append(i)
                            cols.append(j)
        order = np.lexsort((np.asarray(rows), np.asarray(cols)))
        self.rows = np.asarray(rows, dtype=np.int64)[order]
        self.cols = np.asarray(cols, dtype=np.int64)[order]
        self.column_seed = remap[col_seed]
        self.value_seed = self.column_seed[self.cols]

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    def seed_tensor(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        """Seeds as a (S, B, n) tensor for batched Hessian-vector products."""
        s = torch.as_tensor(self.seeds, dtype=like.dtype, device=like.device)
        return s.unsqueeze(1).expand(s.shape[0], batch_size, self.n)

    def gather(self, products: torch.Tensor) -> torch.Tensor:
        """Pattern values (B, nnz) from the seeds' products (S, B, n)."""
        seed = torch.as_tensor(self.value_seed, device=products.device)
        rows = torch.as_tensor(self.rows, device=products.device)
        return products[seed, :, rows].transpose(0, 1)

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """Symmetric dense matrices (B, n, n) from pattern values (B, nnz)."""
        b = values.shape[0]
        h = values.new_zeros(b, self.n, self.n)
        r = torch.as_tensor(self.rows, device=values.device)
        c = torch.as_tensor(self.cols, device=values.device)
        h[:, r, c] = values
        h[:, c, r] = values
        return h

    def batch_indices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global (rows, cols) of k elements stacked block-diagonally."""
        off = (np.arange(k, dtype=np.int64) * self.n)[:, None]
        return (self.rows[None] + off).ravel(), (self.cols[None] + off).ravel()


class GaussNewtonPattern:
    """``J'J`` on the Hessian pattern from the seeded products ``J v_s`` of the weighted
    errors' Jacobian ``J``.

    Row ``r`` of ``J`` belongs to one cost function and is nonzero only in the tangent
    coordinates of that cost function's variables, which the distance-2 colouring puts
    in distinct seeds: ``J[r, j] = (J v_{seed(j)})[r]``. Then ``(J'J)[i, j]`` is a sum
    over the rows of the cost functions that hold both ``i`` and ``j``, done as one
    gather, one product and one scatter-add.
    """

    def __init__(self, hess: HessianPattern, row_blocks: Sequence[tuple[int, Sequence[slice]]]):
        # row_blocks: (number of rows, variable slices) per cost function, in error order
        pairs = zip(hess.rows.tolist(), hess.cols.tolist(), strict=True)
        entry = {ij: p for p, ij in enumerate(pairs)}
        q_seed, q_row, pair_p, pair_a, pair_b = [], [], [], [], []
        r0 = 0
        for k, slices in row_blocks:
            cols = np.unique(np.concatenate([np.arange(s.start, s.stop) for s in slices]))
            for r in range(r0, r0 + k):
                base = len(q_row)
                q_seed.extend(hess.column_seed[cols].tolist())
                q_row.extend([r] * cols.size)
                for a in range(cols.size):
                    for b in range(a + 1):
                        pair_p.append(entry[(int(cols[a]), int(cols[b]))])
                        pair_a.append(base + a)
                        pair_b.append(base + b)
            r0 += k
        self.m = r0
        self.nnz = hess.nnz
        self.q_seed = torch.as_tensor(q_seed, dtype=torch.long)
        self.q_row = torch.as_tensor(q_row, dtype=torch.long)
        self.pair_p = torch.as_tensor(pair_p, dtype=torch.long)
        self.pair_a = torch.as_tensor(pair_a, dtype=torch.long)
        self.pair_b = torch.as_tensor(pair_b, dtype=torch.long)

    def values(self, jv: torch.Tensor) -> torch.Tensor:
        """Pattern values (B, nnz) of J'J from ``jv`` (S, B, m) = J v_s."""
        jq = jv[self.q_seed, :, self.q_row].transpose(0, 1)  # (B, Q): J's structural entries
        prod = jq[:, self.pair_a] * jq[:, self.pair_b]
        out = jq.new_zeros(jq.shape[0], self.nnz)
        return out.index_add_(1, self.pair_p, prod)


class JacobianPattern:
    """Constraint-Jacobian pattern of one element: each constraint block is dense over
    the tangent coordinates of its own optim vars."""

    def __init__(self, n: int, blocks: Sequence[tuple[int, int, Sequence[slice]]]):
        # blocks: (first row, number of rows, variable slices)
        rows, cols = [], []
        self.m = 0
        for r0, k, slices in blocks:
            cols_b = np.concatenate([np.arange(s.start, s.stop) for s in slices])
            cols_b = np.unique(cols_b)
            for r in range(r0, r0 + k):
                rows.extend([r] * cols_b.size)
                cols.extend(cols_b.tolist())
            self.m = max(self.m, r0 + k)
        self.n = n
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    def gather(self, jac: torch.Tensor) -> torch.Tensor:
        """Pattern values (B, nnz) from dense Jacobians (B, m, n)."""
        r = torch.as_tensor(self.rows, device=jac.device)
        c = torch.as_tensor(self.cols, device=jac.device)
        return jac[:, r, c]

    def batch_indices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        roff = (np.arange(k, dtype=np.int64) * self.m)[:, None]
        coff = (np.arange(k, dtype=np.int64) * self.n)[:, None]
        return (self.rows[None] + roff).ravel(), (self.cols[None] + coff).ravel()


def _distance2_colouring(adj: list[set[int]]) -> list[int]:
    """Greedy colouring where vertices at distance <= 2 get different colours."""
    colour = [-1] * len(adj)
    order = sorted(range(len(adj)), key=lambda v: -len(adj[v]))
    for v in order:
        taken = set()
        for u in adj[v]:
            for w in adj[u]:
                if colour[w] >= 0:
                    taken.add(colour[w])
        c = 0
        while c in taken:
            c += 1
        colour[v] = c
    return colour
