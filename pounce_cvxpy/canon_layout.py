"""cvxpylayers' canonical data layout, and its translation to and from the core's.

cvxpylayers (1.2) hands a `SolverInterface` three batch-first value arrays whose sparsity
lives in the `LayersContext` given to `setup(ctx)` (read by pounce_cvxpy.compat.layer_problem):

- `P` (B, nnz_P): a FULL symmetric n x n CSC pattern, `ctx.reduced_P.problem_data_index`
  (None for an LP); the objective is 1/2 x'Px + q'x.
- `q` (B, n+1): the last entry is the objective's constant.
- `A` (B, nnz): the CSC matrix `[A_c | b]`, m x (n+1), `ctx.reduced_A.problem_data_index`,
  meaning `A_c x + b in K`.

The core (docs/design.md) solves `A x + s = b, s in K`, so `A = -A_c`; the values of the
last CSC column are `b`'s nonzeros. Cone rows are in SCS order (zero, nonneg, SOC, PSD,
exp, power) with SCS's PSD svec, which is the core's, because the layer canonicalises
for the "POUNCE" cvxpy solver (pounce_cvxpy/cvxpy_solver.py) that declares SCS's PSD
format. Gradients go back the same way: `dA` holds `-dA_core` then `db` on b's rows,
`dq` gets a 0 for the constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pounce_cvxpy.compat import LayerProblem
from pounce_kkt import ConicStructure


def _csc_index(index: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    indices, indptr, shape = index
    return (
        np.asarray(indices, dtype=np.int64),
        np.asarray(indptr, dtype=np.int64),
        (int(shape[0]), int(shape[1])),
    )


@dataclass(frozen=True)
class CanonLayout:
    """Where each of cvxpylayers' values goes in the core's problem, for one layer.

    Attributes:
        structure: the core's `ConicStructure` (n, m, the patterns of P and A, the cones).
        nnz_a: how many of the `A` values belong to `A_c`; the rest are `b`'s nonzeros.
        b_rows: the rows of `b`'s nonzeros, in the order of the values.
    """

    structure: ConicStructure
    nnz_a: int
    b_rows: np.ndarray

    @classmethod
    def from_indices(cls, a_index: Any, p_index: Any | None, dims: Any) -> CanonLayout:
        """Build from `problem_data_index` tuples `(indices, indptr, shape)` and cone dims.

        `a_index` describes `[A_c | b]` (m x (n+1)); `p_index` the full symmetric P or
        None; `dims` is a cvxpy `ConeDims` (or anything `pounce_kkt.ConeDims` accepts).
        """
        a_indices, a_indptr, (m, n1) = _csc_index(a_index)
        n = n1 - 1
        nnz_a = int(a_indptr[n])
        b_rows = a_indices[nnz_a : int(a_indptr[n + 1])].copy()
        p_indptr = p_indices = None
        if p_index is not None:
            p_indices, p_indptr, p_shape = _csc_index(p_index)
            if p_shape != (n, n):
                raise ValueError(f"P pattern has shape {p_shape}, expected {(n, n)}")
        structure = ConicStructure(
            n=n,
            m=m,
            a_indptr=a_indptr[: n + 1].copy(),
            a_indices=a_indices[:nnz_a].copy(),
            p_indptr=p_indptr,
            p_indices=p_indices,
            cones=dims,
        )
        return cls(structure=structure, nnz_a=nnz_a, b_rows=b_rows)

    @classmethod
    def from_layer_problem(cls, problem: LayerProblem) -> CanonLayout:
        """Build from a layer's canonical problem (pounce_cvxpy.compat.layer_problem)."""
        a_index = problem.a_index
        if a_index is None:  # no constraints: [A_c | b] is 0 x (n+1)
            n1 = problem.n + 1
            a_index = (np.zeros(0, np.int64), np.zeros(n1 + 1, np.int64), (0, n1))
        return cls.from_indices(a_index, problem.p_index, problem.cone_dims)

    def to_core(
        self, P: torch.Tensor | None, q: torch.Tensor, A: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """cvxpylayers' (P, q, [A_c | b]) values, batch-first, to the core's (P, q, A, b)."""
        n, m = self.structure.n, self.structure.m
        if q.shape[-1] != n + 1:
            raise ValueError(f"q has {q.shape[-1]} entries per item, expected n+1 = {n + 1}")
        if A.shape[-1] != self.nnz_a + len(self.b_rows):
            raise ValueError(
                f"A has {A.shape[-1]} values per item, expected {self.nnz_a + len(self.b_rows)}"
            )
        if A.device.type == "cpu":  # numpy: see pounce_kkt.validation.all_finite
            a_np = A.detach().numpy()
            a_core = torch.from_numpy(np.negative(a_np[:, : self.nnz_a], order="C"))
            b_np = np.zeros((A.shape[0], m), dtype=a_np.dtype)
            b_np[:, self.b_rows] = a_np[:, self.nnz_a :]
            return P, q[:, :n], a_core, torch.from_numpy(b_np)
        a_core = -A[:, : self.nnz_a]
        b = A.new_zeros((A.shape[0], m))
        b[:, torch.as_tensor(self.b_rows, device=A.device)] = A[:, self.nnz_a :]
        return P, q[:, :n], a_core, b

    def to_layers(
        self,
        dP: torch.Tensor | None,
        dq: torch.Tensor,
        dA: torch.Tensor,
        db: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The core's gradients (dP, dq, dA, db) to cvxpylayers' (dP, dq, d[A_c | b])."""
        dq_ext = torch.cat([dq, dq.new_zeros((dq.shape[0], 1))], dim=1)
        if dA.device.type == "cpu":  # numpy: see pounce_kkt.validation.all_finite
            da_np, db_np = dA.detach().numpy(), db.detach().numpy()
            out = np.empty((da_np.shape[0], da_np.shape[1] + len(self.b_rows)), da_np.dtype)
            np.negative(da_np, out=out[:, : da_np.shape[1]])
            out[:, da_np.shape[1] :] = db_np[:, self.b_rows]
            return dP, dq_ext, torch.from_numpy(out)
        db_vals = db[:, torch.as_tensor(self.b_rows, device=db.device)]
        return dP, dq_ext, torch.cat([-dA, db_vals], dim=1)
