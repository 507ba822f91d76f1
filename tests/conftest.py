"""Shared fixtures: random conic problems in SCS form and reference solvers.

Every problem here is in the core's one convention (docs/design.md)::

    minimize 1/2 x'Px + q'x   s.t.  A x + s = b,  s in K,   dual y in K*,  Px + q + A'y = 0

with ``P`` a FULL symmetric CSC matrix (or None), ``A`` CSC, and cones as the SCS dict
``{"z", "l", "q", "s", "ep", "p"}`` in that row order (PSD svec: lower triangle,
column-major, off-diagonals x sqrt(2); exp ``(x, y, z)``: ``y exp(x/y) <= z``; power
``(x, y, z)``: ``x^a y^(1-a) >= |z|``).

Generators build each problem around a known primal-dual solution ``(x*, y*, s*)`` with strict
complementarity (so the solution is unique and the derivative exists), and ``P`` positive
definite unless stated, so ``x*`` is unique. Batches share ONE sparsity structure (the
patterns of P and A are fixed by ``structure_seed``); values and active sets vary per item.

Reference solvers:
- :func:`clarabel_solve` calls Clarabel directly (same ``A x + s = b`` form), returning
  ``x, y, s`` and a status string in the native API's vocabulary.
- :func:`cvxpy_solve` builds the problem as a cvxpy model and solves it with Clarabel,
  returning ``x``, the objective and the status; an independent check of the conventions.

Other test modules import these directly (``from conftest import random_problem_batch``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch


@pytest.fixture(autouse=True)
def _no_default_dtype_leak():
    """Fail a test that leaves torch's default dtype changed: later tests (Theseus allocates
    its histories in the default dtype) would otherwise see it."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    torch.set_default_dtype(before)
    assert after == before, f"test changed torch's default dtype from {before} to {after}"


SQRT2 = math.sqrt(2.0)
CONE_KEYS = ("z", "l", "q", "s", "ep", "p")


# --------------------------------------------------------------------------------------------
# Problem containers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConicProblem:
    """One conic program in SCS form; ``x_star``/``y_star``/``s_star`` when known."""

    P: sp.csc_matrix | None
    q: np.ndarray
    A: sp.csc_matrix
    b: np.ndarray
    cones: dict
    x_star: np.ndarray | None = None
    y_star: np.ndarray | None = None
    s_star: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def m(self) -> int:
        return self.A.shape[0]


@dataclasses.dataclass
class ConicBatch:
    """A batch sharing one structure, in the native API's layout (batch-first values)."""

    n: int
    m: int
    p_indptr: np.ndarray | None
    p_indices: np.ndarray | None
    p_values: np.ndarray | None  # (B, nnzP)
    a_indptr: np.ndarray
    a_indices: np.ndarray
    a_values: np.ndarray  # (B, nnzA)
    q: np.ndarray  # (B, n)
    b: np.ndarray  # (B, m)
    cones: dict
    problems: list

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    def structure_args(self):
        """Positional ``(n, m, p_indptr, p_indices)`` + ``(a_indptr, a_indices)`` pieces."""
        return self.n, self.m, self.p_indptr, self.p_indices, self.a_indptr, self.a_indices

    def solve_native(self, **opts):
        """Forward through ``pounce_kkt._native.conic_solve_batch``."""
        from pounce_kkt import _native

        return _native.conic_solve_batch(
            self.n,
            self.m,
            self.p_indptr,
            self.p_indices,
            self.p_values,
            self.a_indptr,
            self.a_indices,
            self.a_values,
            self.q,
            self.b,
            self.cones,
            **opts,
        )


