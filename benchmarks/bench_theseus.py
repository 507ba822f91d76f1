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
with one intra-op torch thread (the problems are small; the machine is shared; ``--threads N``
sets another count, 0 leaves torch's default).
Prints a table with the ratios to LevenbergMarquardt (unroll and implicit backward) and
writes benchmarks/out/bench_theseus.png (all problems only).

``--only TEXT`` runs the problems whose label contains TEXT (e.g. ``--only curve``).

``--scale`` instead runs SE2 and SE3 pose graphs built as Theseus'
examples/pose_graph/pose_graph_synthetic.py builds them (robust Welsch edge costs, loop
closures with outliers, a weak prior; testing_helpers/theseus_problems.py) at
``--sizes`` poses and ``--batches`` batch sizes: PounceOptimizer against
th.LevenbergMarquardt with th.CholmodSparseSolver (step 1, Theseus' implicit backward,
run to convergence; and with th.CholeskyDenseSolver up to ``--dense-max-poses``), both with
``backward_mode="implicit"`` (PounceOptimizer's: ``--backward-mode``): forward
and backward time (median of ``--repeats`` runs after one warm-up run), ratios
(Pounce / LM, forward+backward), mean iterations, the final error, the gradient of the
example's pose loss w.r.t. ``log_loss_radius`` against central differences through a
tightly converged solve (PounceOptimizer at tol 1e-12; up to ``--fd-max-poses``; LM's
column is Theseus' implicit mode), PounceOptimizer's Hessian callbacks (count and mean
time), the load average, and benchmarks/out/bench_theseus_scale.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import theseus as th
import torch

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp
from testing_helpers.theseus_problems import (
    central_difference,
    curve_fit,
    pose_graph,
    solve_with,
    synthetic_pose_graph,
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
    parser.add_argument("--scale", action="store_true", help="the pose-graph scale table")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--fd-max-poses", type=int, default=200,
                        help="--scale: central-difference gradient check up to this size")
    parser.add_argument("--dense-max-poses", type=int, default=100,
                        help="--scale: LM with th.CholeskyDenseSolver up to this size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for every method (Theseus' default: "
                        "torch's own count, 0 here)")
    parser.add_argument("--backward-mode", default="implicit",
                        choices=["implicit", "unroll", "truncated"],
                        help="--scale: PounceOptimizer's backward_mode (LM stays implicit)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch intra-op threads: {torch.get_num_threads()}")
    if args.scale:
        scale_main(args)
        return
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


class _HessianTimer:
    """Counts and times PounceOptimizer's Hessian evaluations: ``BatchNlp.hessian_values``
    on the autograd path, ``BatchNlp._linearized_hessian`` (a Hessian round) and
    ``BatchNlp._hessian_ahead`` (the Hessians an objective round computes in advance,
    ``BatchNlp.answer_ahead``) on Theseus' linearisation."""

    NAMES = ("hessian_values", "_linearized_hessian", "_hessian_ahead")

    def __init__(self):
        self.times: list[float] = []
        # (an older pounce_theseus on PYTHONPATH, for A/B runs, may lack one)
        self._orig = {name: getattr(BatchNlp, name) for name in self.NAMES
                      if hasattr(BatchNlp, name)}

    def __enter__(self):
        times = self.times

        def wrap(orig):
            def timed(nlp, *a, **k):
                t0 = time.perf_counter()
                out = orig(nlp, *a, **k)
                times.append(time.perf_counter() - t0)
                return out
            return timed

        for name, orig in self._orig.items():
            setattr(BatchNlp, name, wrap(orig))
        return self

    def __exit__(self, *exc):
        for name, orig in self._orig.items():
            setattr(BatchNlp, name, orig)


def _pose_loss(sol, poses, gt_poses, group) -> torch.Tensor:
    """The example's pose loss per element: sum over poses of |local(pose, gt)|."""
    return sum(th.local(group(tensor=sol[p.name]), gt).norm(dim=1)
               for p, gt in zip(poses, gt_poses, strict=True))


def _scale_methods(n: int, dense_max: int, pounce_mode: str = "implicit"):
    methods = {
        # LM in Theseus' implicit mode; PounceOptimizer in ``pounce_mode`` (under "unroll"
        # it also records each iterate's chart point, to differentiate an element that ends
        # unconverged through its steps; a converged one gets the implicit gradient)
        "Pounce": (lambda o: PounceOptimizer(o), {"backward_mode": pounce_mode}),
        "LM+CHOLMOD": (
            lambda o: th.LevenbergMarquardt(o, th.CholmodSparseSolver, max_iterations=100,
                                            step_size=1.0),
            {"backward_mode": "implicit"},
        ),
    }
    if n <= dense_max:
        methods["LM+dense"] = (
            lambda o: th.LevenbergMarquardt(o, th.CholeskyDenseSolver, max_iterations=100,
                                            step_size=1.0),
            {"backward_mode": "implicit"},
        )
    return methods


def _scale_case(dims, n, bsz, repeats, fd_max, dense_max, pounce_mode="implicit"):
    group = th.SE3 if dims == 3 else th.SE2
    _, inputs, _, _ = synthetic_pose_graph(n, bsz, dims=dims)
    cases = {}
    for name, (make, kwargs) in _scale_methods(n, dense_max, pounce_mode).items():
        obj, _, poses, gt_poses = synthetic_pose_graph(n, bsz, dims=dims)
        cases[name] = (th.TheseusLayer(make(obj)), kwargs, poses, gt_poses)
    hess = _HessianTimer()
    out = {name: dict(fwd=[], bwd=[]) for name in cases}

    def run(name: str) -> tuple:
        layer, kwargs, poses, gt_poses = cases[name]
        radius = inputs["log_loss_radius"].clone().requires_grad_(True)
        t0 = time.perf_counter()
        sol, info = layer.forward({**inputs, "log_loss_radius": radius},
                                  optimizer_kwargs=dict(kwargs))
        t1 = time.perf_counter()
        (g,) = torch.autograd.grad(_pose_loss(sol, poses, gt_poses, group).sum(), radius)
        return t1 - t0, time.perf_counter() - t1, g, info

    # one warm-up run each (imports, caches), then the methods round robin, so that a
    # change of the machine's load falls on all of them
    for name in cases:
        run(name)
    for _ in range(repeats):
        for name in cases:
            if name == "Pounce":
                with hess:
                    fwd, bwd, g, info = run(name)
            else:
                fwd, bwd, g, info = run(name)
            out[name]["fwd"].append(fwd)
            out[name]["bwd"].append(bwd)
            out[name]["last"] = (g, info)
    rows = {}
    for name, o in out.items():
        g, info = o["last"]
        calls = len(hess.times) / repeats if name == "Pounce" else 0
        rows[name] = dict(fwd=statistics.median(o["fwd"]), bwd=statistics.median(o["bwd"]),
                          err=info.last_err.mean().item(), grad=g.item(),
                          iters=info.converged_iter.float().mean().item(),
                          hess_calls=calls, hess_ms=1e3 * statistics.mean(hess.times)
                          if hess.times and name == "Pounce" else float("nan"))
    if n > fd_max:
        for r in rows.values():
            r["grad_err"] = r["fd"] = r["ref_err"] = float("nan")
        return rows
    # the reference: central differences through a tightly converged solve (PounceOptimizer
    # at tol 1e-12, forward only: LM+CHOLMOD at 1e-14 tolerances stops short of it, at an
    # error 6e-10 higher on the 100-pose SE3 graph, where the gradient is a small
    # difference of large terms)
    obj, _, poses, gt_poses = synthetic_pose_graph(n, bsz, dims=dims)
    tight = th.TheseusLayer(PounceOptimizer(obj, tol=1e-12, max_iterations=300))

    def loss(inp):
        with torch.no_grad():
            s, _ = tight.forward(dict(inp))
        return _pose_loss(s, poses, gt_poses, group).sum().reshape(1)

    # h = 2e-2 (and 1e-2): the weak prior leaves the graph's gauge resolved to ~1e-6 even at
    # tol 1e-12, so the loss is noisy at ~1e-5 and smaller steps measure that noise (100-pose
    # SE3 graph: -0.0351 at h=3e-2, -0.0348 at 1e-2, -0.0258 at 3e-3, -0.0428 at 1e-3; the
    # implicit gradient at tol 1e-12 is -0.035510)
    fd = central_difference(loss, inputs, "log_loss_radius", (0,), h=2e-2).item()
    with torch.no_grad():
        s, info = tight.forward(dict(inputs))
    for r in rows.values():
        r["grad_err"] = abs(r["grad"] - fd) / max(abs(fd), 1e-300)
        r["ref_err"] = info.last_err.mean().item()
        r["fd"] = fd
    return rows


def scale_main(args) -> None:
    """The pose-graph scale table (see the module docstring)."""
    table = []
    for dims in args.dims:
        for bsz in args.batches:
            for n in args.sizes:
                load0 = os.getloadavg()[0]
                rows = _scale_case(dims, n, bsz, args.repeats, args.fd_max_poses,
                                   args.dense_max_poses, args.backward_mode)
                load1 = os.getloadavg()[0]
                p, lm = rows["Pounce"], rows["LM+CHOLMOD"]
                table.append((dims, n, bsz, p, lm, (load0 + load1) / 2, rows.get("LM+dense")))
                print(f"SE{dims} {n:4d} poses B={bsz}: Pounce fwd {p['fwd']:.2f} s bwd "
                      f"{p['bwd']:.2f} s err {p['err']:.3f} | LM fwd {lm['fwd']:.2f} s bwd "
                      f"{lm['bwd']:.2f} s err {lm['err']:.3f} | load {load0:.1f}", flush=True)
    print()
    hdr = (f"{'graph':6s} {'poses':>5s} {'B':>2s} {'Pounce fwd/bwd s':>17s} "
           f"{'LM fwd/bwd s':>14s} {'ratio':>6s} {'dense':>6s} {'it P/LM':>9s} "
           f"{'err Pounce':>11s} {'err LM':>11s} {'err ref':>11s} {'grad err P':>10s} "
           f"{'grad err LM':>11s} {'H calls':>7s} {'ms/H':>7s} {'load':>5s}  "
           f"dL/dr: Pounce, LM, central diff.")
    print(hdr)
    print("-" * len(hdr))
    for dims, n, bsz, p, lm, load, dense in table:
        ratio = (p["fwd"] + p["bwd"]) / (lm["fwd"] + lm["bwd"])
        dense_ratio = ((p["fwd"] + p["bwd"]) / (dense["fwd"] + dense["bwd"])
                       if dense else float("nan"))
        print(f"SE{dims:<4d} {n:5d} {bsz:2d} {p['fwd']:8.2f}/{p['bwd']:<8.2f} "
              f"{lm['fwd']:6.2f}/{lm['bwd']:<7.2f} {ratio:6.2f} {dense_ratio:6.2f} "
              f"{p['iters']:4.1f}/{lm['iters']:<4.1f} {p['err']:11.3f} "
              f"{lm['err']:11.3f} {p['ref_err']:11.3f} {p['grad_err']:10.1e} "
              f"{lm['grad_err']:11.1e} {p['hess_calls']:7.0f} {p['hess_ms']:7.1f} {load:5.1f}  "
              f"{p['grad']:.6e}, {lm['grad']:.6e}, {p['fd']:.6e}")
    _plot_scale(table)


def _plot_scale(table) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for dims, bsz in sorted({(t[0], t[2]) for t in table}):
        sel = [t for t in table if t[0] == dims and t[2] == bsz]
        ns = [t[1] for t in sel]
        axes[0].plot(ns, [t[3]["fwd"] + t[3]["bwd"] for t in sel], "o-",
                     label=f"Pounce SE{dims} B={bsz}")
        axes[0].plot(ns, [t[4]["fwd"] + t[4]["bwd"] for t in sel], "s--",
                     label=f"LM+CHOLMOD SE{dims} B={bsz}")
        axes[1].plot(ns, [t[3]["hess_ms"] for t in sel], "o-", label=f"SE{dims} B={bsz}")
    axes[0].set_title("forward+backward time (s)")
    axes[1].set_title("PounceOptimizer: ms per Hessian callback")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("poses")
        ax.legend(fontsize=7)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "bench_theseus_scale.png", dpi=120)
    print(f"\nwrote {OUT / 'bench_theseus_scale.png'}")


if __name__ == "__main__":
    main()
