"""The native core in child processes (issue 11, item 2).

rayon's global pool does not survive ``fork``: after the parent had run a batch of two or
more items, a forked child's first batch waited forever for the parent's worker threads.
The core now runs on a pool of its own that a forked child rebuilds (rust/core/src/pool.rs).
Each scenario runs in a subprocess with a timeout, so a regression fails instead of hanging:
``os.fork`` (and a fork of the fork), a ``multiprocessing`` fork pool, a fork-based torch
``DataLoader`` whose workers call a ``CvxpyLayer``, and the spawn and forkserver start
methods.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from child_process import run_child

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Problems built from numpy alone, shared by the scripts below.
PRELUDE = '''
import os, sys
import numpy as np
import torch
from pounce_kkt import _native, ConicStructure, SolveOptions, conic_solve
from testing_helpers.native_calls import native_solve


def box_qp(B=8, n=4, seed=0):
    """min 1/2 x'x + q'x  s.t.  -1 <= x <= 1 (rows x <= 1, -x <= 1); solution clip(-q)."""
    rng = np.random.default_rng(seed)
    m = 2 * n
    a_indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    a_indices = np.array([r for j in range(n) for r in (j, n + j)], dtype=np.int64)
    return dict(
        n=n, m=m, p_indptr=np.arange(n + 1, dtype=np.int64),
        p_indices=np.arange(n, dtype=np.int64), p_values=np.ones((B, n)),
        a_indptr=a_indptr, a_indices=a_indices,
        a_values=np.tile(np.array([1.0, -1.0] * n), (B, 1)),
        q=2 * rng.standard_normal((B, n)), b=np.ones((B, m)), cones={"z": 0, "l": m},
    )


def solve(B=8, seed=0):
    """A native forward batch; checks the solution."""
    d = box_qp(B, seed=seed)
    r = native_solve(d)
    assert r["status"] == ["optimal"] * B, r["status"]
    assert np.allclose(r["x"], np.clip(-d["q"], -1, 1), atol=1e-6)
    return r["x"]


class Quadratic:
    """min |x - c|^2 for nlp_solve, the Theseus path's native entry point."""

    def __init__(self, c):
        self.c = c

    def objective(self, x):
        return float(((x - self.c) ** 2).sum())

    def gradient(self, x):
        return 2 * (x - self.c)

    def constraints(self, x):
        return np.zeros(0)

    def jacobian(self, x):
        return np.zeros(0)

    def hessian(self, x, f, lam):
        return 2 * f * np.ones(len(x))

    def iteration(self, *args):
        return True


def nlp(n=3):
    c = np.arange(1.0, n + 1)
    e, ei, d = np.zeros(0), np.zeros(0, np.int64), np.arange(n, dtype=np.int64)
    r = _native.nlp_solve(Quadratic(c), np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf),
                          e, e, ei, ei, d, d, {"print_level": 0})
    assert r["status"] == "solve_succeeded" and np.allclose(r["x"], c), r


def solve_and_backward(B=8, seed=0):
    """Forward and the native sparse adjoint (`ConicProblem.adjoint`) through the core."""
    d = box_qp(B, seed=seed)
    st = ConicStructure(d["n"], d["m"], d["a_indptr"], d["a_indices"], d["cones"],
                        d["p_indptr"], d["p_indices"])
    q = torch.tensor(d["q"], requires_grad=True)
    sol = conic_solve(st, torch.tensor(d["p_values"]), q, torch.tensor(d["a_values"]),
                      torch.tensor(d["b"]), SolveOptions(backward="sparse"))
    sol.x.sum().backward()
    inside = (d["q"].__abs__() < 1).astype(float)
    assert np.allclose(q.grad.numpy(), -inside, atol=1e-5), q.grad
    return sol.x.detach().numpy()
