"""PounceOptimizer side by side with th.GaussNewton and th.LevenbergMarquardt.

Problems (testing_helpers/theseus_problems.py): the SE2 pose graph (30 poses, inconsistent loop
closure) at B=1 and B=64, and the curve fit y = a exp(b x) at B=64. For each method:

- forward+backward wall time (median over repeats run round robin across the methods,
  after one warm-up), through
  ``TheseusLayer`` with the backward of a fixed random linear loss of the solution;
- final error (mean of ``info.last_err``);
- gradient error: max relative error, over the batch, of d loss / d (one aux input)
  against Richardson central differences through a tightly converged th.GaussNewton.

Theseus' optimizers run with their default backward (unroll) and with backward_mode
"implicit"; PounceOptimizer's backward is always the exact implicit one. All methods run
with one intra-op torch thread (the problems are small; the machine is shared).
Prints a table with the ratios to LevenbergMarquardt (unroll and implicit backward) and
writes benchmarks/out/bench_theseus.png (all problems only).

``--only TEXT`` runs the problems whose label contains TEXT (e.g. ``--only curve``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import theseus as th
import torch

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import (
    central_difference,
    curve_fit,
    pose_graph,
    solve_with,
    tight_gauss_newton,
)

OUT = Path(__file__).resolve().parent / "out"
PROBLEMS = [
    # label, builder, batch, input differentiated (key, index), FD step, timed repeats
    ("pose graph B=1", pose_graph, 1, ("loop_w", (0,)), 1e-2, 9),
    ("pose graph B=64", pose_graph, 64, ("loop_w", (0,)), 1e-2, 7),
    ("curve fit B=64", curve_fit, 64, ("y", (0,)), 1e-3, 41),
]
MAX_IT = 50
METHODS = {
    "Pounce (implicit, exact)": (lambda o: PounceOptimizer(o), {}),
    "GaussNewton (unroll)": (lambda o: th.GaussNewton(o, max_iterations=MAX_IT), {}),
    "GaussNewton (implicit)": (
        lambda o: th.GaussNewton(o, max_iterations=MAX_IT), {"backward_mode": "implicit"}
    ),
    "LevenbergMarquardt (unroll)": (
        lambda o: th.LevenbergMarquardt(o, max_iterations=MAX_IT),
        {"damping": 1e-3, "adaptive_damping": True},
    ),
    "LevenbergMarquardt (implicit)": (
        lambda o: th.LevenbergMarquardt(o, max_iterations=MAX_IT),
        {"damping": 1e-3, "adaptive_damping": True, "backward_mode": "implicit"},
    ),
}
# Ratios are to both: unroll is Theseus' default backward (issue 4's target refers to it),
# implicit its cheaper one-Gauss-Newton-step backward.
REFERENCES = ("LevenbergMarquardt (unroll)", "LevenbergMarquardt (implicit)")


def _loss_weights(sol, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape[1:], generator=g, dtype=v.dtype) for k, v in sol.items()}


def _loss(sol, weights):
    return sum((sol[k] * w).flatten(1).sum(1) for k, w in weights.items())


class _Case:
    """One method on one problem: its own objective, optimizer and inputs."""

    def __init__(self, build, bsz, wrt, make, kwargs, weights):
        self.key, self.index = wrt
        self.obj, self.inputs = build(bsz)
        self.opt, self.kwargs, self.weights = make(self.obj), kwargs, weights
        self.times: list[float] = []
        self.grad = self.info = None

    def run(self, timed: bool) -> None:
        leaf = self.inputs[self.key].clone().requires_grad_(True)
        t0 = time.perf_counter()
        sol, self.info = solve_with(self.opt, {**self.inputs, self.key: leaf}, **self.kwargs)
        (g,) = torch.autograd.grad(_loss(sol, self.weights).sum(), leaf)
        if timed:
            self.times.append(time.perf_counter() - t0)
        self.grad = g[(slice(None), *self.index)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run problems whose label contains this")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows = []
    problems = [p for p in PROBLEMS if args.only in p[0]]
    for label, build, bsz, wrt, h, repeats in problems:
        ref_obj, inputs = build(bsz)
        reference = tight_gauss_newton(ref_obj, max_iterations=30)
        with torch.no_grad():
            sol, _ = solve_with(reference, inputs)
        weights = _loss_weights(sol)

        def ref_loss(inp, reference=reference, weights=weights):
            with torch.no_grad():
                s, _ = solve_with(reference, inp)
            return _loss(s, weights)

        fd = central_difference(ref_loss, inputs, wrt[0], wrt[1], h=h)
        cases = {name: _Case(build, bsz, wrt, make, kwargs, weights)
                 for name, (make, kwargs) in METHODS.items()}
        # round robin, so a change in machine load hits every method alike
        for r in range(1 + repeats):
            for case in cases.values():
                case.run(timed=r > 0)
        for name, case in cases.items():
            t = statistics.median(case.times)
            rel = ((case.grad - fd).abs().max() / fd.abs().max()).item()
            rows.append((label, name, t, case.info.last_err.mean().item(), rel))
            print(f"  {label:16s} {name:30s} {t * 1e3:9.1f} ms", flush=True)

    print()
    hdr = (f"{'problem':16s} {'method':30s} {'fwd+bwd ms':>11s} {'vs LM unr':>10s} "
           f"{'vs LM imp':>10s} {'final err':>16s} {'grad rel err':>13s}")
    print(hdr)
    print("-" * len(hdr))
    for label, name, t, err, rel in rows:
        lm = {ref: next(r[2] for r in rows if r[0] == label and r[1] == ref)
              for ref in REFERENCES}
        print(f"{label:16s} {name:30s} {t * 1e3:11.1f} {t / lm[REFERENCES[0]]:10.2f} "
              f"{t / lm[REFERENCES[1]]:10.2f} {err:16.10e} {rel:13.2e}")
    if len(problems) == len(PROBLEMS):
        _plot(rows)


def _plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r[0] for r in rows))
    names = list(METHODS)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ts = [next(r[2] for r in rows if r[0] == lb and r[1] == name) * 1e3 for lb in labels]
        es = [max(next(r[4] for r in rows if r[0] == lb and r[1] == name), 1e-16)
              for lb in labels]
        xs = [i + k * width for i in range(len(labels))]
        axes[0].bar(xs, ts, width, label=name)
        axes[1].bar(xs, es, width, label=name)
    for ax, title in zip(axes, ["forward+backward time (ms)",
                                "gradient rel. error vs finite differences"], strict=True):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "bench_theseus.png", dpi=120)
    print(f"\nwrote {OUT / 'bench_theseus.png'}")


if __name__ == "__main__":
    main()