def stack_batch(problems: list[ConicProblem]) -> ConicBatch:
    """Stack problems that share the P and A patterns into a :class:`ConicBatch`."""
    p0 = problems[0]
    for p in problems[1:]:
        assert (p.A.indptr == p0.A.indptr).all() and (p.A.indices == p0.A.indices).all()
        assert (p.P is None) == (p0.P is None)
        assert p.cones == p0.cones
    i64 = np.int64
    if p0.P is not None:
        p_indptr = p0.P.indptr.astype(i64)
        p_indices = p0.P.indices.astype(i64)
        p_values = np.ascontiguousarray(np.stack([p.P.data for p in problems]))
    else:
        p_indptr = p_indices = p_values = None
    return ConicBatch(
        n=p0.n,
        m=p0.m,
        p_indptr=p_indptr,
        p_indices=p_indices,
        p_values=p_values,
        a_indptr=p0.A.indptr.astype(i64),
        a_indices=p0.A.indices.astype(i64),
        a_values=np.ascontiguousarray(np.stack([p.A.data for p in problems])),
        q=np.ascontiguousarray(np.stack([p.q for p in problems])),
        b=np.ascontiguousarray(np.stack([p.b for p in problems])),
        cones=dict(p0.cones),
        problems=list(problems),
    )


