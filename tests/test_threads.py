"""One CvxpyLayer called from several threads at once.

Threads run in a child process with a timeout (a deadlock fails instead of hanging). Each
thread has its own dtype and parameter values; every result is checked for its dtype and
against the same problem solved alone, before any thread started. Per-call state
(the output dtype, the warm-start cache, the per-item statuses of `last_solve_info`) must
never carry one thread's call into another's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(r'''
    import json, sys, threading
    import cvxpy as cp, numpy as np, torch
    from cvxpylayers.torch import CvxpyLayer
    import pounce_cvxpy

    ITERS = int(sys.argv[1])
    warm = sys.argv[2] == "warm"
    torch.set_num_threads(1)
    n = 5
    x, c = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + c @ x),
                         [x >= -1, cp.sum(x) <= 1])
    layer = CvxpyLayer(problem, [c], [x], solver="pounce",
                       solver_args={"warm_start": warm})

    # Each thread: its dtype, its batch, its inputs; references solved alone, up front.
    jobs = []
    for k, (dtype, batch) in enumerate([(torch.float32, 3), (torch.float64, 3),
                                        (torch.float32, 4), (torch.float64, 2)]):
        g = torch.Generator().manual_seed(k)
        inputs = [torch.randn(batch, n, generator=g, dtype=dtype) for _ in range(4)]
        refs = [layer(p)[0].double() for p in inputs]
        jobs.append((dtype, inputs, refs))

    failures, errors = [], []
    start = threading.Barrier(len(jobs))

    def work(k):
        dtype, inputs, refs = jobs[k]
        start.wait()
        try:
            for i in range(ITERS):
                j = i % len(inputs)
                (out,) = layer(inputs[j])
                info = pounce_cvxpy.last_solve_info(layer)
                err = float((out.double() - refs[j]).abs().max())
                tol = 1e-5 if dtype == torch.float32 else 1e-7
                if out.dtype != dtype or err > tol or len(info.status) != inputs[j].shape[0]:
                    failures.append((k, i, str(out.dtype), err, len(info.status)))
        except Exception as e:  # reported, not swallowed
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("RESULTS " + json.dumps({"failures": len(failures), "first": failures[:5],
                                   "errors": errors[:5], "calls": ITERS * len(jobs)}))
''')


@pytest.mark.parametrize("warm", ["cold", "warm"])
def test_threads_get_their_own_dtype_values_and_statuses(warm):
    proc = subprocess.run([sys.executable, "-c", CHILD, "150", warm], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    result = json.loads(line[len("RESULTS "):])
    assert result["errors"] == [], result["errors"]
    assert result["failures"] == 0, (
        f"{result['failures']} of {result['calls']} calls returned another thread's dtype, "
        f"values or statuses; first (thread, iteration, dtype, error, items): "
        f"{result['first']}")


def test_copies_keep_the_layout_and_options_but_no_thread_state():
    """The per-thread state (a threading.local) is not copied: a pickled or deep-copied
    PounceSolver starts with an empty warm-start cache and no last solve."""
    import copy
    import pickle

    import cvxpy as cp
    import torch
    from cvxpylayers.torch import CvxpyLayer

    import pounce_cvxpy

    x, c = cp.Variable(2), cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x) + c @ x), [x >= 0]), [c], [x],
                       solver="pounce", solver_args={"warm_start": True})
    layer(torch.ones(3, 2))
    solver = layer.ctx.solver
    assert pounce_cvxpy.last_solve_info(layer).status == ["optimal"] * 3
    for clone in (pickle.loads(pickle.dumps(solver)), copy.deepcopy(solver)):
        assert clone.last_info is None and clone._calls().warm == {}
        assert clone.layout.structure.n == solver.layout.structure.n
        assert clone._args == solver._args
