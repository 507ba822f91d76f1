"""Iterations and time per item of the native handle, Clarabel and MOREAU on the dumps of
benchmarks/exp_socp_dump.py (same SCS-form data for all three; forward solves only).

With ``--against PATH`` (another build's ``_native.abi3.so``): instead, the whole batch's
native forward on a handle of this build and on one of that build, interleaved over
``--repeats`` in one process: median wall times, their ratio, iterations and the largest
x difference between the builds.

For each family file: the native `ConicProblem.solve` of the whole batch (its per-item
iterations and solve_time), then per item Clarabel (default settings, tol 1e-8) and MOREAU
(`moreau.Solver`, default settings, CPU), interleaved over `--repeats`. Prints medians.

    /work/benchvenv/bin/python benchmarks/exp_socp_iters.py /tmp/expdata/*.txt [--repeats 3]
                                  [--against PATH]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pounce_kkt import _native  # the installed build (or PYTHONPATH's)


def read(path: str) -> dict:
    lines = Path(path).read_text().split("\n")

    def ints(k: int) -> list[int]:
        return [int(v) for v in lines[k].split()]

    def floats(k: int) -> np.ndarray:
        return np.array([float(v) for v in lines[k].split()])

    n, m = ints(0)
    z, l_, ep = ints(1)
    soc = ints(2)
    has_p = bool(lines[3].strip())
    bsz = int(lines[7])
    items = [tuple(floats(8 + 4 * i + j) for j in range(4)) for i in range(bsz)]
    return dict(n=n, m=m, z=z, l=l_, ep=ep, soc=soc,
                p=(ints(3), ints(4)) if has_p else None, a=(ints(5), ints(6)), items=items)


def _load_native(path: str):
    """The extension module at ``path`` (another build of ``pounce_kkt._native``), loaded
    under its own name beside this build's."""
    name = "exp_socp_against._native"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def native_batch(d: dict, native=_native) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    I64 = np.int64
    pp = [None, None] if d["p"] is None else [np.array(v, I64) for v in d["p"]]
    cones = {"z": d["z"], "l": d["l"], "q": d["soc"], "ep": d["ep"]}
    h = native.ConicProblem(d["n"], d["m"], pp[0], pp[1],
                             np.array(d["a"][0], I64), np.array(d["a"][1], I64), cones)
    P = np.array([it[0] for it in d["items"]]) if d["p"] else None
    A = np.array([it[1] for it in d["items"]])
    q = np.array([it[2] for it in d["items"]])
    b = np.array([it[3] for it in d["items"]])
    t = time.perf_counter()
    out = h.solve(P, A, q, b, tol=1e-8, max_iter=200)
    wall = time.perf_counter() - t
    assert all(s == "optimal" for s in out["status"]), set(out["status"])
    return (wall, np.asarray(out["iterations"]), np.asarray(out["solve_time"]),
            np.asarray(out["x"]))


def mats(d: dict, it) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    n, m = d["n"], d["m"]
    A = sp.csc_matrix((it[1], d["a"][1], d["a"][0]), shape=(m, n))
    P = (sp.csc_matrix((it[0], d["p"][1], d["p"][0]), shape=(n, n)) if d["p"]
         else sp.csc_matrix((n, n)))
    return P, A


def clarabel_item(d: dict, it) -> tuple[float, int]:
    import clarabel

    P, A = mats(d, it)
    cones = []
    if d["z"]:
        cones.append(clarabel.ZeroConeT(d["z"]))
    if d["l"]:
        cones.append(clarabel.NonnegativeConeT(d["l"]))
    cones += [clarabel.SecondOrderConeT(k) for k in d["soc"]]
    if d["ep"]:
        cones += [clarabel.ExponentialConeT()] * d["ep"]
    s = clarabel.DefaultSettings()
    s.verbose = False
    t = time.perf_counter()
    sol = clarabel.DefaultSolver(sp.triu(P).tocsc(), it[2], A, it[3], cones, s).solve()
    wall = time.perf_counter() - t
    assert str(sol.status) == "Solved", sol.status
    return wall, sol.iterations


def moreau_item(d: dict, it) -> tuple[float, int]:
    import moreau

    P, A = mats(d, it)
    cones = moreau.Cones(num_zero_cones=d["z"], num_nonneg_cones=d["l"],
                         so_cone_dims=list(d["soc"]), num_exp_cones=d["ep"])
    t = time.perf_counter()
    solver = moreau.Solver(sp.triu(P).tocsr(), it[2], A.tocsr(), it[3], cones=cones)
    solver.solve()
    wall = time.perf_counter() - t
    info = solver.info
    return wall, int(getattr(info, "iterations", getattr(info, "iter", -1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", default=None)
    a = ap.parse_args()
    if a.against:
        against(a.files, a.repeats, _load_native(a.against))
        return
    print(f"{'family':<12} {'B':>3} | {'ours it':>7} {'ms/item':>8} | {'clarabel it':>11} "
          f"{'ms/item':>8} | {'moreau it':>9} {'ms/item':>8} | ours/moreau")
    for f in a.files:
        d = read(f)
        ours, cl, mo = [], [], []
        for _ in range(a.repeats):
            _, its, st, _ = native_batch(d)
            ours.append(float(np.sum(st)) / len(st))
            r = [clarabel_item(d, it) for it in d["items"]]
            cl.append(sum(t for t, _ in r) / len(r))
            cl_it = np.mean([k for _, k in r])
            r = [moreau_item(d, it) for it in d["items"]]
            mo.append(sum(t for t, _ in r) / len(r))
            mo_it = np.mean([k for _, k in r])
        o, c, m_ = (statistics.median(v) * 1e3 for v in (ours, cl, mo))
        print(f"{Path(f).stem:<12} {len(d['items']):>3} | {np.mean(its):>7.2f} {o:>8.3f} | "
              f"{cl_it:>11.2f} {c:>8.3f} | {mo_it:>9.2f} {m_:>8.3f} | {o / m_:>6.2f}")


def against(files: list[str], repeats: int, other) -> None:
    print(f"{'family':<12} {'B':>3} | {'this ms':>8} {'other ms':>8} {'this/other':>10} | "
          f"{'iters':>11} | max|dx|")
    for f in files:
        d = read(f)
        mine, theirs = [], []
        for _ in range(repeats):
            w1, it1, _, x1 = native_batch(d)
            w2, it2, _, x2 = native_batch(d, other)
            mine.append(w1)
            theirs.append(w2)
        m1, m2 = statistics.median(mine) * 1e3, statistics.median(theirs) * 1e3
        print(f"{Path(f).stem:<12} {len(d['items']):>3} | {m1:>8.2f} {m2:>8.2f} "
              f"{m1 / m2:>10.2f} | {np.mean(it1):>5.2f}/{np.mean(it2):<5.2f} | "
              f"{np.max(np.abs(x1 - x2)):.1e}")


if __name__ == "__main__":
    main()
