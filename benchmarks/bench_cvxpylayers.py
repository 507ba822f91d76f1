"""CvxpyLayer with solver="pounce" side by side with cvxpylayers' default (diffcp), one run.

    .venv/bin/python benchmarks/bench_cvxpylayers.py [--repeats 5] [--profile]
                     [--pounce-wheel-site DIR]

Cases (forward + backward of sum(x * w), median wall time over --repeats):
  (a)  B=64 QPs, n=50, m=50, parameters q, G, h (G batched)
  (a') the same with G shared across the batch, where POUNCE's own wheel layer
       `pounce.torch.solve_qp_batch` (pounce-solver, NOT a project dependency) also runs
  (b)  one QP, n=500, m=500 (and the time to build each layer)
  (c)  B=64 SOCP and exp-cone layers
The wheel column is skipped with a note unless `import pounce.torch` works (install it
for the benchmark only, e.g. `pip install --no-deps --target DIR pounce-solver==0.13.0`
and pass `--pounce-wheel-site DIR`). `--profile` prints cProfile's top entries for (a).
Prints a table and writes benchmarks/out/bench_cvxpylayers.png.
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
import warnings
from collections.abc import Callable
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")

OUT = Path(__file__).resolve().parent / "out"
DIFFCP_ARGS: dict = {}  # cvxpylayers' defaults, as its users run it


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (first-call allocations, thread pools)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _fwd_bwd(layer: CvxpyLayer, params: list[torch.Tensor], solver_args: dict) -> Callable:
    def run() -> None:
        ps = [p.detach().clone().requires_grad_(True) for p in params]
        out = layer(*ps, solver_args=solver_args)
        sum((o * o).sum() for o in out).backward()

    return run


def qp_problem(n: int, m: int, shared_G: bool = False):
    """min 1/2 x'Qx + q'x  s.t.  G x <= h, Q fixed positive definite."""
    r = np.random.default_rng(0)
    M = r.standard_normal((n, n))
    Q = M @ M.T / n + np.eye(n)
    x = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [G @ x <= h])
    return prob, [q, G, h], [x], Q


def qp_values(n: int, m: int, batch: int | None, shared_G: bool = False):
    r = np.random.default_rng(1)
    shape = (batch,) if batch else ()
    G = r.standard_normal((m, n)) if shared_G else r.standard_normal((*shape, m, n))
    x0 = r.standard_normal((*shape, n))
    Gx0 = np.einsum("...ij,...j->...i", G, x0)
    h = Gx0 + r.random((*shape, m))  # x0 strictly feasible
    q = r.standard_normal((*shape, n))
    return [torch.tensor(v) for v in (q, G, h)]


def socp_problem(n: int = 20, m: int = 20):
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + c @ x), [cp.norm(x, 2) <= 1])
    r = np.random.default_rng(2)
    vals = [r.standard_normal((64, m, n)), r.standard_normal((64, m)), r.standard_normal((64, n))]
    return prob, [A, b, c], [x], [torch.tensor(v) for v in vals]


def exp_problem(n: int = 20):
    x = cp.Variable(n)
    c = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1])
    vals = [np.random.default_rng(3).standard_normal((64, n))]
    return prob, [c], [x], [torch.tensor(v) for v in vals]


def _build(problem_fn: Callable, solver: str | None):
    prob, params, variables, *_ = problem_fn()
    t = time.perf_counter()
    layer = CvxpyLayer(prob, params, variables, solver=solver)
    return layer, time.perf_counter() - t


def _wheel_qp_batch(Q: np.ndarray, values: list[torch.Tensor]) -> Callable | None:
    try:
        from pounce.torch import solve_qp_batch
    except ImportError as err:
        print(f"note: POUNCE wheel column skipped (import pounce.torch failed: {err})")
        return None
    q, G, h = values
    P = torch.tensor(Q)

    def run() -> None:
        qq, GG, hh = (t.detach().clone().requires_grad_(True) for t in (q, G, h))
        xs = solve_qp_batch(P=P, c=qq, G=GG, h=hh)
        (xs * xs).sum().backward()

    return run


def _profile(run: Callable, label: str, top: int = 18) -> None:
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(3):
        run()
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(top)
    print(f"\n--- cProfile, 3 runs of {label} (cumulative) ---")
    print("\n".join(buf.getvalue().splitlines()[:top + 12]))
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    print(f"--- cProfile, 3 runs of {label} (own time) ---")
    print("\n".join(buf.getvalue().splitlines()[:top + 12]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--pounce-wheel-site", type=Path, default=None,
                    help="directory holding the pounce-solver wheel (pip --target)")
    ap.add_argument("--skip-large", action="store_true", help="skip case (b)")
    a = ap.parse_args()
    if a.pounce_wheel_site:
        sys.path.append(str(a.pounce_wheel_site))
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start "
          "(timings scale with other processes' load)")
    rows: list[tuple[str, float, float | None, float | None]] = []

    def compare(label: str, problem_fn: Callable, params: list[torch.Tensor],
                ours_args: dict | None = None) -> Callable:
        ours, _ = _build(problem_fn, "pounce")
        ref, _ = _build(problem_fn, None)
        t_ours = _median_time(_fwd_bwd(ours, params, ours_args or {}), a.repeats)
        t_ref = _median_time(_fwd_bwd(ref, params, DIFFCP_ARGS), a.repeats)
        rows.append((label, t_ours, t_ref, None))
        print(f"{label:38s} pounce {t_ours * 1e3:9.1f} ms   diffcp {t_ref * 1e3:9.1f} ms   "
              f"ratio {t_ref / t_ours:6.1f}x", flush=True)
        return _fwd_bwd(ours, params, ours_args or {})

    n = m = 50
    run_a = compare("(a) B=64 QP n=50 m=50 (q, G, h)", lambda: qp_problem(n, m),
                    qp_values(n, m, 64))
    shared = qp_values(n, m, 64, shared_G=True)
    compare("(a') B=64 QP n=50 m=50, G shared", lambda: qp_problem(n, m), shared)
    _, _, _, Q = qp_problem(n, m)
    wheel = _wheel_qp_batch(Q, shared)
    if wheel is not None:
        t_w = _median_time(wheel, a.repeats)
        label, t_o, t_r, _ = rows[-1]
        rows[-1] = (label, t_o, t_r, t_w)
        print(f"{'    POUNCE wheel solve_qp_batch':38s} {t_w * 1e3:9.1f} ms   "
              f"ours vs wheel {t_w / t_o:6.1f}x", flush=True)
    if not a.skip_large:
        big = 500
        ours, build_ours = _build(lambda: qp_problem(big, big), "pounce")
        ref, build_ref = _build(lambda: qp_problem(big, big), None)
        print(f"(b) layer construction: pounce {build_ours:.2f} s   diffcp {build_ref:.2f} s")
        vals = qp_values(big, big, None)
        t_o = _median_time(_fwd_bwd(ours, vals, {}), max(1, a.repeats // 2))
        t_r = _median_time(_fwd_bwd(ref, vals, DIFFCP_ARGS), max(1, a.repeats // 2))
        rows.append(("(b) 1 QP n=500 m=500", t_o, t_r, None))
        print(f"{'(b) 1 QP n=500 m=500':38s} pounce {t_o * 1e3:9.1f} ms   diffcp {t_r * 1e3:9.1f}"
              f" ms   ratio {t_r / t_o:6.1f}x", flush=True)
    s_prob = socp_problem()
    compare("(c) B=64 SOCP n=20 m=20", socp_problem, s_prob[3])
    e_prob = exp_problem()
    compare("(c) B=64 exp cone n=20", exp_problem, e_prob[3])

    print("\n| case | pounce (ms) | diffcp (ms) | diffcp / pounce | wheel (ms) |")
    print("|---|---|---|---|---|")
    for label, t_o, t_r, t_w in rows:
        wheel_s = f"{t_w * 1e3:.1f}" if t_w is not None else "n/a"
        print(f"| {label} | {t_o * 1e3:.1f} | {t_r * 1e3:.1f} | {t_r / t_o:.1f}x | {wheel_s} |")
    _plot(rows)
    if a.profile:
        _profile(run_a, "(a) pounce fwd+bwd")
    return 0


def _plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    labels = [r[0] for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(xs - 0.27, [r[1] * 1e3 for r in rows], 0.27, label="pounce")
    ax.bar(xs, [r[2] * 1e3 for r in rows], 0.27, label="diffcp (cvxpylayers default)")
    ax.bar(xs + 0.27, [(r[3] or 0) * 1e3 for r in rows], 0.27, label="POUNCE wheel layer")
    ax.set_yscale("log")
    ax.set_ylabel("forward + backward, ms (median)")
    ax.set_xticks(xs, labels, rotation=15, ha="right", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "bench_cvxpylayers.png", dpi=120)
    print(f"wrote {OUT / 'bench_cvxpylayers.png'}")


if __name__ == "__main__":
    raise SystemExit(main())
