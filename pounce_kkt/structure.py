"""The sparsity structure shared by a batch of conic problems."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch

from pounce_kkt import _native
from pounce_kkt.cone_dims import ConeDims


def _index_array(name: str, values: Any) -> np.ndarray:
    """`values` as a C-contiguous int64 array; raises unless every entry is an integer.

    Integer dtypes pass; a floating array passes only if every entry is a whole number
    (casting would truncate 2.7 to 2); anything else (complex, bool, strings) raises.
    """
    a = np.asarray(values)
    if a.dtype.kind in "iu":
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind != "f" and not (a.dtype == object and a.size == 0):
        raise TypeError(f"{name} must hold integers; got dtype {a.dtype}")
    bad = ~np.isfinite(a) | (a != np.round(a)) if a.size else np.zeros(0, bool)
    if bad.any():
        k = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"{name} must hold integers; entry {k} is {a.ravel()[k].item()!r}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _count(name: str, value: Any) -> int:
    """A non-negative integer size; raises rather than truncate 2.7 to 2."""
    try:
        whole = not isinstance(value, bool) and float(value).is_integer() and value >= 0
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative integer; got {value!r}") from None
    if not whole:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _check_csc(name: str, indptr: Any, indices: Any, n_rows: int, n_cols: int
               ) -> tuple[np.ndarray, np.ndarray]:
    indptr = _index_array(f"{name}_indptr", indptr)
    indices = _index_array(f"{name}_indices", indices)
    if indptr.ndim != 1 or indptr.shape[0] != n_cols + 1:
        raise ValueError(f"{name}_indptr must have length {n_cols + 1}; got {indptr.shape}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}_indptr must start at 0 and be non-decreasing")
    if indices.ndim != 1 or indices.shape[0] != indptr[-1]:
        raise ValueError(f"{name}_indices must have length {indptr[-1]} (= {name}_indptr[-1]);"
                         f" got {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_rows):
        raise ValueError(f"{name}_indices must lie in [0, {n_rows})")
    cols = np.repeat(np.arange(n_cols, dtype=np.int64), np.diff(indptr))
    same_col = cols[1:] == cols[:-1]
    if np.any(same_col & (indices[1:] <= indices[:-1])):
        raise ValueError(f"{name}_indices must be strictly increasing within each column "
                         "(sorted, no duplicates)")
    return indptr, indices


class ConicStructure:
    """n, m, the CSC patterns of A (m x n, `A x + s = b`) and optional full P (n x n), cones.

    Built once per problem and shared by every batch item; the values travel separately
    as (B, nnz) arrays in the order of these patterns.
    """

    def __init__(self, n: int, m: int, a_indptr: Any, a_indices: Any, cones: Any,
                 p_indptr: Any = None, p_indices: Any = None):
        self.n = _count("n", n)
        self.m = _count("m", m)
        self.cones = ConeDims.from_any(cones)
        if self.cones.m != self.m:
            raise ValueError(f"cone dims cover {self.cones.m} rows but m = {self.m}")
        if self.cones.s and (self.cones.ep or self.cones.p):
            raise ValueError(
                f"cones: POUNCE cannot solve PSD cones (s={list(self.cones.s)}) together with "
                f"exponential or power cones (ep={self.cones.ep}, p={list(self.cones.p)}) in "
                "one problem; reformulate without one of the two kinds")
        self.a_indptr, self.a_indices = _check_csc("a", a_indptr, a_indices, self.m, self.n)
        if (p_indptr is None) != (p_indices is None):
            raise ValueError("give both p_indptr and p_indices, or neither")
        if p_indptr is None:
            self.p_indptr = self.p_indices = None
        else:
            self.p_indptr, self.p_indices = _check_csc("p", p_indptr, p_indices, self.n, self.n)

    @cached_property
    def native(self) -> Any:
        """The native problem handle (`pounce_kkt._native.ConicProblem`), built on first use:
        the patterns and cones checked and mapped to POUNCE once, its workers'
        factorizations (and their symbolic analyses) kept across the forward and backward
        calls, which then pass values only."""
        return _native.ConicProblem(self.n, self.m, self.p_indptr, self.p_indices,
                                    self.a_indptr, self.a_indices, self.cones.to_dict())

    def __getstate__(self) -> dict[str, Any]:
        # The native handle is not picklable; a copy builds its own on first use.
        state = self.__dict__.copy()
        state.pop("native", None)
        return state

    @classmethod
    def from_scipy(cls, A: Any, cones: Any, P: Any = None) -> ConicStructure:
        """Structure of scipy sparse matrices (their stored entries define the patterns)."""
        A = _canonical_csc(A)
        P = None if P is None else _canonical_csc(P)
        return cls(A.shape[1], A.shape[0], A.indptr, A.indices, cones,
                   None if P is None else P.indptr, None if P is None else P.indices)

    @property
    def nnz_a(self) -> int:
        return int(self.a_indices.shape[0])

    @property
    def nnz_p(self) -> int:
        return 0 if self.p_indices is None else int(self.p_indices.shape[0])

    @property
    def has_p(self) -> bool:
        return self.p_indices is not None

    def __repr__(self) -> str:
        return (f"ConicStructure(n={self.n}, m={self.m}, nnz_a={self.nnz_a}, "
                f"nnz_p={self.nnz_p if self.has_p else None}, cones={self.cones.to_dict()})")

    # Row/column of every stored entry, as torch index tensors for the dense path.
    @cached_property
    def a_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _entry_rows_cols(self.a_indptr, self.a_indices)

    @cached_property
    def p_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _entry_rows_cols(self.p_indptr, self.p_indices)

    a_rows = property(lambda self: self.a_entries[0])
    a_cols = property(lambda self: self.a_entries[1])
    p_rows = property(lambda self: self.p_entries[0])
    p_cols = property(lambda self: self.p_entries[1])

    @cached_property
    def h_scatter(self) -> torch.Tensor:
        """Flat (row * m + col) positions in the dense m x m H of [h_diag, h_blocks]."""
        idx = [np.arange(self.cones.n_diag, dtype=np.int64) * (self.m + 1)]
        for blk in self.cones.blocks():
            r = np.arange(blk.start, blk.start + blk.dim, dtype=np.int64)
            idx.append((r[:, None] * self.m + r[None, :]).ravel())
        return torch.from_numpy(np.concatenate(idx))

    def a_values(self, A: Any) -> np.ndarray:
        """Values of a scipy sparse A in this structure's pattern (entries outside it raise)."""
        return _values_in_pattern("A", A, self.a_indptr, self.a_indices, (self.m, self.n))

    def p_values(self, P: Any) -> np.ndarray:
        """Values of a scipy sparse (full) P in this structure's pattern."""
        if not self.has_p:
            raise ValueError("this structure has no P pattern")
        return _values_in_pattern("P", P, self.p_indptr, self.p_indices, (self.n, self.n))


