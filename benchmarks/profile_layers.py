"""Where the time of a fwd+bwd through our QP layers goes: stage timers, one process.

    .venv/bin/python benchmarks/profile_layers.py [--repeats 7] [--only qp64,qp1024]
        [--paths cvxpylayer,qpfunction] [--solver-args JSON] [--cprofile]

Cases: bench_peers.py's `qp64` (B=64 QPs n=m=50, parameters q, G, h; Q fixed), `qp1024`
(B=1024 QPs n=m=10) and, with `--only qp1`, its single QP n=m=50; each through
`CvxpyLayer(..., solver="pounce")` and through the qpth-compatible
`pounce_cvxpy.qpth.QPFunction`, with loss sum(w * x) and backward().

Each stage is timed by wrapping the function that owns it (inclusive wall time, summed
per call; a stage entered inside another is listed under it):

  total              fwd+bwd wall of one run (instrumented): the median over the timed
                     runs, and the mean, which the stages' means (printed) add up to
  cvxpylayers fwd    CvxpyLayer.forward minus PounceSolver.solve_torch_batch and set_params:
                     cvxpylayers' parameter stacking, its scipy `P/q/A @ params` products,
                     the autograd Function, the variable recovery
  set_params         our parameter checks (finite, real) and dtype note
  adapter fwd / bwd  solve_torch_batch minus conic_forward (to_core: [A_c|b] -> A, b;
                     options); derivative_torch_batch minus conic_vjp (to_layers)
  qpth glue          QPFunction's argument checks, stacking, Q's Cholesky check (the part
                     of qpth._solve outside conic_solve)
  prepare            pounce_kkt.conic._prepare (checks, casts, broadcast)
  native solve       the native batch call's wall time (pounce_kkt.conic._native_solve);
                     beside it "per-item IPM": the sum of the per-item solve_time the native
                     side reports, divided by min(pool threads, B), i.e. the busy time
                     of the IPMs themselves; "native fixed" = native wall - that
  refine             pounce_kkt.refine.refine (its KKT solves included: "refine KKT")
  checked info       pounce_kkt.conic._checked_info (inaccurate items' residuals)
  backward KKT       the backward's adjoint: dense Torch (dense_kkt_vjp) or native sparse
                     (pounce_kkt.conic._native_adjoint), outside the refinement
  cvxpylayers bwd    autograd's backward minus derivative_torch_batch (scipy transpose
                     products back to the parameters)
  rest               total minus every listed top-level stage (autograd bookkeeping, the
                     loss, the other Python between the stages)

The timers add a few microseconds per wrapped call (tens of calls per run). `--cprofile`
also prints cProfile's top functions by own time for one run of each row. The load average
and torch's thread count are printed: read the numbers together with them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import qp_case  # noqa: E402

import pounce_cvxpy  # noqa: E402,F401  (registers "pounce")
import pounce_cvxpy.qpth as our_qpth  # noqa: E402
import pounce_cvxpy.solver_interface as si  # noqa: E402
from pounce_kkt import conic, torch_threads  # noqa: E402

CASES = {
    "qp64": lambda: qp_case("qp64", "B=64 QPs n=m=50", 50, 50, 64),
    "qp1024": lambda: qp_case("qp1024", "B=1024 QPs n=m=10", 10, 10, 1024),
    "qp1": lambda: qp_case("qp1", "B=1 QP n=m=50", 50, 50, 1),
}


class Timers:
    """Inclusive wall time per stage; a stage entered inside 'refine' is keyed 'refine/...'."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.item_time = 0.0  # sum of the native per-item solve_time

    def reset(self) -> None:
        self.t.clear()
        self.item_time = 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        key = f"refine/{name}" if "refine" in self.stack and name != "refine" else name
        self.stack.append(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[key] += time.perf_counter() - t0
            self.stack.pop()


TIMERS = Timers()


def _wrap(owner: object, attr: str, name: str, static: bool = False) -> None:
    fn = getattr(owner, attr)
    if static:
        fn = owner.__dict__[attr].__func__

    def timed(*a, **k):
        with TIMERS.stage(name):
            return fn(*a, **k)

    setattr(owner, attr, staticmethod(timed) if static else timed)


def _wrap_native(attr: str, name: str) -> None:
    """Time conic.py's native seam `attr` (one native batch call), noting per-item times."""
    fn = getattr(conic, attr)

    def timed(*a, **k):
        with TIMERS.stage(name):
            out = fn(*a, **k)
        if "solve_time" in out:
            TIMERS.item_time += float(np.sum(np.asarray(out["solve_time"])))
        return out

    setattr(conic, attr, timed)


def instrument() -> None:
    """Wrap the stage functions (module attributes, so every caller sees the timed one)."""
    _wrap(si.PounceSolver, "solve_torch_batch", "solve_torch_batch")
    _wrap(si.PounceSolver, "derivative_torch_batch", "derivative_torch_batch")
    _wrap(si.PounceSolver, "set_params", "set_params")
    _wrap(si, "conic_forward", "conic_forward")
    _wrap(si, "conic_vjp", "conic_vjp")
    _wrap(our_qpth, "conic_solve", "conic_solve")
    _wrap(conic, "_prepare", "prepare")
    _wrap(conic, "refine", "refine")
    _wrap(conic, "_checked_info", "checked info")
    _wrap(conic, "dense_kkt_vjp", "dense_kkt_vjp")
    _wrap(conic._ConicSolveFunction, "backward", "autograd backward (ours)", static=True)
    _wrap_native("_native_solve", "native conic_solve_batch")
    _wrap_native("_native_adjoint", "native kkt_adjoint_batch")


def _pool_threads() -> int:
    env = os.environ.get("RAYON_NUM_THREADS")
    return int(env) if env else (os.cpu_count() or 1)


def make_runner(case, path: str, solver_args: dict) -> tuple[Callable[[], None], Callable]:
    """(run, layer_call) for one case and path; run() does fwd+bwd, timed as 'total'."""
    base = [torch.tensor(v, dtype=torch.float64) for v in case.values]
    n = case.values[0].shape[1]  # q's size: the QP's variables
    w = torch.tensor(np.random.default_rng(7).standard_normal((case.batch, n)))
    if path == "cvxpylayer":
        from cvxpylayers.torch import CvxpyLayer

        prob, params, var = case.build()
        layer = CvxpyLayer(prob, params, [var], solver="pounce")
        kwargs = {"solver_args": dict(solver_args)} if solver_args else {}

        def fwd(ps):
            with TIMERS.stage("CvxpyLayer.forward"):
                (x,) = layer(*ps, **kwargs)
            return x
    else:
        fn = our_qpth.QPFunction()
        empty = torch.empty(0, dtype=torch.float64)

        def fwd(ps):
            with TIMERS.stage("QPFunction call"):
                Q, p, G, h = case.qp_torch(ps)
                return fn(Q, p, G, h, empty, empty)

    def run() -> None:
        with TIMERS.stage("total"):
            ps = [p.clone().requires_grad_(True) for p in base]
            x = fwd(ps)
            loss = (x.reshape(case.batch, -1) * w).sum()
            with TIMERS.stage("backward()"):
                loss.backward()

    return run, fwd


def breakdown(t: dict[str, float], item_time: float, threads: int, path: str
              ) -> list[tuple[str, float]]:
    """Exclusive stage times (seconds) from the inclusive timers, in call order."""
    g = lambda k: t.get(k, 0.0)  # noqa: E731
    native = g("native conic_solve_batch")
    busy = item_time / threads
    refine_kkt = g("refine/dense_kkt_vjp") + g("refine/native kkt_adjoint_batch")
    bwd_kkt = g("dense_kkt_vjp") + g("native kkt_adjoint_batch")
    rows: list[tuple[str, float]] = []
    if path == "cvxpylayer":
        rows.append(("cvxpylayers fwd", g("CvxpyLayer.forward") - g("solve_torch_batch")
                     - g("set_params")))
        rows.append(("set_params", g("set_params")))
        rows.append(("adapter fwd (to_core, options)", g("solve_torch_batch")
                     - g("conic_forward")))
        fwd_core = g("conic_forward")
    else:
        rows.append(("qpth glue (checks, stacking, SPD check)", g("QPFunction call")
                     - g("conic_solve")))
        fwd_core = g("conic_solve")
    rows += [
        ("prepare", g("prepare")),
        ("native solve: per-item IPM (sum/threads)", min(busy, native)),
        ("native solve: fixed (wall - per-item)", max(native - busy, 0.0)),
        ("refine: KKT solves", refine_kkt),
        ("refine: rest", g("refine") - refine_kkt),
        ("checked info", g("checked info")),
        ("forward: other core Python", fwd_core - g("prepare") - native - g("refine")
         - g("checked info")),
    ]
    if path == "cvxpylayer":
        bwd_core = g("conic_vjp")
        rows += [("backward KKT (" + ("dense" if g("dense_kkt_vjp") else "native sparse") + ")",
                  bwd_kkt),
                 ("backward: other core Python", bwd_core - bwd_kkt),
                 ("adapter bwd (to_layers)", g("derivative_torch_batch") - bwd_core),
                 ("cvxpylayers bwd", g("backward()") - g("derivative_torch_batch"))]
    else:
        bwd_core = g("autograd backward (ours)")
        rows += [("backward KKT (" + ("dense" if g("dense_kkt_vjp") else "native sparse") + ")",
                  bwd_kkt),
                 ("backward: other core Python", bwd_core - bwd_kkt),
                 ("autograd bwd outside ours", g("backward()") - bwd_core)]
    rows.append(("rest", g("total") - sum(v for _, v in rows)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default="qp64,qp1024")
    ap.add_argument("--paths", default="cvxpylayer,qpfunction")
    ap.add_argument("--solver-args", default="{}", help="JSON solver_args for the CvxpyLayer")
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--torch-serial", default="on", choices=("on", "off", "ab"),
                    help="pounce_kkt.torch_threads.serial_torch on, off, or both interleaved")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--json", default="", help="write the medians to this JSON file")
    a = ap.parse_args()
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    instrument()
    threads = _pool_threads()
    load0 = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, native pool threads {threads}, "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start")
    results = {}
    for key in [k.strip() for k in a.only.split(",") if k.strip()]:
        case = CASES[key]()
        for path in [p.strip() for p in a.paths.split(",") if p.strip()]:
            run, _ = make_runner(case, path, json.loads(a.solver_args))
            run()  # warm-up (caches, pools)
            # serial: pounce_kkt.torch_threads.ENABLED per setting, interleaved run by run
            settings = {"on": [True], "off": [False], "ab": [True, False]}[a.torch_serial]
            per_run: dict[bool, list[list[tuple[str, float]]]] = {s_: [] for s_ in settings}
            for _ in range(a.repeats):
                for serial in settings:
                    torch_threads.ENABLED = serial
                    TIMERS.reset()
                    run()
                    busy_threads = min(threads, case.batch)  # B=1 keeps one thread busy
                    per_run[serial].append(breakdown(TIMERS.t, TIMERS.item_time, busy_threads,
                                                     path)
                                           + [("total", TIMERS.t["total"])])
            torch_threads.ENABLED = True
            for serial, runs in per_run.items():
                names = [n for n, _ in runs[0]]
                # stage means add up to the mean total; the median total is printed beside it
                mean = {n: statistics.fmean(r[i][1] for r in runs) for i, n in enumerate(names)}
                med = statistics.median(r[-1][1] for r in runs)
                total = mean["total"]
                print(f"\n== {key} ({case.label}), {path}, serial_torch {serial}: total median "
                      f"{med * 1e3:.1f} ms, mean {total * 1e3:.1f} ms over {a.repeats} runs "
                      f"(per item {med / case.batch * 1e3:.3f} ms)")
                for n in names[:-1]:
                    print(f"  {n:45s} {mean[n] * 1e3:9.2f} ms  {100 * mean[n] / total:5.1f}%")
                mean["total median"] = med
                results[f"{key}/{path}/serial={serial}"] = mean
            if a.cprofile:
                prof = cProfile.Profile()
                prof.enable()
                run()
                prof.disable()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
                lines = buf.getvalue().splitlines()
                start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
                print("  --- cProfile, one run, by own time ---")
                print("\n".join("  " + ln for ln in lines[start:start + 19]))
    load1 = os.getloadavg()
    print(f"\nload average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end")
    if a.json:
        Path(a.json).write_text(json.dumps({"load": [load0, load1], "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
