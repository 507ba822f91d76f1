"""Random conic problems in SCS form, each built around a known primal-dual solution.

Every problem is in the core's one convention (docs/design.md)::

    minimize 1/2 x'Px + q'x   s.t.  A x + s = b,  s in K,   dual y in K*,  Px + q + A'y = 0

with ``P`` a FULL symmetric CSC matrix (or None), ``A`` CSC, and cones as the SCS dict
``{"z", "l", "q", "s", "ep", "p"}`` in that row order.

Generators build each problem around a known ``(x*, y*, s*)`` with strict complementarity
(so the solution is unique and the derivative exists), and ``P`` positive definite unless
stated, so ``x*`` is unique. Batches share ONE sparsity structure (the patterns of P and A
are fixed by ``structure_seed``); values and active sets vary per item.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

from testing_helpers.cone_pairs import complementary_pair, face_codim, face_modes
from testing_helpers.svec import smat

CONE_KEYS = ("z", "l", "q", "s", "ep", "p")


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

    def native_problem(self):
        """A new ``pounce_kkt._native.ConicProblem`` of this batch's structure."""
        from pounce_kkt import _native

        return _native.ConicProblem(self.n, self.m, self.p_indptr, self.p_indices,
                                    self.a_indptr, self.a_indices, self.cones)

    def solve_native(self, **opts):
        """Forward through a new ``pounce_kkt._native.ConicProblem`` of this structure."""
        return self.native_problem().solve(self.p_values, self.a_values, self.q, self.b,
                                           **opts)


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


def _random_a(srng, cones: dict, n: int, density: float, seed: int, batch: int):
    """Per item ``(rng, A)``: A's values drawn from ``rng`` (seeded by ``seed``, shared by
    the items in turn) on ONE pattern of the given density drawn from ``srng``."""
    mask = _pattern(srng, cone_rows(cones), n, density, cones.get("z", 0))
    rng = np.random.default_rng(seed)
    for _ in range(batch):
        yield rng, _csc_from_mask(mask, lambda k: rng.standard_normal(k))


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
    problems = []
    for rng, A in _random_a(np.random.default_rng(structure_seed), cones, n, density, seed,
                            batch):
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
    problems = []
    for rng, A in _random_a(np.random.default_rng(structure_seed), cones, n, 0.7, seed, batch):
        x = rng.standard_normal(n)
        active = np.zeros(l, bool)
        active[rng.choice(l, n - z, replace=False)] = True
        s = np.concatenate([np.zeros(z), np.where(active, 0.0, rng.uniform(0.5, 2.0, l))])
        y = np.concatenate([rng.standard_normal(z), np.where(active, rng.uniform(0.5, 2.0, l), 0)])
        b = A @ x + s
        q = -(A.T @ y)
        problems.append(ConicProblem(None, q, A, b, dict(cones), x, y, s))
    return stack_batch(problems)