def _entry_rows_cols(indptr: np.ndarray, indices: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    cols = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    return torch.from_numpy(indices.copy()), torch.from_numpy(cols)


def _canonical_csc(M: Any):
    import scipy.sparse as sp

    M = sp.csc_matrix(M, copy=True)
    M.sum_duplicates()
    M.sort_indices()
    return M


def _values_in_pattern(name: str, M: Any, indptr: np.ndarray, indices: np.ndarray,
                       shape: tuple[int, int]) -> np.ndarray:
    """(nnz,) values of M on the pattern (indptr, indices); zeros where M stores nothing.

    Raises ValueError if M has a nonzero outside the pattern. Works for empty patterns and
    empty M (an A without nonzeros)."""
    M = _canonical_csc(M)
    if M.shape != shape:
        raise ValueError(f"{name} has shape {M.shape}, structure expects {shape}")
    M.eliminate_zeros()
    # Both are CSC with sorted rows, so (col, row) keys are sorted and searchsorted places
    # every stored entry of M in the pattern.
    n_rows = shape[0]
    key = np.repeat(np.arange(shape[1], dtype=np.int64), np.diff(indptr)) * n_rows + indices
    m_key = (np.repeat(np.arange(shape[1], dtype=np.int64), np.diff(M.indptr)) * n_rows
             + M.indices.astype(np.int64))
    pos = np.searchsorted(key, m_key)
    inside = pos < key.shape[0]
    inside[inside] = key[pos[inside]] == m_key[inside]
    if not inside.all():
        raise ValueError(f"{name} has nonzeros outside the structure's pattern")
    out = np.zeros(indices.shape[0], dtype=np.float64)
    out[pos] = M.data
    return out
