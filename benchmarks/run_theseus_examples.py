"""Run Theseus' own examples twice, with their optimizer and with PounceOptimizer.

Usage::

    python benchmarks/run_theseus_examples.py [--quick] [--only NAME ...] [--doc PATH]
    python benchmarks/run_theseus_examples.py --theseus /path/to/theseus-checkout

Theseus' ``examples/`` (and the ``tests/`` and ``tutorials/data`` they read) come from a
checkout, or, by default, from the bare mirror ``/work/.mirror/facebookresearch+theseus/repo``
through ``git archive`` into a temporary folder; nothing of Theseus is kept in this repository.
Each example runs in a copy of that tree: the "theirs" copy as written, the "ours" copy with
exactly one text substitution, the optimizer line (the class in the script, or the optimizer
name in the example's hydra config), asserted to match once. Both copies get the same
run-time settings: ``device=cpu`` and ``profile=false`` where the config has them (CUDA is
absent; cProfile's overhead is not the optimizer's), CHOLMOD (without LM's adaptive
damping, which CHOLMOD does not support) where the config names BaspachoSparseSolver (its
extension is not built here), and, with ``--quick``, the same reduced sizes.

Each run is a subprocess of this script (``--child``) in its own process group, killed
with the group at the timeout. The child imports ``pounce_theseus`` (so
``th.PounceOptimizer`` resolves, as for any user), runs the example with ``runpy`` as
``__main__`` and records, per ``Optimizer.optimize`` call, its wall time, the batch mean of
the objective's error metric at the returned point and the statuses; that record is
rewritten after every call, so a run killed at its timeout still reports what it finished.
The example's printed outer loss and learned quantities are read from its output (the last
value printed, or the median of all for a "median" label). One table line per example:
the wall time of the example (after imports), the time inside ``optimize`` (forward
solves), the ratio ours / theirs of both, the final objective error of the last solve, the
outer loss, the status.

Homography estimation (downloads revisitop1m images, times with CUDA events) and tactile
pose estimation (downloads a recorded pushing data set) are not runnable without a network
and are listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MIRROR = Path("/work/.mirror/facebookresearch+theseus/repo")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "theseus_examples"

# (path in the checkout, text as written, replacement): the one line that picks the optimizer
Swap = tuple[str, str, str]


@dataclass
class Case:
    name: str
    script: str  # path in the checkout
    swap: Swap | None  # None: the example uses no Theseus optimizer
    args: list[str] = field(default_factory=list)  # hydra overrides, both ways
    quick_args: list[str] = field(default_factory=list)
    quick_subs: list[Swap] = field(default_factory=list)  # same text change both ways
    outputs: dict[str, str] = field(default_factory=dict)  # label -> regex (last match)
    note: str = ""


_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

CASES = [
    Case("pose_graph_synthetic", "examples/pose_graph/pose_graph_synthetic.py",
         ("examples/configs/pose_graph/pose_graph_synthetic.yaml",
          "optimizer_cls: LevenbergMarquardt", "optimizer_cls: PounceOptimizer"),
         args=["device=cpu", "profile=false",
               "inner_optim.linear_solver_cls=CholmodSparseSolver",
               "inner_optim.optimizer_kwargs.adaptive_damping=false"],
         quick_args=["num_poses=64", "dataset_size=16", "batch_size=8",
                     "outer_optim.num_epochs=2"],
         outputs={"outer loss": rf"Loss: {_NUM} Kernel",
                  "kernel radius": rf"Kernel Radius: exp\({_NUM}\)",
                  "median fwd ms": rf"Forward pass took {_NUM} ms",
                  "median bwd ms": rf"Backward pass took {_NUM} ms"},
         note="256 SE3 poses, batches of 128, 2 batches x 20 epochs; LM's Baspacho "
              "solver (not built here) replaced by CHOLMOD, which does not support LM's "
              "adaptive damping (so off, both ways)"),
    Case("se2_planning", "examples/se2_planning.py",
         ("examples/se2_planning.py", '"LevenbergMarquardt",', '"PounceOptimizer",'),
         note="one planning solve (2 maps, SE2, 100 steps); passes the misspelled "
              "max_optim_iters (so LM runs its default 20 iterations)"),
    Case("motion_planning_2d", "examples/motion_planning_2d.py",
         ("examples/configs/motion_planning_2d.yaml",
          '- "LevenbergMarquardt"', '- "PounceOptimizer"'),
         args=["device=cpu", "plot_trajectories=false"],
         quick_args=["num_epochs=3"],
         outputs={"outer loss": rf"TOTAL LOSS:\s+{_NUM}",
                  "imitation": rf"IMITATION LOSS:\s+{_NUM}",
                  "planner err": rf"Planner MSE optim final:\s+{_NUM}"},
         note="the 2 tarpit maps of tutorials/data (the data set the example downloads "
              "has the same layout); 20 epochs, LM max_iterations=2"),
    Case("state_estimation_2d", "examples/state_estimation_2d.py",
         ("examples/state_estimation_2d.py", "optimizer = th.GaussNewton(",
          "optimizer = th.PounceOptimizer("),
         quick_subs=[("examples/state_estimation_2d.py", "for epoch in range(500):",
                      "for epoch in range(30):")],
         outputs={"outer loss": rf"Loss:\s+{_NUM}", "MSE": rf"MSE error:\s+{_NUM}",
                  "scale_gps_5": rf"scale5 {_NUM}", "btwn5": rf"btwn5 {_NUM}"},
         note="LEO learning, 500 epochs x 3 solves, GN max_iterations=1"),
    Case("se2_inverse", "examples/se2_inverse.py", None,
         outputs={"outer loss": rf"loss is {_NUM}"},
         note="no Theseus optimizer (torch Adam on the Lie group): runs identically"),
    Case("bundle_adjustment", "examples/bundle_adjustment.py",
         ("examples/configs/bundle_adjustment.yaml",
          "optimizer_cls: GaussNewton", "optimizer_cls: PounceOptimizer"),
         quick_args=["num_cameras=5", "num_points=40", "outer_optim.num_epochs=2"],
         outputs={"outer loss": rf"Epoch: \d+ Loss: {_NUM}",
                  "kernel radius": rf"Kernel Radius: exp\({_NUM}\)",
                  "epoch s": rf"Epoch took\s+{_NUM} seconds"},
         note="synthetic: 10 cameras, 200 points, 20 epochs, GN 10 x 0.1 steps"),
    Case("backward_modes", "examples/backward_modes.py",
         ("examples/backward_modes.py", "optimizer = th.GaussNewton(",
          "optimizer = th.PounceOptimizer("),
         quick_subs=[("examples/backward_modes.py", "n_trials = 10", "n_trials = 2")],
         note="da/dx by 4 backward modes against central differences; 10 timing trials"),
    Case("simple_example", "examples/simple_example.py",
         ("examples/simple_example.py", "th.TheseusLayer(th.GaussNewton(",
          "th.TheseusLayer(th.PounceOptimizer("),
         outputs={"outer loss": rf"Outer loss:\s+{_NUM}"}),
    Case("inverse_kinematics", "examples/inverse_kinematics.py",
         ("examples/inverse_kinematics.py", "optimizer = th.LevenbergMarquardt(",
          "optimizer = th.PounceOptimizer("),
         note="10 Panda IK targets, LM 15 x 0.5 steps"),
]
UNRUNNABLE = {
    "homography_estimation": "downloads revisitop1m images (no network here) and times "
                             "with torch.cuda.Event",
    "tactile_pose_estimation": "downloads a recorded tactile pushing data set",
}


# ------------------------------------------------------------------ child process


def _child(script: Path, record_path: Path, argv: list[str], threads: int) -> None:
    import runpy

    import matplotlib
    import torch

    import pounce_theseus  # noqa: F401 - makes th.PounceOptimizer reachable by name

    matplotlib.use("Agg")
    torch.set_num_threads(threads)
    record: dict = {"calls": [], "wall_s": None, "error": None}

    def save() -> None:
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(record_path)

    from theseus.optimizer import Optimizer

    optimize = Optimizer.optimize

    def timed_optimize(self, *args, **kwargs):
        t0 = time.perf_counter()
        info = optimize(self, *args, **kwargs)
        dt = time.perf_counter() - t0
        with torch.no_grad():  # vectorised or not, error() caches nothing
            err = float(self.objective.error_metric().double().mean())
        status = getattr(info, "status", None)
        record["calls"].append({
            "s": dt, "optimizer": type(self).__name__, "err": err,
            "status": [] if status is None else [str(getattr(s, "name", s)) for s in status],
        })
        save()
        return info

    Optimizer.optimize = timed_optimize
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    t0 = time.perf_counter()
    try:
        runpy.run_path(str(script), run_name="__main__")
    except BaseException as exc:
        import traceback
        tb = traceback.extract_tb(exc.__traceback__)
        record["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        record["where"] = [f"{Path(f.filename).name}:{f.lineno}: {f.line}" for f in tb[-4:]]
        raise
    finally:
        record["wall_s"] = time.perf_counter() - t0
        save()


# ------------------------------------------------------------------ parent


def extract_mirror(dest: Path) -> Path:
    """``examples``, ``tests`` and ``tutorials/data`` of the mirror's HEAD under ``dest``,
    less the blobs the mirror lacks (one binary test fixture)."""
    git = ["git", "--git-dir", str(MIRROR)]
    paths = ["examples", "tests", "tutorials/data"]
    tree = subprocess.run([*git, "ls-tree", "-r", "HEAD", *paths], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    entries = [(line.split()[2], line.split("\t", 1)[1]) for line in tree]
    check = subprocess.run([*git, "cat-file", "--batch-check"], capture_output=True, text=True,
                           input="".join(f"{sha}\n" for sha, _ in entries), check=True)
    missing = [p for (_, p), out in zip(entries, check.stdout.splitlines(), strict=True)
               if out.endswith("missing")]
    archive = subprocess.run([*git, "archive", "HEAD", "--", *paths,
                              *(f":!{p}" for p in missing)], capture_output=True, check=True)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def prepare(checkout: Path, run_dir: Path, case: Case, ours: bool, quick: bool) -> Path:
    """A copy of ``examples/`` with the case's substitutions; tests/ and tutorials/ linked."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    shutil.copytree(checkout / "examples", run_dir / "examples")
    for name in ("tests", "tutorials"):
        if (checkout / name).exists():
            (run_dir / name).symlink_to(checkout / name)
    data = checkout / "tutorials" / "data" / "motion_planning_2d"
    (run_dir / "expts" / "motion-planning-2d").mkdir(parents=True)
    (run_dir / "expts" / "motion-planning-2d" / "dataset").symlink_to(data)
    subs = list(case.quick_subs if quick else [])
    if ours and case.swap:
        subs.append(case.swap)
    for path, old, new in subs:
        f = run_dir / path
        text = f.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{case.name}: {old!r} occurs {text.count(old)} times in {path}")
        f.write_text(text.replace(old, new))
    return run_dir / case.script


