"""Soak: a long mixed training-like run, watching memory and threads.

Cycles through small problems, each a forward and a backward:
- CvxpyLayer(solver="pounce") QP (n = 6, box and budget) in float32 and in float64;
- CvxpyLayer(solver="pounce") SOCP (n = 6, a norm ball) in float32 and in float64;
- the diffcp API (pounce_cvxpy.diffcp.solve_and_derivative on a small QP, then DT);
and every 100th solve one Theseus TheseusLayer(PounceOptimizer) optimize with an implicit
backward. Batches of 8, parameters drawn fresh every step (nothing is kept between steps).

Every `--every` solves it prints the process RSS (VmRSS), its OS thread count and Python's
thread count; at the end the RSS growth between solve 2,000 (or the first report past a
fifth of the run) and the last, which should stay under 5% with flat thread counts.

    python benchmarks/soak.py [--solves 10000] [--every 1000]

Measured 2026-11-30 (2 shared cores, commit aa0dbf7, 586 s): RSS 967.1 MB at solve 2,000 and
at 10,000 (+0.01% as printed), 6 OS threads and 1 Python thread throughout (an earlier run,
13 min under heavier load: 966.7 -> 966.8 MB). The same script on the code
before the float64 CvxpyLayer leak was fixed (commit ac5148c) grew 4.8 MB per 500 solves
(+1.98% from solve 1,000 to 3,000, about 24 KB per float64 layer call).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import warnings

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import theseus as th
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy import diffcp
from pounce_theseus import PounceOptimizer

N, BATCH = 6, 8


def _proc_status() -> tuple[float, int]:
    """(RSS in MB, OS threads) of this process, from /proc/self/status."""
    rss = threads = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def _layers() -> dict[str, CvxpyLayer]:
    x, c = cp.Variable(N), cp.Parameter(N)
    qp = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + c @ x),
                    [x >= -1, x <= 1, cp.sum(x) <= 1])
    t = cp.Variable()
    socp = cp.Problem(cp.Minimize(c @ x + 0.1 * t), [cp.norm(x, 2) <= t, t <= 2])
    return {"qp": CvxpyLayer(qp, [c], [x], solver="pounce"),
            "socp": CvxpyLayer(socp, [c], [x], solver="pounce")}


def _layer_step(layer: CvxpyLayer, dtype: torch.dtype, g: torch.Generator) -> None:
    c = torch.randn(BATCH, N, generator=g, dtype=dtype).requires_grad_(True)
    (x,) = layer(c)
    (x * torch.linspace(-1, 1, N, dtype=dtype)).sum().backward()
    assert x.dtype == dtype and bool(torch.isfinite(c.grad).all())


_DIFFCP_A = sp.csc_matrix(np.vstack([np.eye(N), -np.eye(N), np.ones((1, N))]))
_DIFFCP_B = np.r_[np.ones(2 * N), 1.0]
_DIFFCP_P = sp.csc_matrix(np.eye(N))


def _diffcp_step(rng: np.random.Generator) -> None:
    c = rng.standard_normal(N)
    x, y, s, _, DT = diffcp.solve_and_derivative(_DIFFCP_A, _DIFFCP_B, c, {"l": 2 * N + 1},
                                                 P=_DIFFCP_P)
    _, _, dc = DT(np.ones(N), np.zeros(2 * N + 1), np.zeros(2 * N + 1))
    assert np.all(np.isfinite(dc))


def _curve_fit_layer() -> tuple[th.TheseusLayer, dict[str, torch.Tensor]]:
    """y = a exp(b x) fitted to 20 noisy samples, batch 8 (float64)."""
    g = torch.Generator().manual_seed(0)
    xs = torch.linspace(0.0, 1.0, 20, dtype=torch.float64).expand(BATCH, 20).clone()
    ys = 1.5 * torch.exp(-xs) + 0.05 * torch.randn(BATCH, 20, generator=g, dtype=torch.float64)
    a = th.Vector(1, name="a", dtype=torch.float64)
    b = th.Vector(1, name="b", dtype=torch.float64)

    def err(optim_vars, aux_vars):
        return optim_vars[0].tensor * torch.exp(optim_vars[1].tensor * aux_vars[0].tensor) \
            - aux_vars[1].tensor

    obj = th.Objective(dtype=torch.float64)
    weight = th.ScaleCostWeight(th.Variable(torch.ones(1, 1, dtype=torch.float64), name="w"))
    obj.add(th.AutoDiffCostFunction([a, b], err, 20, name="fit", cost_weight=weight,
                                    aux_vars=[th.Variable(xs, name="x"),
                                              th.Variable(ys, name="y")]))
    inputs = {"a": torch.ones(BATCH, 1, dtype=torch.float64),
              "b": torch.zeros(BATCH, 1, dtype=torch.float64), "x": xs, "y": ys}
    return th.TheseusLayer(PounceOptimizer(obj, tol=1e-10)), inputs


def _theseus_step(layer: th.TheseusLayer, inputs: dict[str, torch.Tensor]) -> None:
    y = inputs["y"].clone().requires_grad_(True)
    sol, _ = layer.forward({**inputs, "y": y},
                           optimizer_kwargs={"backward_mode": "implicit"})
    (sol["a"].sum() + sol["b"].sum()).backward()
    assert bool(torch.isfinite(y.grad).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solves", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # e.g. inaccurate items: counted, not printed
    layers = _layers()
    theseus_layer, theseus_inputs = _curve_fit_layer()
    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    kinds = [("qp", torch.float32), ("qp", torch.float64), ("socp", torch.float32),
             ("socp", torch.float64), ("diffcp", None)]
    reports: list[tuple[int, float, int, int]] = []
    start = time.perf_counter()
    print(f"{'solves':>8} {'RSS MB':>9} {'OS threads':>10} {'py threads':>10} {'s':>7}",
          flush=True)
    for i in range(1, args.solves + 1):
        if i % 100 == 0:
            _theseus_step(theseus_layer, theseus_inputs)
        else:
            kind, dtype = kinds[i % len(kinds)]
            if kind == "diffcp":
                _diffcp_step(rng)
            else:
                _layer_step(layers[kind], dtype, g)
        if i % args.every == 0:
            gc.collect()
            rss, threads = _proc_status()
            reports.append((i, rss, threads, threading.active_count()))
            print(f"{i:>8} {rss:>9.1f} {threads:>10} {threading.active_count():>10} "
                  f"{time.perf_counter() - start:>7.1f}", flush=True)
    if len(reports) >= 2:
        base = next((r for r in reports if r[0] >= min(2_000, args.solves // 5)), reports[0])
        last = reports[-1]
        growth = (last[1] - base[1]) / base[1]
        print(f"RSS growth from solve {base[0]} to {last[0]}: {100 * growth:+.2f}% "
              f"({base[1]:.1f} -> {last[1]:.1f} MB; target < 5%); OS threads "
              f"{min(r[2] for r in reports)}..{max(r[2] for r in reports)}, Python threads "
              f"{min(r[3] for r in reports)}..{max(r[3] for r in reports)}")


if __name__ == "__main__":
    main()
