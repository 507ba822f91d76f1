"""The bench_peers SOCP and exp-cone layers (B = 64, fwd+bwd through `CvxpyLayer` with
solver="pounce") on this build's native handle and on another build's, in one process.

The second layer's structure builds its handle from the other `_native.abi3.so`
(pounce_kkt.structure's module attribute `_native`, swapped only while that layer makes its
first call, which builds and caches the handle). Interleaved calls; prints medians, the
ratio and the largest difference in x and in the gradients between the two builds.

    PYTHONPATH=/work/wt-exp /work/benchvenv/bin/python benchmarks/exp_socp_layer_ab.py \
        --against /tmp/main_native.abi3.so [--repeats 7]
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


def runner(case: bp.Case):
    from cvxpylayers.torch import CvxpyLayer

    prob, params, var = case.build()
    layer = CvxpyLayer(prob, params, [var], solver="pounce")
    base = [torch.tensor(v) for v in case.values]
    w = torch.tensor(np.random.default_rng(0).standard_normal((case.batch, var.size)))

    def run():
        ps = [p.clone().requires_grad_(True) for p in base]
        (x,) = layer(*ps)
        (x.reshape(case.batch, -1) * w).sum().backward()
        return x.detach().numpy(), [p.grad.numpy() for p in ps]

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    other = _load_native(a.against)
    torch.set_num_threads(2)
    print(f"{'case':<36} {'this ms':>8} {'other ms':>8} {'this/other':>10} "
          f"{'max|dx|':>8} {'max|dgrad|':>10}")
    for case in (bp.socp_case(), bp.logreg_case(), bp.softmax_case()):
        mine = runner(case)
        x1, g1 = mine()
        own = structure._native
        structure._native = other
        try:
            theirs = runner(case)
            x2, g2 = theirs()
        finally:
            structure._native = own
        t1, t2 = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            mine()
            t1.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs()
            t2.append(time.perf_counter() - t)
        m1, m2 = statistics.median(t1) * 1e3, statistics.median(t2) * 1e3
        dg = max(float(np.max(np.abs(u - v))) for u, v in zip(g1, g2, strict=True))
        print(f"{case.label:<36} {m1:>8.1f} {m2:>8.1f} {m1 / m2:>10.2f} "
              f"{float(np.max(np.abs(x1 - x2))):>8.1e} {dg:>10.1e}")


if __name__ == "__main__":
    main()
