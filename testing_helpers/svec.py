"""SCS's packed form of a symmetric matrix: lower triangle, column-major, off-diagonals
times sqrt(2) (so that ``svec(A) . svec(B) = trace(A B)``)."""

from __future__ import annotations

import math

import numpy as np

SQRT2 = math.sqrt(2.0)


def svec(M: np.ndarray) -> np.ndarray:
    """SCS svec: lower triangle, column-major, off-diagonals x sqrt(2)."""
    k = M.shape[0]
    out = []
    for j in range(k):
        for i in range(j, k):
            out.append(M[i, j] if i == j else SQRT2 * M[i, j])
    return np.array(out)


def smat(v: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`svec`."""
    M = np.zeros((k, k))
    idx = 0
    for j in range(k):
        for i in range(j, k):
            if i == j:
                M[i, i] = v[idx]
            else:
                M[i, j] = M[j, i] = v[idx] / SQRT2
            idx += 1
    return M