def run_one(case: Case, checkout: Path, work: Path, out: Path, ours: bool, quick: bool,
            timeout: float, threads: int) -> dict:
    tag = "ours" if ours else "theirs"
    run_dir = work / f"{case.name}_{tag}"
    script = prepare(checkout, run_dir, case, ours, quick)
    record_path = out / f"{case.name}_{tag}.json"
    log_path = out / f"{case.name}_{tag}.log"
    record_path.unlink(missing_ok=True)
    argv = [*case.args, *(case.quick_args if quick else [])]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(script),
           str(record_path), "--threads", str(threads), "--", *argv]
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(run_dir), str(ROOT),
                                                      env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            timed_out = True
    elapsed = time.perf_counter() - t0
    record = json.loads(record_path.read_text()) if record_path.exists() else {"calls": []}
    text = log_path.read_text(errors="replace")
    calls = record["calls"]
    res = {
        "case": case.name, "variant": tag, "rc": rc, "timed_out": timed_out,
        "elapsed_s": elapsed, "wall_s": record.get("wall_s") if not timed_out else None,
        "optimize_s": sum(c["s"] for c in calls), "calls": len(calls),
        "median_solve_s": statistics.median(c["s"] for c in calls) if calls else None,
        "optimizers": sorted({c["optimizer"] for c in calls}),
        "final_err": calls[-1]["err"] if calls else None,
        "converged": sum(s == "CONVERGED" for c in calls for s in c["status"]),
        "elements": sum(len(c["status"]) for c in calls),
        "error": record.get("error"), "where": record.get("where"),
        "outputs": {k: _extract(k, rx, text) for k, rx in case.outputs.items()},
        "log": str(log_path),
    }
    if case.name == "backward_modes":
        res["outputs"].update(_backward_modes_outputs(text))
    if timed_out:
        res["status"] = f"timeout at {timeout:.0f} s ({len(calls)} solves done)"
    elif rc < 0:
        res["status"] = (f"killed by signal {-rc} after {len(calls)} solves"
                         + (" (out of memory: see dmesg)" if rc == -signal.SIGKILL else ""))
    elif rc != 0:
        raised = re.findall(r"^([A-Z]\w*(?:Error|Exception): .*)$", text, flags=re.M)
        err = record.get("error")
        if raised and (not err or err.startswith("SystemExit")):  # hydra exits with 1
            err = raised[-1][:300]
        res["status"] = "error: " + (err or _last_line(text))
    else:
        res["status"] = "ok"
    return res