'''


def run_script(tmp_path: Path, body: str, timeout: float = TIMEOUT) -> str:
    """Run PRELUDE + body in a fresh interpreter (its own process group); fail on a
    non-zero exit or when it has not finished within `timeout` seconds (a hang)."""
    path = tmp_path / "script.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    code, out, err = run_child(path, timeout, " (hung: a forked child never returned?)")
    assert code == 0, f"{out}\n{err}"
    assert "ALL OK" in out, f"{out}\n{err}"
    return out


def test_os_fork_after_a_parent_batch(tmp_path):
    """The parent runs a batch (its pool is up), then forks; the child, and a child of the
    child, run forward and adjoint batches; the parent keeps working after."""
    run_script(tmp_path, '''
        import signal
        signal.alarm(150)  # the child inherits it: a hang kills it rather than the test
        solve()
        solve_and_backward()

        nlp()

        def in_fork(depth):
            """Run child(depth) in a forked process; fail unless it exits 0."""
            pid = os.fork()
            if pid == 0:
                try:
                    child(depth)
                except BaseException as e:
                    print(f"depth {depth} child failed:", repr(e), flush=True)
                    os._exit(1)
                os._exit(0)
            _, code = os.waitpid(pid, 0)
            assert code == 0, f"depth {depth} child exited with {code}"

        def child(depth):
            solve(seed=depth)
            solve_and_backward(seed=depth)
            nlp()
            if depth < 2:
                in_fork(depth + 1)

        in_fork(1)
        solve(seed=5)
        solve_and_backward(seed=5)
        print("ALL OK")
    ''')


def test_multiprocessing_fork_pool(tmp_path):
    run_script(tmp_path, '''
        import multiprocessing as mp

        def work(seed):
            solve(seed=seed)
            return float(solve_and_backward(seed=seed).sum())

        if __name__ == "__main__":
            expected = [work(s) for s in range(4)]  # the parent's pool is up
            with mp.get_context("fork").Pool(2) as pool:
                got = pool.map(work, range(4))
            assert np.allclose(got, expected), (got, expected)
            print("ALL OK")
    ''')


def test_fork_dataloader_workers_call_a_cvxpylayer(tmp_path):
    pytest.importorskip("cvxpylayers")
    run_script(tmp_path, '''
        import cvxpy as cp
        from cvxpylayers.torch import CvxpyLayer
        import pounce_cvxpy  # noqa: F401  (registers "pounce")

        n = 4
        c = cp.Parameter(n)
        x = cp.Variable(n)
        prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + c @ x), [x >= -1, x <= 1])
        layer = CvxpyLayer(prob, parameters=[c], variables=[x], solver="pounce")
        cs = torch.tensor(2 * np.random.default_rng(0).standard_normal((8, n)))
        expected = torch.clamp(-cs, -1, 1)
        (first,) = layer(cs)  # a native batch of 8 in the parent before the fork
        assert torch.allclose(first, expected, atol=1e-6)

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 8

            def __getitem__(self, i):
                (sol,) = layer(cs[i : i + 2] if i < 7 else cs[i - 1 : i + 1])
                return sol[0] if i < 7 else sol[1]

        loader = torch.utils.data.DataLoader(
            Data(), batch_size=4, num_workers=2, multiprocessing_context="fork", timeout=120)
        got = torch.cat(list(loader))
        assert torch.allclose(got, expected, atol=1e-6), (got, expected)
        print("ALL OK")
    ''')


def test_fork_while_a_thread_holds_the_kept_answers(tmp_path):
    """A curved-cone layer keeps its items' answers (pounce_kkt/kept_newton.py) behind a
    lock; a fork while another thread holds it must not leave the child waiting on it: the
    child starts with fresh stores, solves the same structure (IPM, then its own kept
    answers) and gets the parent's x."""
    run_script(tmp_path, """
        import threading
        from pounce_kkt import kept_newton
        from testing_helpers.conic_problems import random_problem_batch

        bt = random_problem_batch({"l": 3, "q": [4]}, 5, batch=2, seed=1)
        st = ConicStructure(bt.n, bt.m, bt.a_indptr, bt.a_indices, bt.cones,
                            bt.p_indptr, bt.p_indices)
        vals = [torch.tensor(t) for t in (bt.p_values, bt.q, bt.a_values, bt.b)]
        x0 = conic_solve(st, *vals).x
        assert conic_solve(st, *vals).engine == ["newton_kept"] * 2
        store = kept_newton._store(st)
        held, release = threading.Event(), threading.Event()

        def hold():
            with store._lock:
                held.set()
                release.wait()

        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            try:
                for engine in (["ipm"] * 2, ["newton_kept"] * 2):
                    sol = conic_solve(st, *vals)
                    assert sol.engine == engine, sol.engine
                    assert torch.allclose(sol.x, x0, atol=1e-7)
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
            os._exit(0)
        release.set()
        t.join()
        _, code = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(code) == 0
        print("ALL OK")
    """)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawn_and_forkserver(tmp_path, method):
    run_script(tmp_path, f'''
        import multiprocessing as mp

        def work(seed):
            solve(seed=seed)
            return float(solve_and_backward(seed=seed).sum())

        if __name__ == "__main__":
            expected = [work(s) for s in range(3)]
            with mp.get_context("{method}").Pool(2) as pool:
                got = pool.map(work, range(3))
            assert np.allclose(got, expected), (got, expected)
            print("ALL OK")
    ''')
