"""What solution refinement (pounce_kkt/refine.py) costs on LP/QP forwards, side by side.

    .venv/bin/python benchmarks/refine_cost.py [--repeats 15] [--profile] [--no-layer]

Cases (forward only, float64, one process, A/B interleaved: each repeat runs
``SolveOptions(refine=False)`` and the default in alternating order):
  qp64     B=64 dense QPs, n = m = 50 (P dense positive definite, G dense, h > 0;
           conic_forward, the problem of benchmarks/refine_accuracy.py's cost line)
  layer    the same size through a CvxpyLayer (benchmarks/bench_cvxpylayers.py case (a):
           parameters q, G, h batched), forward only
  lp64     B=64 LPs of testing_helpers' random_lp_batch (n = 8, 2 equalities, 14 rows)
  lp64big  B=64 LPs n = 40, 10 equalities, 60 nonneg rows (random_lp_batch's construction)
Prints per case the median wall and process-CPU ms of each, their ratios, the mean Newton
steps kept and the max residual after, and the load average. ``--profile`` prints cProfile's
top entries of the refinement alone (pounce_kkt.conic._refined) on qp64 and lp64.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pounce_kkt as pk  # noqa: E402
from pounce_kkt.refine import residual  # noqa: E402
from testing_helpers.conic_problems import random_lp_batch  # noqa: E402

B, N, M = 64, 50, 50


def qp64() -> tuple[pk.ConicStructure, list[torch.Tensor | None]]:
    """B=64 dense QPs n = m = 50: P = L L' + 0.1 I, G ~ N(0, 1), h ~ U(0.5, 1.5)."""
    rng = np.random.default_rng(3)
    L = rng.standard_normal((B, N, N)) / np.sqrt(N)
    P = L @ L.transpose(0, 2, 1) + 0.1 * np.eye(N)
    G = rng.standard_normal((B, M, N))
    h = rng.uniform(0.5, 1.5, (B, M))
    q = rng.standard_normal((B, N))
    st = pk.ConicStructure.from_scipy(sp.csc_matrix(np.ones((M, N))), {"l": M},
                                      sp.csc_matrix(np.ones((N, N))))
    return st, [torch.tensor(P.transpose(0, 2, 1).reshape(B, -1)), torch.tensor(q),
                torch.tensor(G.transpose(0, 2, 1).reshape(B, -1)), torch.tensor(h)]


def lp64(**kw) -> tuple[pk.ConicStructure, list[torch.Tensor | None]]:
    """random_lp_batch(batch=64, **kw) as a structure and its values."""
    bt = random_lp_batch(batch=B, **kw)
    st = pk.ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones)
    return st, [None, torch.tensor(bt.q), torch.tensor(bt.a_values), torch.tensor(bt.b)]


def forward_fn(st: pk.ConicStructure, vals: list, refine: bool) -> Callable[[], object]:
    opts = pk.SolveOptions(refine=refine, on_inaccurate="ignore")
    return lambda: pk.conic_forward(st, *vals, opts)[0]


def layer_fns() -> tuple[Callable[[], object], Callable[[], object]]:
    """Forward of bench_cvxpylayers case (a) without / with refinement."""
    import warnings

    from bench_cvxpylayers import qp_problem, qp_values  # noqa: PLC0415
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy  # noqa: F401

    prob, params, variables, _ = qp_problem(N, M)
    layer = CvxpyLayer(prob, params, variables, solver="pounce")
    values = qp_values(N, M, B)

    def run(refine: bool) -> Callable[[], object]:
        # solver_args has no "refine" key: the unrefined run swaps conic._refined for identity.
        def go():
            from pounce_kkt import conic

            orig = conic._refined
            if not refine:
                conic._refined = lambda st, o, v, x, y, s, ok, status: (x, y, s, status)
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    return layer(*values)
            finally:
                conic._refined = orig
        return go

    return run(False), run(True)


def interleaved(off: Callable, on: Callable, repeats: int) -> dict[str, list[float]]:
    """Wall and process-CPU seconds of `off` and `on`, alternating which goes first."""
    off(), on()  # warm-up
    out: dict[str, list[float]] = {"off": [], "on": [], "off_cpu": [], "on_cpu": []}
    for k in range(repeats):
        order = (("off", off), ("on", on)) if k % 2 == 0 else (("on", on), ("off", off))
        for name, fn in order:
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
            out[name + "_cpu"].append(time.process_time() - c0)
    return out


def refined_stats(st: pk.ConicStructure, vals: list) -> tuple[float, float]:
    """(mean Newton steps kept, max residual after) of one refined forward."""
    from pounce_kkt import conic

    seen = {}
    orig = conic.refine

    def spy(*a, **k):
        seen["r"] = r = orig(*a, **k)
        return r

    conic.refine = spy
    try:
        sol = forward_fn(st, vals, True)()
    finally:
        conic.refine = orig
    res = residual(st, *vals, sol.x, sol.y, sol.s)
    return float(seen["r"].steps.double().mean()), float(res.max())


def profile(st: pk.ConicStructure, vals: list, label: str, top: int = 25) -> None:
    """cProfile of the refinement alone (conic._refined) over 5 forwards."""
    from pounce_kkt import conic

    pr = cProfile.Profile()
    orig = conic._refined

    def prof(*a, **k):
        pr.enable()
        try:
            return orig(*a, **k)
        finally:
            pr.disable()

    conic._refined = prof
    try:
        fn = forward_fn(st, vals, True)
        for _ in range(5):
            fn()
    finally:
        conic._refined = orig
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(top)
    print(f"\n--- cProfile of refinement, {label}, 5 forwards ---")
    print(buf.getvalue())


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-layer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the box is shared: intra-op threads only add contention
    print(f"load average before: {_load()}")
    cases: list[tuple[str, Callable, Callable, tuple | None]] = []
    for name, (st, vals) in (("qp64", qp64()), ("lp64", lp64()),
                             ("lp64big", lp64(n=40, z=10, l=60))):
        cases.append((name, forward_fn(st, vals, False), forward_fn(st, vals, True),
                      (st, vals)))
    if not args.no_layer:
        cases.insert(1, ("layer", *layer_fns(), None))
    head = (f"{'case':8} {'off ms':>8} {'on ms':>8} {'ratio':>6} {'off cpu':>8} {'on cpu':>8} "
            f"{'ratio':>6} {'steps':>6} {'res after':>9}")
    print(head)
    print("-" * len(head))
    for name, off, on, data in cases:
        t = interleaved(off, on, args.repeats)
        med = {k: 1e3 * statistics.median(v) for k, v in t.items()}
        steps, res = refined_stats(*data) if data else (float("nan"), float("nan"))
        print(f"{name:8} {med['off']:8.1f} {med['on']:8.1f} {med['on'] / med['off']:6.2f} "
              f"{med['off_cpu']:8.1f} {med['on_cpu']:8.1f} "
              f"{med['on_cpu'] / med['off_cpu']:6.2f} {steps:6.2f} {res:9.1e}")
    print(f"load average after: {_load()}")
    if args.profile:
        profile(*qp64(), "qp64")
        profile(*lp64(), "lp64")


if __name__ == "__main__":
    main()