def _extract(label: str, rx: str, text: str) -> float | None:
    """The last value ``rx`` matches in ``text``, or the median of all for a "median" label."""
    found = [float(v) for v in re.findall(rx, text)]
    if not found:
        return None
    return statistics.median(found) if label.startswith("median") else found[-1]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _floats_after(header: str, text: str) -> list[float]:
    """The numbers of the numpy array printed on the lines after ``header``."""
    i = text.find(header)
    if i < 0:
        return []
    body = text[i + len(header):]
    end = body.find("]")
    return [float(v) for v in re.findall(_NUM, body[:end + 1])] if end >= 0 else []


def _backward_modes_outputs(text: str) -> dict[str, float | None]:
    """Max |da/dx - central differences| for each backward mode the example prints."""
    numeric = _floats_after("--- Numeric derivative", text)
    out: dict[str, float | None] = {}
    for mode in ("unroll", "implicit", "truncated", "dlm"):
        vals = _floats_after(f"--- backward_mode={mode}", text)
        ok = numeric and len(vals) == len(numeric)
        out[f"{mode} vs FD"] = (max(abs(a - b) for a, b in zip(vals, numeric, strict=True))
                                if ok else None)
    return out


def _fmt(v, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[dict]) -> str:
    by = {(r["case"], r["variant"]): r for r in results}
    lines = [
        "| example | wall s theirs / ours (ratio) | optimize s theirs / ours (ratio) | "
        "solves; median s per solve theirs / ours (ratio) | final error theirs / ours | "
        "outer loss & learned, theirs / ours | status theirs / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        t, o = by.get((case.name, "theirs")), by.get((case.name, "ours"))
        if not t and not o:
            continue
        t, o = t or {}, o or {}

        def ratio(key, t=t, o=o):
            a, b = t.get(key), o.get(key)
            return f"{b / a:.2f}x" if a and b else "-"

        outs = []
        for k in case.outputs.keys() | (o.get("outputs") or {}).keys():
            a, b = (t.get("outputs") or {}).get(k), (o.get("outputs") or {}).get(k)
            if a is not None or b is not None:
                outs.append(f"{k} {_fmt(a)} / {_fmt(b)}")
        opt_o = ",".join(o.get("optimizers") or []) or "-"
        conv = (f" ({o['converged']}/{o['elements']} conv.)" if o.get("elements") else "")
        lines.append(
            f"| {case.name} | {_fmt(t.get('wall_s'), '.2f')} / {_fmt(o.get('wall_s'), '.2f')}"
            f" ({ratio('wall_s')}) | {_fmt(t.get('optimize_s'), '.2f')} / "
            f"{_fmt(o.get('optimize_s'), '.2f')} ({ratio('optimize_s')}) | "
            f"{t.get('calls', '-')}, {o.get('calls', '-')}; "
            f"{_fmt(t.get('median_solve_s'), '.3g')} / {_fmt(o.get('median_solve_s'), '.3g')} "
            f"({ratio('median_solve_s')}) | "
            f"{_fmt(t.get('final_err'))} / {_fmt(o.get('final_err'))} | "
            f"{'; '.join(sorted(outs)) or '-'} | {t.get('status', '-')} / "
            f"{o.get('status', '-')} [{opt_o}{conv}] |")
    for name, why in UNRUNNABLE.items():
        lines.append(f"| {name} | - | - | - | - | - | not run: {why} |")
    return "\n".join(lines)


def write_doc(doc: Path, section: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    text = doc.read_text() if doc.exists() else "# Theseus' examples with PounceOptimizer\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["case"], r["variant"]): r for r in results}
    names, walls, opts = [], [], []
    for case in CASES:
        t, o = by.get((case.name, "theirs")), by.get((case.name, "ours"))
        if not t or not o:
            continue
        names.append(case.name)
        walls.append(o["wall_s"] / t["wall_s"] if o.get("wall_s") and t.get("wall_s")
                     else float("nan"))
        opts.append(o["optimize_s"] / t["optimize_s"]
                    if o.get("optimize_s") and t.get("optimize_s") else float("nan"))
    if not names:
        return
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], walls, 0.4, label="example wall time")
    ax.bar([x + 0.2 for x in xs], opts, 0.4, label="time in optimize()")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set_ylabel("PounceOptimizer / Theseus' optimizer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        script, record = Path(sys.argv[i + 1]), Path(sys.argv[i + 2])
        threads = int(sys.argv[sys.argv.index("--threads") + 1])
        argv = sys.argv[sys.argv.index("--") + 1:]
        _child(script, record, argv, threads)
        return 0

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--theseus", type=Path, help="a Theseus checkout (default: the mirror)")
    ap.add_argument("--quick", action="store_true", help="reduced sizes / epochs")
    ap.add_argument("--only", nargs="*", help="example names")
    ap.add_argument("--variants", nargs="*", default=["theirs", "ours"])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run (ours)")
    ap.add_argument("--timeout-theirs", type=float, default=900.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--doc", type=Path, help="write the table into this markdown file")
    ap.add_argument("--section", help="the doc's section (default: quick or full)")
    args = ap.parse_args()

    cases = [c for c in CASES if not args.only or c.name in args.only]
    tag = args.section or ("quick" if args.quick else "full")
    out = OUT / tag
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="theseus-examples-") as tmp:
        work = Path(tmp)
        checkout = args.theseus.resolve() if args.theseus else extract_mirror(work / "src")
        results = []
        for case in cases:
            for variant in args.variants:
                ours = variant == "ours"
                res = run_one(case, checkout, work, out, ours, args.quick,
                              args.timeout if ours else args.timeout_theirs, args.threads)
                results.append(res)
                print(f"{case.name:22s} {variant:6s} wall {_fmt(res['wall_s'], '.2f'):>8s} s "
                      f"optimize {res['optimize_s']:8.2f} s  solves {res['calls']:4d}  "
                      f"final err {_fmt(res['final_err'])}  {res['status']}", flush=True)
    (out / "results.json").write_text(
        json.dumps(results, indent=1))
    tbl = table(results)
    print()
    print(tbl)
    png = out / "theseus_examples.png"
    plot(results, png)
    print(f"\nplot: {png}")
    if args.doc:
        load = os.getloadavg()
        head = subprocess.run(["git", "-C", str(ROOT), "log", "--oneline", "-5"],
                              capture_output=True, text=True).stdout.strip()
        body = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with\n"
                f"`{' '.join(['.venv/bin/python', *sys.argv])}` "
                f"(load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
                f"{args.threads} torch thread(s) per run), at\n\n```\n{head}\n```\n\n{tbl}\n")
        write_doc(args.doc, tag, body)
        print(f"wrote {args.doc}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
