"""Benchmark of the native conic core (`pounce_kkt._native`).

(a) 256 dense QPs, n = 50, m = 50 (P dense PD, A dense; 10 equality + 40 inequality rows):
    the batched forward (`ConicProblem.solve` on one handle) against a Python loop over the
    same handle's solve called one item at a time (B = 1), and the batched adjoint
    (`ConicProblem.adjoint`) against the batched forward. Targets: speed-up >= 1.8x on 2
    cores, adjoint <= 0.3x forward.
(b) One sparse QP, n = 5000, m = 5000, 5 nonzeros per column of A (rows drawn near the
    diagonal, as in discretised / staged models; P = tridiagonal-plus-diagonal, PD): forward
    and backward complete, backward no slower than forward, peak RSS (ru_maxrss) < 2 GB.
(c) Per-call cost of the native boundary as pounce_kkt.conic calls it (`conic._native_solve`
    and `conic._native_adjoint` on one ConicStructure built beforehand, as a layer holds it):
    B = 1 dense QP with n = m = 50 and B = 1024 dense QPs with n = m = 10, forward and
    backward, medians over many calls. For B = 1 the forward's overhead is also given as
    the call's wall time minus the item's own solve time. The same calls on a
    `_native.ConicProblem` built for each call (which checks and maps the structure and
    builds every worker's factorization per call: the boundary before the handle),
    interleaved in the same loop, give the ratio against the reused handle at one load.
(d) Per-call cost of the native NLP boundary (the Theseus path): `_native.nlp_solve`
    (an `NlpProblem` built for each call: sizes, bounds, patterns and options checked per
    call) against `NlpProblem.solve` on one handle, interleaved, medians over many calls,
    on a tiny NLP (n = 2, one nonlinear constraint) and a separable one with n = 20000
    (diagonal Hessian, one linear constraint over every variable). The same calls' Python
    callbacks run in both columns.
(e) With ``--against PATH`` (another build's ``_native.abi3.so``, e.g. a copy made before a
    change): the B = 1, n = m = 50 forward and backward of (c) on a handle of this build
    and on one of that build, interleaved in one process: wall time, and the forward's wall
    minus the item's own solve time.

(f) With ``--engines``: the QP forward's engines (``SolveOptions.engine``) on one handle
    each, interleaved: "ipm", "auto", "active_set", forward only (the native solve), on
    B = 64 dense QPs n = m = 50 and B = 1024 with n = m = 10 (10 + 40 / 2 + 8 equality +
    inequality rows), calls with the same values each time and with values moved by 1e-3
    (relative, a fresh draw per call) from the first call's; medians, and which engine
    answered the items (the result's ``engine``).

(a) and (c) run ``engine="ipm"`` (repeated values would otherwise take the active set).

``--busy K`` runs K busy-looping processes while the benchmark runs (the load under which
a hand-off between threads costs most; they are stopped at the end).

Prints a table of medians and ratios and writes benchmarks/out/bench_core.png.

    python benchmarks/bench_core.py [--repeats 5] [--skip-large] [--only-overhead]
                                    [--only-nlp] [--calls 200] [--busy K]
                                    [--against PATH [--only-against]] [--engines]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pounce_kkt import ConicStructure, SolveOptions, _native, conic  # noqa: E402
from testing_helpers.native_calls import native_problem, value_args  # noqa: E402

I64 = np.int64
OUT = Path(__file__).resolve().parent / "out"


# ------------------------------------------------------------------------------ problems


def _csc_parts(M: sp.csc_matrix):
    M = sp.csc_matrix(M)
    M.sort_indices()
    return M.indptr.astype(I64), M.indices.astype(I64), M


def dense_qp_batch(batch: int, n: int = 50, m: int = 50, z: int = 10, seed: int = 0) -> dict:
    """``batch`` strictly complementary QPs with full (dense) P and A patterns."""
    rng = np.random.default_rng(seed)
    full = sp.csc_matrix(np.ones((n, n)))
    p_indptr, p_indices, _ = _csc_parts(full)
    a_indptr, a_indices, _ = _csc_parts(sp.csc_matrix(np.ones((m, n))))
    pv, av, qs, bs = [], [], [], []
    for _ in range(batch):
        L = rng.standard_normal((n, n)) / np.sqrt(n)
        P = L @ L.T + 0.1 * np.eye(n)
        A = rng.standard_normal((m, n))
        x = rng.standard_normal(n)
        act = rng.random(m - z) < 0.5
        s = np.concatenate([np.zeros(z), np.where(act, 0.0, rng.uniform(0.5, 2, m - z))])
        y = np.concatenate([rng.standard_normal(z), np.where(act, rng.uniform(0.5, 2, m - z), 0)])
        pv.append(P.ravel(order="F"))  # CSC order of a full pattern = column-major
        av.append(A.ravel(order="F"))
        qs.append(-(P @ x) - A.T @ y)
        bs.append(A @ x + s)
    return dict(
        n=n, m=m, p_indptr=p_indptr, p_indices=p_indices, p_values=np.array(pv),
        a_indptr=a_indptr, a_indices=a_indices, a_values=np.array(av), q=np.array(qs),
        b=np.array(bs), cones={"z": z, "l": m - z},
    )  # fmt: skip


def sparse_qp(n: int = 5000, m: int = 5000, per_col: int = 5, band: int = 60, seed: int = 1):
    """One sparse QP: A with ``per_col`` entries per column within ``band`` rows of the
    diagonal; P = tridiagonal + 2 I (PD)."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for j in range(n):
        c = int(j * m / n)
        lo, hi = max(0, c - band), min(m, c + band)
        rows.append(rng.choice(np.arange(lo, hi), per_col, replace=False))
        cols.append(np.full(per_col, j))
    A = sp.csc_matrix(
        (rng.standard_normal(n * per_col), (np.concatenate(rows), np.concatenate(cols))), (m, n)
    )
    P = sp.diags([np.full(n - 1, -0.5), np.full(n, 2.0), np.full(n - 1, -0.5)], [-1, 0, 1])
    p_indptr, p_indices, P = _csc_parts(P)
    a_indptr, a_indices, A = _csc_parts(A)
    z = m // 5
    x = rng.standard_normal(n)
    act = rng.random(m - z) < 0.3
    s = np.concatenate([np.zeros(z), np.where(act, 0.0, rng.uniform(0.5, 2, m - z))])
    y = np.concatenate([rng.standard_normal(z), np.where(act, rng.uniform(0.5, 2, m - z), 0)])
    return dict(
        n=n, m=m, p_indptr=p_indptr, p_indices=p_indices, p_values=P.data[None].copy(),
        a_indptr=a_indptr, a_indices=a_indices, a_values=A.data[None].copy(),
        q=(-(P @ x) - A.T @ y)[None], b=(A @ x + s)[None], cones={"z": z, "l": m - z},
    ), x  # fmt: skip


