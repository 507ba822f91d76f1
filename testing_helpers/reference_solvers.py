"""Reference solutions of :class:`~testing_helpers.conic_problems.ConicProblem`: Clarabel
called directly (same ``A x + s = b`` form), and the problem rebuilt cone by cone in cvxpy
and solved with Clarabel (an independent check of the row-order conventions); and the
closed-form sparsemax with its Jacobian, the reference of the sparsemax layer."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from testing_helpers.compare import rel_err
from testing_helpers.conic_problems import ConicProblem, p_eff
from testing_helpers.svec import SQRT2


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


def sparsemax(z):
    """Sparsemax (Martins & Astudillo 2016): max(z - tau, 0) with the threshold tau that
    makes it sum to 1."""
    u = torch.sort(z, dim=-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    c = u.cumsum(-1)
    size = ((u - (c - 1) / k) > 0).sum(-1, keepdim=True)
    tau = (c.gather(-1, size - 1) - 1) / size
    return torch.clamp(z - tau, min=0.0)


def sparsemax_jacobian_vjp(p, g):
    """Sparsemax's J'g: with S the support of p, J = diag(1_S) - 1_S 1_S' / |S|."""
    S = (p > 0).to(p.dtype)
    return S * (g - (S * g).sum(-1, keepdim=True) / S.sum(-1, keepdim=True))