def cone_rows(cones: dict) -> int:
    """Number of rows the SCS cone dict covers."""
    return (
        cones.get("z", 0)
        + cones.get("l", 0)
        + sum(cones.get("q", []))
        + sum(k * (k + 1) // 2 for k in cones.get("s", []))
        + 3 * cones.get("ep", 0)
        + 3 * len(cones.get("p", []))
    )


def p_eff(P: sp.spmatrix | None, n: int) -> np.ndarray:
    """Dense ``(P + P')/2`` (zeros for None)."""
    if P is None:
        return np.zeros((n, n))
    D = P.toarray()
    return 0.5 * (D + D.T)


# --------------------------------------------------------------------------------------------
# svec helpers (SCS convention)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Complementary (s, y) pairs per cone, with strict complementarity
# --------------------------------------------------------------------------------------------


def _pair_nonneg(rng, d, active=None):
    active = rng.random(d) < 0.5 if active is None else np.asarray(active, bool)
    s = np.where(active, 0.0, rng.uniform(0.5, 2.0, d))
    y = np.where(active, rng.uniform(0.5, 2.0, d), 0.0)
    return s, y


def _soc_mode(rng, d):
    mode = str(rng.choice(["boundary", "s_interior", "y_interior"], p=[0.6, 0.2, 0.2]))
    return "s_interior" if (d == 1 and mode == "boundary") else mode


def _pair_soc(rng, d, mode=None):
    mode = mode or _soc_mode(rng, d)
    u = rng.standard_normal(d - 1)
    u /= max(np.linalg.norm(u), 1e-12)
    if mode == "boundary":  # s = a(1, u), y = c(1, -u): both on the boundary, s'y = 0
        a, c = rng.uniform(0.5, 2.0, 2)
        return a * np.concatenate([[1.0], u]), c * np.concatenate([[1.0], -u])
    t = rng.uniform(1.5, 2.5)
    inner = np.concatenate([[t], 0.5 * rng.uniform(0, 1) * u])
    if mode == "s_interior":
        return inner, np.zeros(d)
    return np.zeros(d), inner


def _pair_psd(rng, k, rank=None):
    """S of rank ``rank`` (random if None) and Y of rank k - rank, sharing eigenvectors."""
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    r = int(rng.integers(0, k + 1)) if rank is None else int(rank)
    ls = np.concatenate([rng.uniform(0.5, 2.0, r), np.zeros(k - r)])
    ly = np.concatenate([np.zeros(r), rng.uniform(0.5, 2.0, k - r)])
    S = Q @ np.diag(ls) @ Q.T
    Y = Q @ np.diag(ly) @ Q.T
    return svec(S), svec(Y)


def _pair_exp(rng, mode=None):
    mode = mode or str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
    if mode == "boundary":
        # s = (x, y, y e^{x/y}); y* = c(-e^r, e^r (r - 1), 1), r = x/y: the outer normal of
        # the boundary, on the dual boundary, s'y* = 0.
        yv = rng.uniform(0.5, 2.0)
        r = rng.uniform(-1.0, 1.0)
        c = rng.uniform(0.5, 2.0)
        s = np.array([r * yv, yv, yv * math.exp(r)])
        y = c * np.array([-math.exp(r), math.exp(r) * (r - 1.0), 1.0])
        return s, y
    yv = rng.uniform(0.5, 2.0)
    r = rng.uniform(-1.0, 1.0)
    return np.array([r * yv, yv, 2.0 * yv * math.exp(r)]), np.zeros(3)


def _pair_power(rng, a, mode=None):
    mode = mode or str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
    xv, yv = rng.uniform(0.5, 2.0, 2)
    g = xv**a * yv ** (1 - a)
    if mode == "boundary":
        # s = (x, y, +-x^a y^(1-a)); y* = c(a x^(a-1) y^(1-a), (1-a) x^a y^-a, -sign z).
        sign = rng.choice([-1.0, 1.0])
        c = rng.uniform(0.5, 2.0)
        s = np.array([xv, yv, sign * g])
        y = c * np.array([a * xv ** (a - 1) * yv ** (1 - a), (1 - a) * xv**a * yv ** (-a), -sign])
        return s, y
    return np.array([xv, yv, 0.3 * g * rng.uniform(-1, 1)]), np.zeros(3)


def face_modes(rng, cones: dict) -> list:
    """Random face of each block (in cone order after the zero rows): a bool active mask for
    the nonneg rows, then "boundary" / "s_interior" / "y_interior" per SOC, the rank of S per
    PSD, "boundary" / "s_interior" per exp and power cone."""
    modes = [rng.random(cones.get("l", 0)) < 0.5]
    modes += [_soc_mode(rng, d) for d in cones.get("q", [])]
    modes += [int(rng.integers(0, k + 1)) for k in cones.get("s", [])]
    modes += [str(rng.choice(["boundary", "s_interior"], p=[0.7, 0.3]))
              for _ in range(cones.get("ep", 0) + len(cones.get("p", [])))]  # fmt: skip
    return modes


def face_codim(cones: dict, modes: list) -> int:
    """Number of independent equations the face pins: zero rows, active nonneg rows, 1 per
    boundary SOC/exp/power, d per SOC at its apex, (k-r)(k-r+1)/2 per PSD of rank r."""
    it = iter(modes)
    total = cones.get("z", 0) + int(np.sum(next(it)))
    for d in cones.get("q", []):
        mode = next(it)
        total += {"boundary": 1, "s_interior": 0, "y_interior": d}[mode]
    for k in cones.get("s", []):
        r = next(it)
        total += (k - r) * (k - r + 1) // 2
    for _ in range(cones.get("ep", 0) + len(cones.get("p", []))):
        total += 1 if next(it) == "boundary" else 0
    return total


def complementary_pair(rng, cones: dict, modes: list | None = None):
    """A random ``(s, y)`` in ``K x K*`` with ``s'y = 0`` and strict complementarity, on the
    faces ``modes`` (see :func:`face_modes`; random if None)."""
    it = iter(modes) if modes is not None else None
    pick = (lambda: next(it)) if it is not None else (lambda: None)
    z = cones.get("z", 0)
    s_parts, y_parts = [np.zeros(z)], [rng.standard_normal(z)]
    # One (pair maker, its size argument) per cone block, in the SCS row order.
    blocks = [(_pair_nonneg, (cones.get("l", 0),))]
    blocks += [(_pair_soc, (d,)) for d in cones.get("q", [])]
    blocks += [(_pair_psd, (k,)) for k in cones.get("s", [])]
    blocks += [(_pair_exp, ()) for _ in range(cones.get("ep", 0))]
    blocks += [(_pair_power, (a,)) for a in cones.get("p", [])]
    for make_pair, size in blocks:
        s, y = make_pair(rng, *size, pick())
        s_parts.append(s)
        y_parts.append(y)
    return np.concatenate(s_parts), np.concatenate(y_parts)


# --------------------------------------------------------------------------------------------
# Random problem batches
# --------------------------------------------------------------------------------------------


def _pattern(rng, m, n, density, z=0):
    """A random CSC pattern with every column and row hit at least once; rows ``z`` and
    ``z + 1`` (the first nonneg rows) always hold column 0 (see :func:`primal_infeasible`)."""
    mask = rng.random((m, n)) < density
    mask[rng.integers(0, m, n), np.arange(n)] = True
    mask[np.arange(m), rng.integers(0, n, m)] = True
    mask[z : z + 2, 0] = True
    return mask


def _csc_from_mask(mask, values_fn):
    rows, cols = np.nonzero(mask.T)  # column-major order
    rows, cols = cols, rows
    vals = values_fn(len(rows))
    M = sp.csc_matrix((vals, (rows, cols)), shape=mask.shape)
    M.sort_indices()
    assert M.nnz == len(rows), "pattern lost entries"
    return M


def random_problem_batch(
    cones: dict,
    n: int,
    batch: int = 4,
    *,
    quadratic: bool = True,
    density: float = 0.6,
    p_rank_deficient: bool = False,
    structure_seed: int = 0,
    seed: int = 1,
) -> ConicBatch:
    """``batch`` problems with the cone dict ``cones`` and ``n`` variables, one structure.

    Each item is built around a known solution: ``x*`` random, ``(s*, y*)`` from
    :func:`complementary_pair`, ``b = A x* + s*``, ``q = -P x* - A' y*``. With
    ``quadratic`` P is dense (full pattern) and positive definite (``p_rank_deficient``
    makes it PSD of rank n/2, the solution then unique only through the constraints).
    """
    srng = np.random.default_rng(structure_seed)
    m = cone_rows(cones)
    mask = _pattern(srng, m, n, density, cones.get("z", 0))
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(batch):
        A = _csc_from_mask(mask, lambda k: rng.standard_normal(k))
        if quadratic:
            r = n // 2 if p_rank_deficient else n
            L = rng.standard_normal((n, r)) / math.sqrt(n)
            Pd = L @ L.T + (0.0 if p_rank_deficient else 0.1) * np.eye(n)
            Pd = 0.5 * (Pd + Pd.T)
            P = _csc_from_mask(np.ones((n, n), bool), lambda k, Pd=Pd: Pd.ravel(order="F"))
        else:
            P = None
        x = rng.standard_normal(n)
        s, y = complementary_pair(rng, cones)
        b = A @ x + s
        q = -(p_eff(P, n) @ x) - A.T @ y
        problems.append(ConicProblem(P, q, A, b, dict(cones), x, y, s))
    return stack_batch(problems)


def random_lp_batch(n=8, z=2, l=14, batch=4, structure_seed=0, seed=1) -> ConicBatch:  # noqa: E741
    """LPs with a unique, strictly complementary, nondegenerate solution.

    Exactly ``n - z`` of the ``l`` inequalities are active at ``x*`` (``s = 0, y > 0``), the
    rest inactive, so the active rows plus the equalities determine ``x*``.
    """
    assert l >= n - z >= 0
    cones = {"z": z, "l": l}
    m = z + l
    srng = np.random.default_rng(structure_seed)
    mask = _pattern(srng, m, n, 0.7, z)
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(batch):
        A = _csc_from_mask(mask, lambda k: rng.standard_normal(k))
        x = rng.standard_normal(n)
        active = np.zeros(l, bool)
        active[rng.choice(l, n - z, replace=False)] = True
        s = np.concatenate([np.zeros(z), np.where(active, 0.0, rng.uniform(0.5, 2.0, l))])
        y = np.concatenate([rng.standard_normal(z), np.where(active, rng.uniform(0.5, 2.0, l), 0)])
        b = A @ x + s
        q = -(A.T @ y)
        problems.append(ConicProblem(None, q, A, b, dict(cones), x, y, s))
    return stack_batch(problems)


def near_degenerate_qp_batch(batch: int = 4, n: int = 8, m: int = 12, seed: int = 3
                             ) -> ConicBatch:
    """QPs (dense P and A) with a unique solution next to a kink: rows 0..n/2-1 active
    (``s = 0, y > 0``), row n/2 NOT binding with slack 3e-4..7e-4 (``y = 0``), the rest
    inactive with slack O(1). An interior-point adjoint smooths over ~sqrt(tol) and sees the
    near row as partly active (issue 12: 3e-3..7e-2 off central differences at tol=1e-8)."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(batch):
        L = rng.standard_normal((n, n)) / math.sqrt(n)
        Pd = L @ L.T + 0.1 * np.eye(n)
        P = _csc_from_mask(np.ones((n, n), bool), lambda k, Pd=Pd: Pd.ravel(order="F"))
        A = _csc_from_mask(np.ones((m, n), bool), lambda k: rng.standard_normal(k))
        x = rng.standard_normal(n)
        s = np.concatenate([np.zeros(n // 2), [rng.uniform(3e-4, 7e-4)],
                            rng.uniform(0.5, 2.0, m - n // 2 - 1)])
        y = np.concatenate([rng.uniform(0.5, 2.0, n // 2), np.zeros(m - n // 2)])
        problems.append(ConicProblem(P, -Pd @ x - A.T @ y, A, A @ x + s, {"l": m}, x, y, s))
    return stack_batch(problems)


def random_conic_lp_batch(
    cones: dict, batch: int = 4, *, density: float = 0.7, structure_seed: int = 0, seed: int = 1
) -> ConicBatch:
    """Conic LPs (P = None) with a unique, nondegenerate, strictly complementary solution.

    The face of every block is fixed per structure (:func:`face_modes` from
    ``structure_seed``) and ``n`` is set to the number of equations that face pins
    (:func:`face_codim`), so ``x*`` is a vertex of the feasible set in the conic sense.
    """
    srng = np.random.default_rng(structure_seed)
    modes = face_modes(srng, cones)
    n = face_codim(cones, modes)
    if n == 0:
        raise ValueError("the chosen faces pin nothing; pick another structure_seed")
    m = cone_rows(cones)
    mask = _pattern(srng, m, n, density, cones.get("z", 0))
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(batch):
        A = _csc_from_mask(mask, lambda k: rng.standard_normal(k))
        x = rng.standard_normal(n)
        s, y = complementary_pair(rng, cones, modes)
        problems.append(ConicProblem(None, -(A.T @ y), A, A @ x + s, dict(cones), x, y, s))
    return stack_batch(problems)


def primal_infeasible(prob: ConicProblem) -> ConicProblem:
    """Same structure, infeasible values: the first two nonneg rows say ``x0 <= -1`` and
    ``x0 >= 1`` (their other entries are set to 0; the generators give both rows column 0).
    """
    z = prob.cones.get("z", 0)
    assert prob.cones.get("l", 0) >= 2
    A = prob.A.copy()
    b = prob.b.copy()
    for row, sign in ((z, 1.0), (z + 1, -1.0)):
        for c in range(prob.n):
            for k in range(A.indptr[c], A.indptr[c + 1]):
                if A.indices[k] == row:
                    A.data[k] = sign if c == 0 else 0.0
        b[row] = -1.0
    assert A[z, 0] == 1.0 and A[z + 1, 0] == -1.0, "rows z, z+1 must hold column 0"
    return ConicProblem(prob.P, prob.q.copy(), A, b, dict(prob.cones))


def dual_infeasible(prob: ConicProblem) -> ConicProblem:
    """Same structure, unbounded values: variable 0 leaves every constraint and the
    objective (P's row/column 0 set to 0), and ``q[0] = -1``, so ``x0 -> +inf`` is a ray.
    """
    A = prob.A.copy()
    A.data[A.indptr[0] : A.indptr[1]] = 0.0
    q = prob.q.copy()
    q[0] = -1.0
    P = None
    if prob.P is not None:
        P = prob.P.copy()
        for c in range(prob.n):
            for k in range(P.indptr[c], P.indptr[c + 1]):
                if c == 0 or P.indices[k] == 0:
                    P.data[k] = 0.0
    return ConicProblem(P, q, A, prob.b.copy(), dict(prob.cones))


# --------------------------------------------------------------------------------------------
# Reference solvers
# --------------------------------------------------------------------------------------------


def _clarabel_psd_perm(k: int) -> np.ndarray:
    """SCS svec position -> Clarabel PSDTriangle position (upper triangle, column-major)."""
    perm = []
    for j in range(k):
        for i in range(j, k):
            # SCS lower entry (i, j) == upper entry (j, i), at column i, row j.
            perm.append(i * (i + 1) // 2 + j)
    return np.array(perm)


def clarabel_solve(prob: ConicProblem, tol: float = 1e-10, max_iter: int = 500) -> dict:
    """Solve with Clarabel directly. Returns ``{"x", "y", "s", "status", "obj"}`` (SCS order).

    Status strings follow the native API: optimal, optimal_inaccurate, primal_infeasible,
    dual_infeasible, iteration_limit, other.
    """
    import clarabel

    n, m = prob.n, prob.m
    P = sp.triu(sp.csc_matrix(p_eff(prob.P, n))).tocsc()
    # Row permutation from SCS order to Clarabel order (only PSD blocks differ).
    row_to_clarabel = np.arange(m)
    cones = []
    c = prob.cones
    r = 0
    if c.get("z", 0):
        cones.append(clarabel.ZeroConeT(c["z"]))
        r += c["z"]
    if c.get("l", 0):
        cones.append(clarabel.NonnegativeConeT(c["l"]))
        r += c["l"]
    for d in c.get("q", []):
        cones.append(clarabel.SecondOrderConeT(d))
        r += d
    for k in c.get("s", []):
        cones.append(clarabel.PSDTriangleConeT(k))
        d = k * (k + 1) // 2
        row_to_clarabel[r : r + d] = r + _clarabel_psd_perm(k)
        r += d
    for _ in range(c.get("ep", 0)):
        cones.append(clarabel.ExponentialConeT())
        r += 3
    for a in c.get("p", []):
        cones.append(clarabel.PowerConeT(a))
        r += 3
    inv = np.empty(m, int)
    inv[row_to_clarabel] = np.arange(m)
    A = sp.csc_matrix(prob.A.toarray()[inv])
    b = prob.b[inv]
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = tol
    st.tol_ktratio = 1e-8
    st.max_iter = max_iter
    st.presolve_enable = False
    sol = clarabel.DefaultSolver(P, prob.q, A, b, cones, st).solve()
    status = {
        "Solved": "optimal",
        "AlmostSolved": "optimal_inaccurate",
        "PrimalInfeasible": "primal_infeasible",
        "AlmostPrimalInfeasible": "primal_infeasible",
        "DualInfeasible": "dual_infeasible",
        "AlmostDualInfeasible": "dual_infeasible",
        "MaxIterations": "iteration_limit",
    }.get(str(sol.status), "other")
    y = np.array(sol.z)[row_to_clarabel]
    s = np.array(sol.s)[row_to_clarabel]
    return {"x": np.array(sol.x), "y": y, "s": s, "status": status, "obj": sol.obj_val}


def cvxpy_solve(prob: ConicProblem, tol: float = 1e-10) -> dict:
    """Build the problem in cvxpy (cone by cone) and solve with Clarabel.

    Returns ``{"x", "obj", "status"}``; independent of the row-order bookkeeping above.
    """
    import cvxpy as cp

    n = prob.n
    x = cp.Variable(n)
    e = prob.b - prob.A @ x  # the slack s = b - A x
    cons = []
    c = prob.cones
    r = 0
    if c.get("z", 0):
        cons.append(e[r : r + c["z"]] == 0)
        r += c["z"]
    if c.get("l", 0):
        cons.append(e[r : r + c["l"]] >= 0)
        r += c["l"]
    for d in c.get("q", []):
        cons.append(cp.SOC(e[r], e[r + 1 : r + d]))
        r += d
    for k in c.get("s", []):
        d = k * (k + 1) // 2
        V = cp.Variable((k, k), symmetric=True)
        # svec(V) == e[r:r+d]
        idx = 0
        rows = []
        for j in range(k):
            for i in range(j, k):
                rows.append((V[i, j] if i == j else SQRT2 * V[i, j]) == e[r + idx])
                idx += 1
        cons += rows + [V >> 0]
        r += d
    for _ in range(c.get("ep", 0)):
        cons.append(cp.constraints.ExpCone(e[r], e[r + 1], e[r + 2]))
        r += 3
    for a in c.get("p", []):
        cons.append(cp.PowCone3D(e[r], e[r + 1], e[r + 2], a))
        r += 3
    obj = prob.q @ x
    if prob.P is not None:
        obj = obj + 0.5 * cp.quad_form(x, cp.psd_wrap(p_eff(prob.P, n)))
    pr = cp.Problem(cp.Minimize(obj), cons)
    pr.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=500)
    status = {
        cp.OPTIMAL: "optimal",
        cp.OPTIMAL_INACCURATE: "optimal_inaccurate",
        cp.INFEASIBLE: "primal_infeasible",
        cp.UNBOUNDED: "dual_infeasible",
    }.get(pr.status, pr.status)
    return {"x": None if x.value is None else np.array(x.value), "obj": pr.value, "status": status}


def check_against_clarabel(res_x, prob: ConicProblem, tol: float) -> bool:
    """Compare a solution with Clarabel at 1e-12 when Clarabel itself reaches ``tol`` on the
    known ``x*``; returns whether the comparison ran.

    Clarabel can stop ``AlmostSolved`` ~1e-5 away on problems whose SOC slack and dual
    are both on the boundary; there the constructed ``x*`` is the reference that stands.
    """
    ref = clarabel_solve(prob, tol=1e-12)
    if ref["status"] not in ("optimal", "optimal_inaccurate"):
        return False
    if prob.x_star is not None and rel_err(ref["x"], prob.x_star) > tol:
        return False
    assert rel_err(res_x, ref["x"]) < 2 * tol, (rel_err(res_x, ref["x"]), tol)
    return True


def rel_err(a, b) -> float:
    """``||a - b||_inf / max(1, ||b||_inf)``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))) if a.size else 0.0


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


