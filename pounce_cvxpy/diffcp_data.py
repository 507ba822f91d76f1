"""diffcp's problem data in the core's layout: canonical A, P's triangle, batch grouping.

diffcp (with SCS, its default) reads P's UPPER triangle only and ignores entries below the
diagonal; the core wants the FULL symmetric pattern (docs/design.md). `ProgramData` keeps the
user's matrices untouched, builds the full pattern once, and maps values and gradients both
ways with one 0/1 matrix `p_expand` (full-pattern value k comes from user entry j):

    full_values = p_expand @ user_values,     grad_user = p_expand.T @ grad_full

so an off-diagonal upper entry gets the gradient of both mirrored positions, and a
strictly-lower entry gets 0, exactly as SCS's use of P implies.

SCS's dual cones (the dual exponential "ed", a negative power-cone alpha) are solved as
POUNCE's primal cones on mapped rows, s' = S s (pounce_kkt.cone_dims.scs_cones: S is a
signed, scaled row permutation). `A` and `b` here are in the solver's rows (S A, S b);
`rows` carries everything back: y = S' y', s = S^-1 s', and gradients by the adjoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pounce_kkt import ConeDims, ConicStructure
from pounce_kkt.cone_dims import RowMap, scs_cones
from pounce_kkt.validation import check_real


def canonical_csc(M: Any, name: str) -> sp.csc_matrix:
    """A sorted, duplicate-free CSC copy (explicit zeros kept: they are part of the pattern)."""
    if not (sp.issparse(M) or isinstance(M, np.ndarray)):
        raise TypeError(f"{name} must be a scipy sparse matrix (CSC) or a numpy array, "
                        f"got {type(M).__name__}")
    check_real(name, M)
    out = sp.csc_matrix(M, dtype=np.float64, copy=True)
    out.sum_duplicates()
    out.sort_indices()
    return out


def symmetric_from_upper(M: sp.spmatrix) -> sp.csc_matrix:
    """triu(M) mirrored: the symmetric matrix SCS means by M (entries below the diagonal unused)."""
    upper = sp.triu(M, format="csc")
    return (upper + sp.triu(M, k=1, format="csc").T).tocsc()


@dataclass
class ProgramData:
    """One diffcp problem: canonical copies, the full P pattern, and its structure key."""

    A: sp.csc_matrix  # in the solver's rows (S A)
    b: np.ndarray  # in the solver's rows (S b)
    c: np.ndarray
    cones: ConeDims  # the solver's cones
    P: sp.csc_matrix | None  # the user's P, canonical (values read from here)
    P_full: sp.csc_matrix | None  # full symmetric pattern handed to the core
    p_expand: sp.csr_matrix | None  # (nnz P_full, nnz P): full values from user values
    rows: RowMap | None = None  # None: the solver's rows are the user's
    A_user: sp.csc_matrix | None = None  # the user's A (canonical) when rows is not None
    a_src: np.ndarray | None = None  # user entry of each entry of A (when rows is not None)

    @classmethod
    def from_user(cls, A: Any, b: Any, c: Any, cone_dict: Any, P: Any = None,
                  index: int | None = None) -> ProgramData:
        where = "" if index is None else f" (batch item {index})"
        A = canonical_csc(A, "A" + where)
        m, n = A.shape
        b = _vector(b, "b" + where, m)
        c = _vector(c, "c" + where, n)
        for name, arr in (("A", A.data), ("b", b), ("c", c)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}{where} contains NaN or Inf")
        cones, rows = scs_cones(dict(cone_dict))
        if cones.m != m:
            raise ValueError(f"cone_dict{where} covers {cones.m} rows but A has {m}")
        mapped = {}
        if rows is not None:
            A_solver, a_src = _mapped_rows(A, rows)
            mapped = {"rows": rows, "A_user": A, "a_src": a_src}
            A, b = A_solver, rows.forward(b)
        if P is None:
            return cls(A, b, c, cones, None, None, None, **mapped)
        P = canonical_csc(P, "P" + where)
        if P.shape != (n, n):
            raise ValueError(f"P{where} must be {n} x {n}, got {P.shape}")
        if not np.all(np.isfinite(P.data)):
            raise ValueError(f"P{where} contains NaN or Inf")
        return cls(A, b, c, cones, P, *_full_pattern(P), **mapped)

    # Between the user's rows and the solver's (the identity without SCS's dual cones).
    def y_to_user(self, y: np.ndarray) -> np.ndarray:
        """A solver dual (or its derivative, or a gradient of b) in the user's rows: S' y."""
        return y if self.rows is None else self.rows.adjoint(y)

    def s_to_user(self, s: np.ndarray) -> np.ndarray:
        """A solver slack (or its derivative) in the user's rows: S^-1 s."""
        return s if self.rows is None else self.rows.inverse(s)

    def to_solver_rows(self, v: Any) -> np.ndarray:
        """A user slack, b direction or upstream gradient of y in the solver's rows: S v."""
        return v if self.rows is None else self.rows.forward(v)

    def dual_to_solver_rows(self, v: Any) -> np.ndarray:
        """A user dual (warm start) or upstream gradient of s in the solver's rows: S^-T v."""
        return v if self.rows is None else self.rows.inverse_adjoint(v)

    def structure_key(self) -> tuple:
        """Equal keys <=> one ConicStructure serves both problems (same patterns and cones)."""
        key = (self.A.shape, self.A.indptr.tobytes(), self.A.indices.tobytes(), self.cones)
        if self.P_full is None:
            return (*key, None)
        return (*key, self.P_full.indptr.tobytes(), self.P_full.indices.tobytes())

    def structure(self) -> ConicStructure:
        return ConicStructure.from_scipy(self.A, self.cones.to_dict(), self.P_full)

    def p_full_values(self, user_values: np.ndarray | None = None) -> np.ndarray | None:
        """Values on the full pattern from values on the user's P pattern (default: P's own)."""
        if self.P is None:
            return None
        return self.p_expand @ (self.P.data if user_values is None else user_values)

    def direction(self, structure: ConicStructure, dA: Any, db: Any, dc: Any, dP: Any = None,
                  where: str = "") -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
        """(dP_full, dq, dA, db) values for the core's conic_jvp from diffcp's D arguments.

        dA and dP are matrices (sparse or dense); dP is read as SCS reads P (upper triangle,
        mirrored). Both must lie on the solved problem's stored patterns. dP_full is zeros
        when the problem has P and dP is None, None when it has no P.
        """
        m, n = self.A.shape
        if self.rows is not None:  # S dA: a signed, scaled row permutation of the direction
            dA = canonical_csc(dA, "dA" + where)
            if dA.shape == (m, n):  # (a wrong shape is reported below)
                dA = sp.diags(self.rows.scale) @ dA[self.rows.src]
        dA_v = _pattern_values(structure.a_values, dA, "dA" + where, (m, n))
        dP_v = None
        if dP is not None and self.P is None:
            raise ValueError("P must be provided if dP is not None.")
        if self.P is not None:
            dP_v = (np.zeros(structure.nnz_p) if dP is None else _pattern_values(
                lambda M: structure.p_values(symmetric_from_upper(M)), dP, "dP" + where, (n, n)))
        db = self.to_solver_rows(_vector(db, "db" + where, m))
        return dP_v, _vector(dc, "dc" + where, n), dA_v, db

    def p_gradient(self, grad_full: np.ndarray) -> sp.csc_matrix:
        """A full-pattern gradient as a matrix on the user's P pattern."""
        values = self.p_expand.T @ grad_full
        return sp.csc_matrix((values, self.P.indices.copy(), self.P.indptr.copy()),
                             shape=self.P.shape)

    def a_gradient(self, values: np.ndarray) -> sp.csc_matrix:
        """Gradient values on the solver's A pattern as a CSC matrix on the user's A pattern
        (G_user = S' G: entry for entry, since S permutes and scales rows)."""
        values = np.asarray(values, dtype=np.float64)
        A = self.A
        if self.rows is not None:
            user = np.empty_like(values)
            user[self.a_src] = self.rows.scale[A.indices] * values
            A, values = self.A_user, user
        return sp.csc_matrix((values, A.indices.copy(), A.indptr.copy()), shape=A.shape)


