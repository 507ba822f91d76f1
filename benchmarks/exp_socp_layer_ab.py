"""The bench_peers SOCP and exp-cone layers (B = 64, fwd+bwd through `CvxpyLayer` with
solver="pounce") on this build's native handle and on another build's, in one process.

The second layer's structure builds its handle from the other `_native.abi3.so`
(pounce_kkt.structure's module attribute `_native`, swapped only while that layer makes its
first call, which builds and caches the handle). Interleaved calls; prints medians, the
ratio and the largest difference in x and in the gradients between the two builds (last
call). ``--warm``: the exp cases with warm_start=True, parameters moving 1% per call.

    PYTHONPATH=/work/wt-exp /work/benchvenv/bin/python benchmarks/exp_socp_layer_ab.py \
        --against /tmp/main_native.abi3.so [--repeats 7] [--warm]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers as bp  # noqa: E402

import pounce_cvxpy  # noqa: E402, F401  (registers solver="pounce")
import pounce_kkt.structure as structure  # noqa: E402


def _load_native(path: str):
    name = "exp_socp_layer_ab._native"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def runner(case: bp.Case, warm: bool = False):
    """fwd+bwd of the case's layer; with `warm`, solver_args warm_start=True and each call's
    parameters moved by 1% (relative, seeded) from the previous call's, as in training."""
    from cvxpylayers.torch import CvxpyLayer

    prob, params, var = case.build()
    args = {"warm_start": True} if warm else {}
    layer = CvxpyLayer(prob, params, [var], solver="pounce", solver_args=args)
    base = [torch.tensor(v) for v in case.values]
    w = torch.tensor(np.random.default_rng(0).standard_normal((case.batch, var.size)))
    state = {"k": 0}

    def run():
        if warm:
            state["k"] += 1
            r = np.random.default_rng(state["k"])
            for p in base:
                p += 0.01 * p.abs().mean() * torch.tensor(r.standard_normal(p.shape))
        ps = [p.clone().requires_grad_(True) for p in base]
        (x,) = layer(*ps)
        (x.reshape(case.batch, -1) * w).sum().backward()
        return x.detach().numpy(), [p.grad.numpy() for p in ps]

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warm", action="store_true",
                    help="warm_start=True, parameters moving 1%% per call (exp cases only)")
    a = ap.parse_args()
    other = _load_native(a.against)
    torch.set_num_threads(2)
    print(f"{'case':<36} {'this ms':>8} {'other ms':>8} {'this/other':>10} "
          f"{'max|dx|':>8} {'max|dgrad|':>10}")
    cases = [bp.logreg_case(), bp.softmax_case()]
    if not a.warm:
        cases.insert(0, bp.socp_case())
    for case in cases:
        mine = runner(case, a.warm)
        x1, g1 = mine()
        own = structure._native
        structure._native = other
        try:
            theirs = runner(case, a.warm)
            x2, g2 = theirs()
        finally:
            structure._native = own
        t1, t2 = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            x1, g1 = mine()
            t1.append(time.perf_counter() - t)
            t = time.perf_counter()
            x2, g2 = theirs()
            t2.append(time.perf_counter() - t)
        m1, m2 = statistics.median(t1) * 1e3, statistics.median(t2) * 1e3
        dg = max(float(np.max(np.abs(u - v))) for u, v in zip(g1, g2, strict=True))
        print(f"{case.label:<36} {m1:>8.1f} {m2:>8.1f} {m1 / m2:>10.2f} "
              f"{float(np.max(np.abs(x1 - x2))):>8.1e} {dg:>10.1e}")


if __name__ == "__main__":
    main()