# Families as (cones, n). With n >= m every face the random (s*, y*) lands on is
# nondegenerate, so y* is unique too (a fair reference for duals and gradients); the LP family
# covers n < m with exactly n active rows.
CONE_SUITE = {
    "lp": None,  # built by random_lp_batch
    "qp": ({"z": 2, "l": 10}, 12),
    "socp": ({"z": 1, "l": 3, "q": [4, 3]}, 11),
    "exp": ({"z": 1, "l": 2, "ep": 3}, 12),
    "power": ({"z": 1, "l": 2, "p": [0.3, 0.6]}, 9),
    "psd": ({"z": 1, "l": 2, "s": [3, 2]}, 12),
    "mixed_soc_exp_pow": ({"l": 3, "q": [3], "ep": 2, "p": [0.5]}, 15),
}


def suite_batch(name: str, batch: int = 4, seed: int = 1) -> ConicBatch:
    """The named problem family of :data:`CONE_SUITE` (one shared structure), or
    "qp_degenerate" (:func:`near_degenerate_qp_batch`, not in the suite's fixtures)."""
    if name == "lp":
        return random_lp_batch(batch=batch, seed=seed)
    if name == "qp_degenerate":
        return near_degenerate_qp_batch(batch=batch, seed=seed)
    cones, n = CONE_SUITE[name]
    return random_problem_batch(cones, n, batch=batch, seed=seed)


@pytest.fixture(params=list(CONE_SUITE))
def cone_family(request):
    """Parametrised over every family in :data:`CONE_SUITE`."""
    return request.param