def _vector(v: Any, name: str, size: int) -> np.ndarray:
    check_real(name, np.asarray(v))
    arr = np.asarray(v, dtype=np.float64).reshape(-1).copy()
    if arr.shape != (size,):
        raise ValueError(f"{name} must have {size} entries, got {np.shape(v)}")
    return arr


def _pattern_values(values_on_pattern: Any, M: Any, name: str, shape: tuple[int, int]
                    ) -> np.ndarray:
    """values_on_pattern(M) for a user matrix M, with errors that name M."""
    M = canonical_csc(M, name)
    if M.shape != shape:
        raise ValueError(f"{name} must be {shape[0]} x {shape[1]}, got {M.shape}")
    if not np.all(np.isfinite(M.data)):
        raise ValueError(f"{name} contains NaN or Inf")
    try:
        return values_on_pattern(M)
    except ValueError as err:  # nonzeros outside the pattern the problem was solved with
        raise ValueError(f"{name}: {err}; D differentiates along the stored pattern of the "
                         "solved problem's matrix (store explicit zeros there to widen it)"
                         ) from err


def _mapped_rows(A: sp.csc_matrix, rows: RowMap) -> tuple[sp.csc_matrix, np.ndarray]:
    """S A on its own (canonical) pattern, and the user entry behind each of its entries."""
    ids = sp.csc_matrix((np.arange(1, A.nnz + 1, dtype=np.float64), A.indices, A.indptr),
                        shape=A.shape)
    moved = sp.csc_matrix(ids[rows.src])  # row k of S A comes from user row src[k]
    moved.sort_indices()
    src = moved.data.astype(np.int64) - 1
    values = rows.scale[moved.indices] * A.data[src]
    return sp.csc_matrix((values, moved.indices, moved.indptr), shape=A.shape), src


def _full_pattern(P: sp.csc_matrix) -> tuple[sp.csc_matrix, sp.csr_matrix]:
    """The full symmetric pattern of triu(P) and the 0/1 map from P's values to it."""
    ids = sp.csc_matrix((np.arange(1, P.nnz + 1, dtype=np.float64), P.indices, P.indptr),
                        shape=P.shape)
    full_ids = symmetric_from_upper(ids)  # upper and mirrored parts never overlap
    full_ids.sort_indices()
    source = full_ids.data.astype(np.int64) - 1
    expand = sp.csr_matrix((np.ones(source.size), (np.arange(source.size), source)),
                           shape=(source.size, P.nnz))
    pattern = sp.csc_matrix((np.ones(source.size), full_ids.indices, full_ids.indptr),
                            shape=P.shape)
    return pattern, expand


def group_by_structure(programs: list[ProgramData]) -> list[list[int]]:
    """Indices of the programs, grouped so that each group shares one ConicStructure."""
    groups: dict[tuple, list[int]] = {}
    for i, prog in enumerate(programs):
        groups.setdefault(prog.structure_key(), []).append(i)
    return list(groups.values())
