"""Ctrl-C during a PounceOptimizer solve raises KeyboardInterrupt within a second, on the
one-solve path (B=1, on the calling thread) and the lockstep path (B=2, worker threads).
Each case runs in a child process with a timeout, so a regression fails instead of
hanging."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_theseus_support import THESEUS_MARKS

pytestmark = THESEUS_MARKS

CHILD = textwrap.dedent('''
    import json, os, signal, sys, threading, time
    import theseus as th
    import torch
    from pounce_theseus import PounceOptimizer
    from testing_helpers.theseus_problems import pose_graph

    bsz = int(sys.argv[1])
    torch.set_num_threads(1)
    obj, inputs = pose_graph(bsz, n_poses=12)
    g = torch.Generator().manual_seed(3)
    for i in range(12):  # far-off starts: the solve runs for many seconds
        pose = th.SE2(tensor=inputs[f"pose_{i}"])
        jitter = torch.randn(bsz, 3, generator=g, dtype=torch.float64) * torch.tensor(
            [[1.5, 1.5, 2.5]], dtype=torch.float64)
        inputs[f"pose_{i}"] = pose.compose(th.SE2(x_y_theta=jitter)).tensor
    opt = PounceOptimizer(obj, max_iterations=2, tol=1e-300, acceptable_tol=1e-300,
                          batch_solve="elementwise")
    layer = th.TheseusLayer(opt)
    with torch.no_grad():
        layer.forward(inputs)  # warm-up: the timed solve below starts at once
    opt.params.max_iterations = 100000
    sent = {}

    def interrupt():
        time.sleep(0.5)
        sent["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.perf_counter()
    try:
        with torch.no_grad():
            _, info = layer.forward(inputs)
        out = {"returned": str(info.status), "after": time.perf_counter() - start}
    except KeyboardInterrupt:
        out = {"interrupted_after": time.perf_counter() - sent["t"]}
    print("RESULT " + json.dumps(out))
''')


@pytest.mark.parametrize("batch_size", [1, 2])
def test_sigint_raises_keyboard_interrupt_within_a_second(batch_size):
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(batch_size)],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert "interrupted_after" in result, result
    assert result["interrupted_after"] < 1.0, result