def _item(prob: dict, i: int) -> dict:
    out = dict(prob)
    for k in ("p_values", "a_values", "q", "b"):
        out[k] = prob[k][i : i + 1]
    return out


def forward(handle, prob: dict, **opts) -> dict:
    """``handle.solve`` on ``prob``'s values."""
    return handle.solve(**value_args(prob), **opts)


def adjoint(handle, prob: dict, res: dict) -> dict:
    """The adjoint of L = 1'x + 1'y + 1's with H = diag(s/y) (zero and nonneg rows)."""
    B, n, m = res["x"].shape[0], prob["n"], prob["m"]
    z = prob["cones"]["z"]
    h = np.zeros((B, m))
    h[:, z:] = np.maximum(res["s"][:, z:], 0) / np.maximum(res["y"][:, z:], 1e-300)
    ok = np.array([s in ("optimal", "optimal_inaccurate") for s in res["status"]])
    g = np.ones((B, n)), np.ones((B, m)), np.ones((B, m))
    return handle.adjoint(prob["p_values"], prob["a_values"], h, np.zeros((B, 0)), res["x"],
                          res["y"], *g, ok)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, repeats: int, cpu: list | None = None) -> tuple[float, object]:
    """Median wall time of ``fn``; with ``cpu`` also appends the process CPU seconds per
    wall second (2.0 = both cores busy on a 2-core machine; lower = the box was shared)."""
    times, out = [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu()
        out = fn()
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append((_cpu() - c) / times[-1])
    return statistics.median(times), out


# ------------------------------------------------------------------------------ runs


def bench_small(repeats: int) -> dict:
    prob = dense_qp_batch(256)
    handle = native_problem(prob)
    forward(handle, _item(prob, 0))  # warm up rayon's pool and the code paths
    util: list = []
    t_batch, res = timed(lambda: forward(handle, prob, engine="ipm"), repeats, util)
    t_loop, _ = timed(lambda: [forward(handle, _item(prob, i), engine="ipm") for i in range(256)],
                      repeats)
    t_adj, _ = timed(lambda: adjoint(handle, prob, res), repeats)
    assert all(s == "optimal" for s in res["status"]), set(res["status"])
    return {
        "batch_forward_s": t_batch,
        "loop_forward_s": t_loop,
        "adjoint_s": t_adj,
        "speedup": t_loop / t_batch,
        "adjoint_over_forward": t_adj / t_batch,
        "iterations_mean": float(np.mean(res["iterations"])),
        "per_item_ms": float(np.median(res["solve_time"]) * 1e3),
        "cpu_per_wall": statistics.median(util),
    }


def bench_large() -> dict:
    prob, x_star = sparse_qp()
    handle = native_problem(prob)
    t_f, res = timed(lambda: forward(handle, prob), 1)
    assert res["status"][0] == "optimal", res["status"]
    t_b, out = timed(lambda: adjoint(handle, prob, res), 1)
    assert out["solved"][0]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    return {
        "forward_s": t_f,
        "backward_s": t_b,
        "backward_over_forward": t_b / t_f,
        "peak_rss_gb": rss_gb,
        "iterations": int(res["iterations"][0]),
        "x_err": float(np.abs(res["x"][0] - x_star).max()),
    }


def _overhead_case(batch: int, n: int, calls: int) -> dict:
    prob = dense_qp_batch(batch, n=n, m=n, z=n // 5)
    st = ConicStructure(n, n, prob["a_indptr"], prob["a_indices"], prob["cones"],
                        prob["p_indptr"], prob["p_indices"])
    opts = SolveOptions(tol=1e-8, engine="ipm")
    vals = [np.ascontiguousarray(prob[k]) for k in ("p_values", "a_values", "q", "b")]
    fwd = lambda: conic._native_solve(st, opts, *vals)  # noqa: E731
    res = fwd()
    assert all(s == "optimal" for s in res["status"]), set(res["status"])
    z = prob["cones"]["z"]
    h = np.zeros((batch, n))
    h[:, z:] = np.maximum(res["s"][:, z:], 0) / np.maximum(res["y"][:, z:], 1e-300)
    ok = np.ones(batch, bool)
    g = [np.ones((batch, n)) for _ in range(3)]
    bwd = lambda: conic._native_adjoint(st, vals[0], vals[1], h, np.zeros((batch, 0)),  # noqa: E731
                                        res["x"], res["y"], *g, ok)
    assert all(bwd()["solved"])
    # The same calls on a handle built for each call, which checks and maps the structure
    # and builds every worker's factorization on each call (the boundary before the
    # problem handle), interleaved with the reused handle's calls so both see the same load.
    cones = st.cones.to_dict()

    def new_handle():
        return _native.ConicProblem(n, n, st.p_indptr, st.p_indices, st.a_indptr,
                                    st.a_indices, cones)

    fwd_free = lambda: new_handle().solve(*vals, tol=opts.tol_for(st.cones),  # noqa: E731
                                          engine="ipm")
    bwd_free = lambda: new_handle().adjoint(  # noqa: E731
        vals[0], vals[1], h, np.zeros((batch, 0)), res["x"], res["y"], *g, ok)
    walls, solves, free, t_b, t_bf = [], [], [], [], []
    for _ in range(calls):
        t = time.perf_counter()
        r = fwd()
        walls.append(time.perf_counter() - t)
        solves.append(float(np.max(r["solve_time"])))
        t = time.perf_counter()
        fwd_free()
        free.append(time.perf_counter() - t)
        t_b.append(timed(bwd, 1)[0])
        t_bf.append(timed(bwd_free, 1)[0])
    med = statistics.median
    return {
        "forward_s": med(walls),
        "forward_outside_solve_s": med(np.subtract(walls, solves)),
        "backward_s": med(t_b),
        "forward_free_s": med(free),
        "backward_free_s": med(t_bf),
    }


ENGINES = ("ipm", "auto", "active_set")


def _engines_case(batch: int, n: int, calls: int, moved: float) -> dict:
    prob = dense_qp_batch(batch, n=n, m=n, z=n // 5)
    handles = {e: native_problem(prob) for e in ENGINES}
    rng = np.random.default_rng(7)

    def values() -> dict:
        if not moved:
            return prob
        out = dict(prob)
        for k in ("a_values", "q", "b"):
            out[k] = prob[k] * (1 + moved * rng.uniform(-1, 1, prob[k].shape))
        return out

    for e, h in handles.items():
        forward(h, prob, engine=e)  # the first call: each item's previous answer
    times: dict = {e: [] for e in ENGINES}
    answered: dict = {e: {} for e in ENGINES}
    for _ in range(calls):
        vals = values()
        for e, h in handles.items():
            t = time.perf_counter()
            r = forward(h, vals, engine=e)
            times[e].append(time.perf_counter() - t)
            for name in r["engine"]:
                answered[e][name] = answered[e].get(name, 0) + 1
    return {e: (statistics.median(times[e]), answered[e]) for e in ENGINES}


def bench_engines(calls: int) -> dict:
    return {(b, n, moved): _engines_case(b, n, calls, moved)
            for b, n in ((64, 50), (1024, 10)) for moved in (0.0, 1e-3)}


def report_engines(en: dict) -> None:
    print("(f) QP forward per engine, one handle each, interleaved (medians):")
    for (b, n, moved), row in en.items():
        label = f"B={b} n=m={n}, " + ("same values" if not moved else f"moved {moved:g}")
        ipm = row["ipm"][0]
        cells = []
        for e in ENGINES:
            t, answered = row[e]
            total = sum(answered.values()) or 1
            mix = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(answered.items()))
            cells.append(f"{e} {t * 1e3:.2f} ms ({ipm / t:.2f}x; {mix})")
        print(f"  {label:28s} " + " | ".join(cells))
    la = os.getloadavg()
    print(f"  load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


def bench_overhead(calls: int) -> dict:
    """(c): per-call medians for B = 1, n = m = 50 and B = 1024, n = m = 10."""
    return {
        "b1_n50": _overhead_case(1, 50, calls),
        "b1024_n10": _overhead_case(1024, 10, max(calls // 10, 5)),
    }


def report_overhead(ov: dict) -> None:
    a, b = ov["b1_n50"], ov["b1024_n10"]
    rows = [
        ("(c) B=1 n=m=50: forward call", f"{a['forward_s'] * 1e3:9.3f} ms"),
        ("(c) B=1 n=m=50: forward, outside the item's solve",
         f"{a['forward_outside_solve_s'] * 1e3:9.3f} ms"),
        ("(c) B=1 n=m=50: backward call", f"{a['backward_s'] * 1e3:9.3f} ms"),
        ("(c) B=1024 n=m=10: forward call", f"{b['forward_s'] * 1e3:9.2f} ms"),
        ("(c) B=1024 n=m=10: backward call", f"{b['backward_s'] * 1e3:9.2f} ms"),
    ]
    for tag, c in (("B=1 n=m=50", a), ("B=1024 n=m=10", b)):
        for way in ("forward", "backward"):
            rows.append((f"(c) {tag}: {way}, handle built per call / reused",
                         f"{c[way + '_free_s'] * 1e3:9.3f} ms / {c[way + '_s'] * 1e3:.3f} ms"
                         f" = {c[way + '_free_s'] / c[way + '_s']:.2f}x"))
    w = max(len(r[0]) for r in rows)
    print(f"{'per-call cost (medians)':<{w}}  value")
    print("-" * (w + 20))
    for name, val in rows:
        print(f"{name:<{w}}  {val}")


def _load_native(path: str):
    """The extension module at ``path`` (another build of ``pounce_kkt._native``), loaded
    under its own name beside this build's."""
    name = "bench_core_against._native"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def bench_against(path: str, calls: int) -> dict:
    """(e): B = 1, n = m = 50 forward and backward on a handle of this build and on one of
    the build at ``path``, interleaved; medians."""
    other = _load_native(path)
    prob = dense_qp_batch(1, n=50, m=50, z=10)
    handles = {"this": native_problem(prob), "other": other.ConicProblem(
        *(prob[k] for k in ("n", "m", "p_indptr", "p_indices", "a_indptr", "a_indices", "cones")))}
    res = {k: forward(h, prob) for k, h in handles.items()}
    for k, h in handles.items():  # a second call of each: the handles' workers are built
        res[k] = forward(h, prob)
        adjoint(h, prob, res[k])
    rows: dict = {k: {"fwd": [], "out": [], "bwd": []} for k in handles}
    for _ in range(calls):
        for k, h in handles.items():
            t = time.perf_counter()
            r = forward(h, prob)
            wall = time.perf_counter() - t
            rows[k]["fwd"].append(wall)
            rows[k]["out"].append(wall - float(r["solve_time"][0]))
            t = time.perf_counter()
            adjoint(h, prob, res[k])
            rows[k]["bwd"].append(time.perf_counter() - t)
    return {k: {c: statistics.median(v) for c, v in r.items()} for k, r in rows.items()}


def report_against(ag: dict) -> None:
    t, o = ag["this"], ag["other"]
    print(f"{'(e) B=1 n=m=50, this build / --against build (medians)':<56}  value")
    print("-" * 90)
    for name, c in (("forward call", "fwd"), ("forward, outside the item's solve", "out"),
                    ("backward call", "bwd")):
        print(f"{name:<56}  {t[c] * 1e3:8.3f} ms / {o[c] * 1e3:8.3f} ms")


class _Busy:
    """K processes spinning in a loop while the benchmark runs."""

    def __init__(self, k: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(k)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


class _Separable:
    """min sum_i (x_i - c_i)^2 + (x_0 - x_1)^4 s.t. x_0^2 + x_1^2 <= 1 (n = 2) or
    sum_i x_i >= 1 (n > 2): the callbacks of (d), as cheap as numpy makes them."""

    def __init__(self, n: int):
        self.n, self.c = n, np.linspace(-1.0, 1.0, n) + 0.5

    def objective(self, x):
        return float(((x - self.c) ** 2).sum() + (x[0] - x[1]) ** 4)

    def gradient(self, x):
        g = 2 * (x - self.c)
        d = 4 * (x[0] - x[1]) ** 3
        g[0] += d
        g[1] -= d
        return g

    def constraints(self, x):
        return np.array([x[0] ** 2 + x[1] ** 2]) if self.n == 2 else np.array([x.sum()])

    def jacobian(self, x):
        return 2 * x if self.n == 2 else np.ones(self.n)

    def hessian(self, x, f, lam):
        """Lower triangle: the diagonal, then (1, 0)."""
        h = np.full(self.n + 1, 2.0 * f)
        e = 12 * (x[0] - x[1]) ** 2 * f
        h[0] += e
        h[1] += e
        h[self.n] = -e
        if self.n == 2:
            h[:2] += 2 * lam[0]
        return h

    def iteration(self, *args):
        return True

    def layout(self) -> tuple:
        n, d = self.n, np.arange(self.n, dtype=np.int64)
        g_l, g_u = (np.array([-np.inf]), np.ones(1)) if n == 2 else (np.ones(1), np.full(1, np.inf))
        return (np.full(n, -np.inf), np.full(n, np.inf), g_l, g_u, np.zeros(n, np.int64), d,
                np.append(d, 1), np.append(d, 0))


def _nlp_case(n: int, calls: int) -> dict:
    problem = _Separable(n)
    lay = problem.layout()
    options = {"tol": 1e-9, "print_level": 0}
    x0 = np.zeros(n)
    handle = _native.NlpProblem(n, 1, *lay, options)
    ref = handle.solve(problem, x0)
    assert ref["status"] == "solve_succeeded", ref["status"]
    one = _native.nlp_solve(problem, x0, *lay, options)
    assert np.array_equal(one["x"], ref["x"])
    per_call, held, build = [], [], []
    for _ in range(calls):
        per_call.append(timed(lambda: _native.nlp_solve(problem, x0, *lay, options), 1)[0])
        held.append(timed(lambda: handle.solve(problem, x0), 1)[0])
        build.append(timed(lambda: _native.NlpProblem(n, 1, *lay, options), 1)[0])
    # A max_iter that changes on every call (the Theseus adapter passes the iterations an
    # element has left) leaves this thread's configured application on other options, so
    # the next solve with the handle's own options rebuilds it ("rebuilt"); the solve after
    # that reuses it ("reused"). Interleaved, so a drift of the process' speed cancels.
    rebuilt, reused = [], []
    for k in range(calls):
        handle.solve(problem, x0, options={"max_iter": 100 + k % 2})
        rebuilt.append(timed(lambda: handle.solve(problem, x0), 1)[0])
        reused.append(timed(lambda: handle.solve(problem, x0), 1)[0])
    # Each solve on a new thread (as pounce_theseus' Hub runs its jobs): the thread has no
    # configured application yet. Timed inside the thread, interleaved with this thread's.
    fresh, same = [], []

    def on_new_thread():
        fresh.append(timed(lambda: handle.solve(problem, x0), 1)[0])

    for _ in range(max(calls // 2, 5)):
        th = threading.Thread(target=on_new_thread)
        th.start()
        th.join()
        same.append(timed(lambda: handle.solve(problem, x0), 1)[0])
    med = statistics.median
    return {"per_call_s": med(per_call), "handle_s": med(held), "build_s": med(build),
            "rebuilt_s": med(rebuilt), "reused_s": med(reused), "new_thread_s": med(fresh),
            "same_thread_s": med(same), "iterations": int(ref["iterations"])}


def bench_nlp(calls: int) -> dict:
    """(d): per-call medians for the tiny NLP and the n = 20000 one."""
    return {"n2": _nlp_case(2, calls), "n20000": _nlp_case(20000, max(calls // 10, 5))}


def report_nlp(nl: dict) -> None:
    rows = []
    for tag, c in (("n=2, m=1", nl["n2"]), ("n=20000, m=1", nl["n20000"])):
        rows += [
            (f"(d) NLP {tag} ({c['iterations']} iterations): nlp_solve / handle.solve",
             f"{c['per_call_s'] * 1e3:9.3f} ms / {c['handle_s'] * 1e3:.3f} ms"
             f" = {c['per_call_s'] / c['handle_s']:.3f}x"),
            (f"(d) NLP {tag}: NlpProblem(...) alone", f"{c['build_s'] * 1e3:9.3f} ms"),
            (f"(d) NLP {tag}: handle.solve on a rebuilt / reused application",
             f"{c['rebuilt_s'] * 1e3:9.3f} ms / {c['reused_s'] * 1e3:.3f} ms"),
            (f"(d) NLP {tag}: handle.solve on a new thread / on this one",
             f"{c['new_thread_s'] * 1e3:9.3f} ms / {c['same_thread_s'] * 1e3:.3f} ms"),
        ]
    w = max(len(r[0]) for r in rows)
    print(f"{'NLP per-call cost (medians)':<{w}}  value")
    print("-" * (w + 20))
    for name, val in rows:
        print(f"{name:<{w}}  {val}")


def report(small: dict, large: dict | None) -> None:
    cores = os.cpu_count()
    rows = [
        ("(a) 256 QPs n=m=50: batched forward", f"{small['batch_forward_s'] * 1e3:9.1f} ms"),
        ("(a) loop of 256 single native solves", f"{small['loop_forward_s'] * 1e3:9.1f} ms"),
        (f"(a) speed-up on {cores} cores (target >= 1.8x)", f"{small['speedup']:9.2f} x"),
        ("(a) batched adjoint", f"{small['adjoint_s'] * 1e3:9.1f} ms"),
        ("(a) adjoint / forward (target <= 0.3)", f"{small['adjoint_over_forward']:9.3f}"),
        ("(a) per-item solve (median), iterations", f"{small['per_item_ms']:6.2f} ms, "
         f"{small['iterations_mean']:.1f}"),
        ("(a) batched fwd: CPU s per wall s", f"{small['cpu_per_wall']:9.2f} "
         f"(of {cores}; less = box shared)"),
    ]  # fmt: skip
    if large:
        rows += [
            ("(b) sparse QP n=m=5000: forward", f"{large['forward_s']:9.2f} s"),
            ("(b) backward", f"{large['backward_s']:9.2f} s"),
            ("(b) backward / forward (target <= 1)", f"{large['backward_over_forward']:9.3f}"),
            ("(b) peak RSS (target < 2 GB)", f"{large['peak_rss_gb']:9.2f} GB"),
            ("(b) iterations, max |x - x*|", f"{large['iterations']}, {large['x_err']:.1e}"),
        ]
    w = max(len(r[0]) for r in rows)
    print(f"{'measure (medians)':<{w}}  value")
    print("-" * (w + 20))
    for name, val in rows:
        print(f"{name:<{w}}  {val}")


def plot(small: dict | None, large: dict | None, ov: dict | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    panels = [p for p in (small, large, ov) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    axes = list(np.atleast_1d(axes))
    if ov:
        ax = axes.pop()
        names = ["B=1 fwd", "B=1 bwd", "B=1024 fwd", "B=1024 bwd"]
        vals = [ov["b1_n50"]["forward_s"], ov["b1_n50"]["backward_s"],
                ov["b1024_n10"]["forward_s"], ov["b1024_n10"]["backward_s"]]
        ax.bar(names, np.array(vals) * 1e3, color=["#1f77b4", "#ff7f0e"] * 2)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median)")
        ax.set_title("per call: B=1 n=m=50, B=1024 n=m=10")
    if not small:
        fig.tight_layout()
        path = OUT / "bench_core.png"
        fig.savefig(path, dpi=120)
        return path
    ax = axes[0]
    names = ["loop of B=1", "batched fwd", "batched adjoint"]
    vals = [small["loop_forward_s"], small["batch_forward_s"], small["adjoint_s"]]
    ax.bar(names, np.array(vals) * 1e3, color=["#999999", "#1f77b4", "#ff7f0e"])
    ax.set_ylabel("ms (median)")
    ax.set_title(
        f"256 QPs n=m=50: {small['speedup']:.2f}x, adj/fwd {small['adjoint_over_forward']:.2f}"
    )
    if large:
        ax = axes[1]
        ax.bar(["forward", "backward"], [large["forward_s"], large["backward_s"]],
               color=["#1f77b4", "#ff7f0e"])  # fmt: skip
        ax.set_ylabel("s")
        ax.set_title(f"sparse QP n=m=5000, peak RSS {large['peak_rss_gb']:.2f} GB")
    fig.tight_layout()
    path = OUT / "bench_core.png"
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--only-overhead", action="store_true", help="run (c) only")
    ap.add_argument("--only-nlp", action="store_true", help="run (d) only")
    ap.add_argument("--calls", type=int, default=200, help="calls per median in (c), (d), (e)")
    ap.add_argument("--busy", type=int, default=0, help="busy-looping processes meanwhile")
    ap.add_argument("--against", help="(e): another build's _native.abi3.so")
    ap.add_argument("--only-against", action="store_true", help="run (e) only")
    ap.add_argument("--engines", action="store_true", help="run (f) only")
    args = ap.parse_args()
    busy = _Busy(args.busy)
    try:
        _run(args)
    finally:
        busy.stop()


def _run(args) -> None:
    if args.engines:
        report_engines(bench_engines(max(5, args.calls // 20)))
        return
    if args.against:
        report_against(bench_against(args.against, args.calls))
        if args.only_against:
            return
    if args.only_nlp:
        report_nlp(bench_nlp(args.calls))
        return
    small = large = None
    if not args.only_overhead:
        small = bench_small(args.repeats)
        large = None if args.skip_large else bench_large()
        report(small, large)
    ov = bench_overhead(args.calls)
    report_overhead(ov)
    if not args.only_overhead:
        report_nlp(bench_nlp(args.calls))
    print(f"wrote {plot(small, large, ov)}")


if __name__ == "__main__":
    main()
