"""Accuracy and cost of the core's solve at tol in {1e-8, 1e-10, 1e-12} (the default's choice).

    .venv/bin/python benchmarks/default_tol_accuracy.py [--batch 8] [--tols 1e-8 1e-10 1e-12]

For the LP, QP, near-degenerate QP (a non-binding row with slack 3e-4..7e-4), SOCP, exp,
power and PSD families of testing_helpers (each item built around a known exact solution
x*, y*), with solution refinement and the active-set backward (the core's defaults; pass
--no-refine for POUNCE's own point), prints per family and tol: the max relative error of
x and y against x* / y* and against Clarabel at 1e-12 (SCS at eps=1e-14 where Clarabel does
not certify), the max relative error of directional gradients (the core's backward at that
tol) against Richardson-extrapolated central differences of tight (tol=1e-12) solves and
of the raw gradient arrays against the backward at tol=1e-12, the mean iteration count and
the median wall time of the batch forward. Relative error: |a - b|_inf / max(1, |b|_inf).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pounce_kkt as pk  # noqa: E402
from testing_helpers.compare import rel_err  # noqa: E402
from testing_helpers.conic_problems import suite_batch  # noqa: E402
from testing_helpers.reference_solvers import clarabel_solve  # noqa: E402

FAMILIES = ["lp", "qp", "qp_degenerate", "socp", "exp", "power", "psd"]
# Central-difference step: the near-degenerate QPs take 1e-6 (their solution map is
# piecewise affine, so no truncation error, and random directions of every input at 1e-5
# already move a 3e-4 slack across its kink), the others 1e-3 (Richardson-extrapolated).
FD_STEP = {"qp_degenerate": 1e-6}
TIGHT = pk.SolveOptions(tol=1e-12, max_iter=500, on_failure="nan", on_inaccurate="ignore")


def _scs_solve(p) -> np.ndarray | None:
    import scs

    data = {"A": p.A, "b": p.b, "c": p.q}
    if p.P is not None:
        data["P"] = p.P
    cones = {k: v for k, v in p.cones.items() if k != "p"}
    if p.cones.get("p"):
        cones["p"] = list(p.cones["p"])
    sol = scs.SCS(data, cones, eps_abs=1e-14, eps_rel=1e-14, max_iters=200_000,
                  acceleration_lookback=0, verbose=False).solve()
    return np.asarray(sol["x"]) if sol["info"]["status"] == "solved" else None


def _reference_x(p) -> tuple[np.ndarray | None, str]:
    ref = clarabel_solve(p, tol=1e-12)
    if ref["status"] == "optimal":
        return ref["x"], "clarabel"
    x = _scs_solve(p)
    return (x, "scs") if x is not None else (None, "none")


def measure(family: str, tols: list[float], batch: int, refine: bool = True) -> list[dict]:
    bt = suite_batch(family, batch=batch)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                           bt.p_indptr, bt.p_indices)
    vals = [None if v is None else torch.tensor(v)
            for v in (bt.p_values, bt.q, bt.a_values, bt.b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refs = [_reference_x(p) for p in bt.problems]
    rng = np.random.default_rng(0)
    g = [torch.tensor(rng.standard_normal((batch, k))) for k in (bt.n, bt.m, bt.m)]
    dirs = [[None if v is None else torch.tensor(rng.standard_normal(v.shape)) for v in vals]
            for _ in range(2)]

    def loss(t, d):
        sol = pk.conic_solve(st, *[None if v is None else v + t * dv
                                   for v, dv in zip(vals, d, strict=True)], TIGHT)
        return ((g[0] * sol.x).sum(1) + (g[1] * sol.y).sum(1) + (g[2] * sol.s).sum(1)).numpy()

    # Central differences of tight (tol=1e-12) solves, Richardson-extrapolated from h and h/2:
    # slow curved-cone items are accurate to ~1e-10 only, so h stays large (noise ~1e-7) and
    # the extrapolation removes the h^2 term.
    h = FD_STEP.get(family, 1e-3)

    def central(d, step):
        return (loss(step, d) - loss(-step, d)) / (2 * step)

    fds = [(4 * central(d, h / 2) - central(d, h)) / 3 for d in dirs]
    _, tight_state = pk.conic_forward(st, *vals, TIGHT)
    tight = pk.conic_vjp(tight_state, *g)
    rows = []
    for tol in tols:
        opts = pk.SolveOptions(tol=tol, on_failure="nan", on_inaccurate="ignore",
                               refine=refine)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            sol, state = pk.conic_forward(st, *vals, opts)
            times.append(time.perf_counter() - t0)
        grads = pk.conic_vjp(state, *g)
        x, y = sol.x.numpy(), sol.y.numpy()
        ex = max(rel_err(x[i], p.x_star) for i, p in enumerate(bt.problems))
        ey = max(rel_err(y[i], p.y_star) for i, p in enumerate(bt.problems))
        eref = max((rel_err(x[i], r) for i, (r, _) in enumerate(refs) if r is not None),
                   default=float("nan"))
        eg = 0.0
        for d, fd in zip(dirs, fds, strict=True):
            an = sum((gi * di).sum(1) for gi, di in zip(grads, d, strict=True)
                     if gi is not None).numpy()
            # an item whose perturbed tight solve failed (NaN) is left out
            eg = max(eg, float(np.nanmax(np.abs(an - fd) / np.maximum(1.0, np.abs(fd)))))
        et = max(rel_err(a[i].numpy(), b[i].numpy()) for a, b in zip(grads, tight, strict=True)
                 if a is not None for i in range(batch))
        rows.append({
            "family": family, "tol": tol, "x_vs_exact": ex, "y_vs_exact": ey,
            "x_vs_ref": eref, "ref": "/".join(sorted({k for _, k in refs})),
            "grad_vs_fd": eg, "grad_vs_tight": et, "iters": float(sol.iterations.double().mean()),
            "time_ms": 1e3 * statistics.median(times),
            "status": ",".join(sorted(set(sol.status))),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-8, 1e-10, 1e-12])
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--no-refine", action="store_true",
                    help="SolveOptions(refine=False) at the measured tols (references keep it)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the box is shared: intra-op threads only add contention
    default = pk.SolveOptions()
    chosen = {f: f"{default.tol_for(pk.ConeDims.from_any(suite_batch(f, batch=1).cones)):g}"
              for f in args.families}
    print(f"default SolveOptions().tol = {default.tol} (per family: {chosen}); "
          f"batch {args.batch}")
    head = (f"{'family':7} {'tol':>6} {'x vs x*':>9} {'y vs y*':>9} {'x vs ref':>9} "
            f"{'grad vs FD':>10} {'vs tight':>9} {'iters':>6} {'ms/batch':>9}  ref / status")
    print(head)
    print("-" * len(head))
    for fam in args.families:
        for r in measure(fam, args.tols, args.batch, refine=not args.no_refine):
            print(f"{r['family']:7} {r['tol']:6.0e} {r['x_vs_exact']:9.1e} {r['y_vs_exact']:9.1e} "
                  f"{r['x_vs_ref']:9.1e} {r['grad_vs_fd']:10.1e} {r['grad_vs_tight']:9.1e} "
                  f"{r['iters']:6.1f} "
                  f"{r['time_ms']:9.2f}  {r['ref']} / {r['status']}")


if __name__ == "__main__":
    main()
