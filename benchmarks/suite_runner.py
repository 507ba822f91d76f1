"""Run a peer project's own pytest files with one of our plugins loaded, and count results.

Shared by benchmarks/run_cvxpylayers_tests.py and run_diffcp_tests.py: each of those is a
pytest plugin (its module name is passed as ``-p``) that swaps POUNCE in, plus a ``main``
that picks the test files and calls :func:`run_suite`. The peer's tests run against the
INSTALLED package (``-c /dev/null`` bypasses the checkout's pytest config); ``baseline``
runs the same files without the plugin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def counts(summary: str) -> dict[str, int]:
    """{"passed": 3, "failed": 1, ...} from pytest's closing summary line."""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)
    return {k: int(v) for v, k in found}


def run_suite(checkout: Path, targets: list[str], plugin: str, log_stem: str,
              baseline: bool, pytest_args: list[str], shims: tuple[str, ...] = ()) -> int:
    """Run pytest on ``targets`` (paths) rooted at ``checkout``, with the plugin module
    ``plugin`` (a file of this folder) unless ``baseline``, and the plugin modules ``shims``
    (files of this folder) in both modes; print the summary and the counts, write the full
    log to benchmarks/out/``log_stem``_{pounce|baseline}.log; return pytest's exit code."""
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(checkout),
           "-p", "no:cacheprovider", "-q", "-rfE", "-W", "ignore::DeprecationWarning"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))
    for name in (*shims, *(() if baseline else (plugin,))):
        cmd += ["-p", name]
    cmd += [*targets, *pytest_args]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out_dir = here / "out"
    out_dir.mkdir(exist_ok=True)
    log = out_dir / f"{log_stem}_{'baseline' if baseline else 'pounce'}.log"
    log.write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-20000:])
    print(f"full log: {log}")
    if proc.returncode not in (0, 1):
        print(proc.stderr[-5000:], file=sys.stderr)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"[{'baseline' if baseline else 'pounce'}] counts: {counts(tail)}")
    return proc.returncode