def near_degenerate_qp_batch(batch: int = 4, n: int = 8, m: int = 12, seed: int = 3) -> ConicBatch:
    """QPs (dense P and A) with a unique solution next to a kink: rows 0..n/2-1 active
    (``s = 0, y > 0``), row n/2 NOT binding with slack 3e-4..7e-4 (``y = 0``), the rest
    inactive with slack O(1). An interior-point adjoint smooths over ~sqrt(tol) and sees the
    near row as partly active (docs/design.md, "The active-set derivative")."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(batch):
        L = rng.standard_normal((n, n)) / math.sqrt(n)
        Pd = L @ L.T + 0.1 * np.eye(n)
        P = _csc_from_mask(np.ones((n, n), bool), lambda k, Pd=Pd: Pd.ravel(order="F"))
        A = _csc_from_mask(np.ones((m, n), bool), lambda k: rng.standard_normal(k))
        x = rng.standard_normal(n)
        s = np.concatenate(
            [np.zeros(n // 2), [rng.uniform(3e-4, 7e-4)], rng.uniform(0.5, 2.0, m - n // 2 - 1)]
        )
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
    problems = []
    for rng, A in _random_a(srng, cones, n, density, seed, batch):
        x = rng.standard_normal(n)
        s, y = complementary_pair(rng, cones, modes)
        problems.append(ConicProblem(None, -(A.T @ y), A, A @ x + s, dict(cones), x, y, s))
    return stack_batch(problems)


def soc_epigraph(p: ConicProblem) -> ConicProblem:
    """The QP ``p`` as a conic LP: min q'x + t s.t. the original constraints and
    (t+1, t-1, sqrt2 L'x) in an SOC (P = L L'), that SOC first among the SOCs (diffcp's
    solvers take no P). Same x* as ``p``."""
    n, m = p.n, p.m
    Pd = 0.5 * (p.P.toarray() + p.P.toarray().T)
    lam, V = np.linalg.eigh(Pd)
    L = V * np.sqrt(np.clip(lam, 0, None))
    c = p.cones
    r0 = c.get("z", 0) + c.get("l", 0)
    A = p.A.toarray()
    soc = np.zeros((n + 2, n + 1))
    soc[0, n] = soc[1, n] = -1.0
    soc[2:, :n] = -math.sqrt(2.0) * L.T
    A_new = np.vstack([np.hstack([A[:r0], np.zeros((r0, 1))]), soc,
                       np.hstack([A[r0:], np.zeros((m - r0, 1))])])
    b_new = np.concatenate([p.b[:r0], [1.0, -1.0], np.zeros(n), p.b[r0:]])
    cones = dict(c)
    cones["q"] = [n + 2] + list(c.get("q", []))
    return ConicProblem(None, np.append(p.q, 1.0), sp.csc_matrix(A_new), b_new, cones)


def _face_codim(kind: str, s: np.ndarray, y: np.ndarray) -> int:
    """Rows of A the cone block pins down at a strictly complementary pair (s, y)."""
    if not np.any(y):
        return 0
    if kind == "s":
        k = int(round((np.sqrt(8 * y.size + 1) - 1) / 2))
        r = int(np.linalg.matrix_rank(smat(y, k), tol=1e-9))
        return r * (r + 1) // 2
    return y.size if not np.any(s) else 1


def linear_cone_program(seed: int, n: int, z: int = 1, q=(), s=(), ep: int = 0, p=(),
                        l_inactive: int = 3):
    """A linear-objective cone program with a unique, strictly complementary solution.

    The non-LP blocks come from :func:`complementary_pair`; nonneg rows are then added so
    that the face of K at s* pins exactly n directions of x (x* and y* unique for a generic A).
    Returns (A, b, c, cone_dict, x*, y*, s*) in SCS form.
    """
    rng = np.random.default_rng(seed)
    blocks = [("q", {"q": [d]}) for d in q] + [("s", {"s": [k]}) for k in s]
    blocks += [("ep", {"ep": 1})] * ep + [("p", {"p": [a]}) for a in p]
    pairs = [complementary_pair(rng, cd) for _, cd in blocks]
    codim = z + sum(_face_codim(kind, si, yi)
                    for (kind, _), (si, yi) in zip(blocks, pairs, strict=True))
    if codim > n:
        raise ValueError("cone blocks pin more than n directions; pick another seed or n")
    l_active = n - codim
    s_l = np.concatenate([np.zeros(l_active), rng.uniform(0.5, 2.0, l_inactive)])
    y_l = np.concatenate([rng.uniform(0.5, 2.0, l_active), np.zeros(l_inactive)])
    perm = rng.permutation(s_l.size)
    s_star = np.concatenate([np.zeros(z), s_l[perm], *(si for si, _ in pairs)])
    y_star = np.concatenate([rng.standard_normal(z), y_l[perm], *(yi for _, yi in pairs)])
    m = s_star.size
    mask = rng.random((m, n)) < 0.6
    mask[np.arange(m), rng.integers(0, n, m)] = True
    A = sp.csc_matrix(np.where(mask, rng.standard_normal((m, n)), 0.0))
    x_star = rng.standard_normal(n)
    cone_dict = {"z": z, "l": s_l.size}
    cone_dict.update({k: v for k, v in (("q", list(q)), ("s", list(s)), ("ep", ep),
                                        ("p", list(p))) if v})
    return A, A @ x_star + s_star, -A.T @ y_star, cone_dict, x_star, y_star, s_star


# Families for linear_cone_program (keyword arguments), compared with diffcp in the tests.
LINEAR_CONE_CASES = {
    "lp": dict(n=6, z=2),
    "socp": dict(n=8, z=1, q=(3, 4)),
    "psd": dict(n=7, z=1, s=(3,)),
    "exp": dict(n=6, z=1, ep=2),
    "socp_psd": dict(n=9, z=0, q=(3,), s=(2,)),
}


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
