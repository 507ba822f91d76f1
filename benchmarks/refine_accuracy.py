"""Accuracy and cost of solution refinement (pounce_kkt/refine.py), per cone family.

    .venv/bin/python benchmarks/refine_accuracy.py [--batch 8] [--qp-repeats 7]

For each family, at the default tol, solves the batch with ``SolveOptions(refine=False)``
(POUNCE's point) and with refinement, and prints the max relative error
``|a - b|_inf / max(1, |b|_inf)`` of x and y against the known exact solution (x*, y*, the
families are built around one) and against Clarabel at 1e-12 on the same SCS data, the
refinement residual (max), POUNCE's mean iterations, the mean Newton steps refinement keeps
(on the row without it: the steps it takes from that point), the statuses and the median
forward time. Families: the testing_helpers/conic_problems.py suite (LP, QP, SOCP, exp, power, PSD,
SOC+exp+power), the SOC+exp epigraph fixture of tests/test_conic_backward.py, the PSD+SOC
problem of tests/test_diffcp_compat.py (socp_psd, seeds 0 and 1, one item each) and an
l2-regularised logistic regression built by cvxpy (exp + SOC, SCS data from
get_problem_data).
Then the cost on B=64 dense QPs with n = m = 50 (forward only, median of repeats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pounce_kkt as pk  # noqa: E402
from pounce_kkt.conic import _kkt_vjp  # noqa: E402
from pounce_kkt.refine import refine, residual  # noqa: E402
from testing_helpers.compare import rel_err  # noqa: E402
from testing_helpers.conic_problems import (  # noqa: E402
    LINEAR_CONE_CASES,
    ConicProblem,
    linear_cone_program,
    soc_epigraph,
    stack_batch,
    suite_batch,
)
from testing_helpers.reference_solvers import clarabel_solve  # noqa: E402

SUITE = ["lp", "qp", "socp", "exp", "power", "psd", "mixed_soc_exp_pow"]


def _epigraph_exp(batch: int):
    return stack_batch([soc_epigraph(p) for p in suite_batch("exp", batch=batch).problems])


def _socp_psd(seed: int):
    A, b, c, cd, xs, ys, ss = linear_cone_program(seed, **LINEAR_CONE_CASES["socp_psd"])
    return [ConicProblem(None, c, sp.csc_matrix(A), b, cd, xs, ys, ss)]


def _logistic(batch: int):
    import cvxpy as cp

    rng = np.random.default_rng(0)
    probs = []
    for _ in range(batch):
        X = rng.standard_normal((12, 4))
        yl = np.sign(rng.standard_normal(12))
        beta = cp.Variable(4)
        loss = cp.sum(cp.logistic(-cp.multiply(yl, X @ beta)))
        prob = cp.Problem(cp.Minimize(loss + 0.5 * cp.norm(beta, 2)))
        data, _, _ = prob.get_problem_data(cp.SCS)
        cones = pk.ConeDims.from_any(data["dims"]).to_dict()
        probs.append(ConicProblem(None, data["c"], sp.csc_matrix(data["A"]), data["b"], cones))
    return probs


def _structure_values(problems):
    bt = stack_batch(problems)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [None if v is None else torch.tensor(v)
            for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    return st, vals


def measure(name: str, problems: list) -> list[dict]:
    st, vals = _structure_values(problems)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refs = [clarabel_solve(p, tol=1e-12) for p in problems]
    rows = []
    for refined in (False, True):
        opts = pk.SolveOptions(refine=refined, on_failure="nan", on_inaccurate="ignore")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            sol, _ = pk.conic_forward(st, *vals, opts)
            times.append(time.perf_counter() - t0)
        x, y, s = sol.x, sol.y, sol.s
        res = residual(st, *[None if v is None else v for v in vals], x, y, s)

        def worst(pairs):
            errs = [rel_err(a, b) for a, b in pairs if b is not None]
            return max(errs) if errs else float("nan")

        exact = worst((np.concatenate([x[i], y[i]]), None if p.x_star is None
                       else np.concatenate([p.x_star, p.y_star]))
                      for i, p in enumerate(problems))
        vs_ref = worst((np.concatenate([x[i], y[i]]), np.concatenate([r["x"], r["y"]])
                        if r["status"] == "optimal" else None) for i, r in enumerate(refs))
        steps = float("nan")
        if not refined:  # the refinement alone, from this point: its Newton steps
            steps = _steps(st, opts, vals, sol)
        rows.append({"name": name, "refine": refined, "exact": exact, "ref": vs_ref,
                     "steps": steps,
                     "res": float(np.nanmax(res.numpy())), "ms": 1e3 * statistics.median(times),
                     "status": ",".join(sorted(set(sol.status))),
                     "iters": float(sol.iterations.double().mean())})
    return rows


def _steps(st, opts, vals, sol) -> float:
    """Mean Newton steps refinement keeps from the unrefined solution `sol`."""
    P, q, A, b = vals
    path = opts.backward_path(st.n + st.m, create_graph=False)
    ok = torch.tensor([s_ in ("optimal", "optimal_inaccurate") for s_ in sol.status])

    def solve(x, y, s, rx, ry, items):
        _, dq, _, db = _kkt_vjp(st, path, P, A, x, y, s, items, rx, ry, None)
        return -dq, db

    r = refine(st, P, q, A, b, sol.x, sol.y, sol.s, ok, solve)
    return float(r.steps.double().mean())


def qp_cost(repeats: int) -> tuple[float, float, float]:
    """Median forward ms of B=64 dense QPs (n = m = 50), without and with refinement."""
    rng = np.random.default_rng(3)
    B, n, m = 64, 50, 50
    L = rng.standard_normal((B, n, n)) / np.sqrt(n)
    P = L @ L.transpose(0, 2, 1) + 0.1 * np.eye(n)
    G = rng.standard_normal((B, m, n))
    h = rng.uniform(0.5, 1.5, (B, m))
    q = rng.standard_normal((B, n))
    full = sp.csc_matrix(np.ones((n, n)))
    st = pk.ConicStructure.from_scipy(sp.csc_matrix(np.ones((m, n))), {"l": m}, full)
    pv = torch.tensor(P.transpose(0, 2, 1).reshape(B, -1))
    av = torch.tensor(G.transpose(0, 2, 1).reshape(B, -1))
    out = {}
    for refined in (False, True, False, True):
        opts = pk.SolveOptions(refine=refined)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sol, _ = pk.conic_forward(st, pv, torch.tensor(q), av, torch.tensor(h), opts)
            ts.append(time.perf_counter() - t0)
        out.setdefault(refined, []).extend(ts)
    res = residual(st, pv, torch.tensor(q), av, torch.tensor(h), sol.x, sol.y, sol.s)
    return (1e3 * statistics.median(out[False]), 1e3 * statistics.median(out[True]),
            float(res.max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--qp-repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the box is shared: intra-op threads only add contention
    cases = [(f, suite_batch(f, batch=args.batch).problems) for f in SUITE]
    cases += [("soc_exp_epigraph", _epigraph_exp(args.batch).problems),
              ("socp_psd_diffcp_0", _socp_psd(0)), ("socp_psd_diffcp_1", _socp_psd(1)),
              ("logistic_l2", _logistic(args.batch))]
    head = (f"{'family':18} {'refine':>6} {'vs x*,y*':>9} {'vs clarabel':>11} {'residual':>9} "
            f"{'iters':>6} {'steps':>5} {'ms/batch':>9}  status")
    print(head)
    print("-" * len(head))
    for name, problems in cases:
        for r in measure(name, problems):
            print(f"{r['name']:18} {'yes' if r['refine'] else 'no':>6} {r['exact']:9.1e} "
                  f"{r['ref']:11.1e} {r['res']:9.1e} {r['iters']:6.1f} {r['steps']:5.1f} "
                  f"{r['ms']:9.1f}  "
                  f"{r['status']}")
    off, on, res = qp_cost(args.qp_repeats)
    print(f"\nB=64 dense QPs n=m=50, forward: {off:.1f} ms without refinement, {on:.1f} ms "
          f"with ({100 * (on / off - 1):+.1f}%); max residual after: {res:.1e}")


if __name__ == "__main__":
    main()
