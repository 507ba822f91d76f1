"""Cost of one PounceOptimizer Hessian callback as a pose graph grows.

SE3 (or SE2) pose graphs built as Theseus' pose_graph_synthetic builds them
(testing_helpers/theseus_problems.py), vectorised as ``TheseusLayer`` vectorises them. For
each size: the seeds the Hessian's colouring needs, and the median time of the exact
Hessian (seeded double-backward products: J'J plus the residual curvature) and of the
Gauss-Newton one, evaluated at the starting point, against the time of Theseus' own
linearisation (``th.SparseLinearization``: the cost functions' analytic Jacobians on the
sparse pattern, what LM+CHOLMOD factors each iteration). Prints the load average.

    .venv/bin/python benchmarks/theseus_hessian_cost.py --sizes 50 100 200 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import theseus as th
import torch

from pounce_theseus.batch_nlp import BatchNlp, ProblemStructure
from pounce_theseus.hessian import make_hessian
from testing_helpers.theseus_problems import synthetic_pose_graph


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--dims", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--autograd", action="store_true",
                        help="also time the seeded-product (autograd) Hessians")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'poses':>5s} {'n':>5s} {'seeds':>5s} {'point ms':>9s} {'GN+grad ms':>10s} "
          f"{'exact ms':>9s} {'autograd exact':>14s} {'autograd GN':>11s} "
          f"{'Theseus lin. ms':>15s}")
    for size in args.sizes:
        obj, inputs, _, _ = synthetic_pose_graph(size, 1, dims=args.dims)
        th.Vectorize(obj)
        obj.update(inputs)
        structure = ProblemStructure(obj, [])
        point = np.random.default_rng(0).normal(size=(1, structure.n)) * 0.01
        lin = structure.linearization
        delta = torch.as_tensor(point)
        timings = {
            "point": lambda lin=lin, delta=delta: lin.at(delta),
            "gn": lambda lin=lin, delta=delta: lin.at(delta).gauss_newton(),
            "exact": lambda lin=lin, delta=delta: lin.at(delta).exact(),
        }
        got = {k: _median_time(fn, args.repeats) for k, fn in timings.items()}
        got["gn"] -= got["point"]
        got["exact"] -= got["point"]
        auto = {"exact": float("nan"), "gauss-newton": float("nan")}
        if args.autograd:
            for kind in auto:
                def hessian(kind=kind, structure=structure, point=point):
                    nlp = BatchNlp(structure, make_hessian(kind), [])
                    nlp.hessian_values(nlp.evaluate(point), 1.0, None)

                auto[kind] = _median_time(hessian, args.repeats)
        structure.chart.restore()
        theseus = _median_time(th.SparseLinearization(obj).linearize, args.repeats)
        print(f"{size:5d} {structure.n:5d} {structure.hess.seeds.shape[0]:5d} "
              f"{got['point'] * 1e3:9.1f} {got['gn'] * 1e3:10.1f} {got['exact'] * 1e3:9.1f} "
              f"{auto['exact'] * 1e3:14.1f} {auto['gauss-newton'] * 1e3:11.1f} "
              f"{theseus * 1e3:15.1f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
