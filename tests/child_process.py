"""Run a test's script in a fresh interpreter that cannot hang the suite.

The child runs from the repository root in its own session (process group), so a timeout
kills it and everything it forked; the test then fails naming the timeout instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_child(script: Path, timeout: float, hang: str = "") -> tuple[int, str, str]:
    """(returncode, stdout, stderr) of `python script`; fails the test after `timeout`
    seconds, with `hang` (what a hang would mean) and the output so far."""
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"no result after {timeout} s{hang}\n{out}\n{err[-2000:]}")
    return proc.returncode, out, err
