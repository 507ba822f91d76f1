"""No memory growth across training steps, on every public path.

Each path runs a few training steps (forward, backward) in a child process; the child keeps
only weak references to every tensor/array it made (inputs and outputs), drops the strong
ones, runs `gc.collect()` and reports how many are still alive. A reference cycle that
Python's collector cannot break (one through an autograd node, which gc does not traverse)
keeps the whole graph and its saved state alive for the rest of the process: the count is
then the number of steps instead of 0. The child runs with a timeout so a hang fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

STEPS = 6

CHILD = textwrap.dedent(r'''
    import gc, json, sys, warnings, weakref
    import numpy as np, torch

    STEPS = int(sys.argv[1])
    results = {}

    def alive_after(step, holds_last=False):
        """Run `step(i)` STEPS times; each returns objects to watch. Count survivors.

        holds_last: the API keeps its latest step by design (a Theseus objective holds its
        current variables and inputs), so only the steps before the last are counted.
        """
        refs = []
        for i in range(STEPS):
            watched = [weakref.ref(o) for o in step(i)]
            if not (holds_last and i == STEPS - 1):
                refs.extend(watched)
        gc.collect()
        return sum(r() is not None for r in refs)

    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer
    import pounce_cvxpy  # noqa: F401

    n = 6
    xv, qp = cp.Variable(n), cp.Parameter(n)
    qp_problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xv) + qp @ xv),
                            [xv >= 0, cp.sum(xv) <= 1])
    tv, cv = cp.Variable(), cp.Parameter(n)
    soc_problem = cp.Problem(cp.Minimize(cv @ xv + tv), [cp.norm(xv, 2) <= tv, tv <= 1])

    for name, problem, param, var in (("qp", qp_problem, qp, xv),
                                      ("socp", soc_problem, cv, xv)):
        layer = CvxpyLayer(problem, [param], [var], solver="pounce")
        for dtype in (torch.float32, torch.float64):
            def train(i, layer=layer, dtype=dtype):
                p = torch.randn(4, n, dtype=dtype, generator=torch.Generator().manual_seed(i),
                                requires_grad=True)
                (out,) = layer(p)
                out.square().sum().backward()
                return [p, out]

            def forward_only(i, layer=layer, dtype=dtype):
                p = torch.randn(4, n, dtype=dtype, generator=torch.Generator().manual_seed(i),
                                requires_grad=True)
                (out,) = layer(p)
                return [p, out]

            tag = str(dtype).split(".")[-1]
            results[f"layer-{name}-{tag}-train"] = alive_after(train)
            results[f"layer-{name}-{tag}-forward"] = alive_after(forward_only)

    from pounce_kkt import ConicStructure, conic_forward, conic_solve, conic_vjp
    import scipy.sparse as sp

    A = sp.csc_matrix(np.vstack([-np.eye(n), np.ones((1, n))]))
    structure = ConicStructure.from_scipy(A, {"l": n + 1}, sp.csc_matrix(np.eye(n)))
    b = np.r_[np.zeros(n), 1.0]

    for dtype in (torch.float32, torch.float64):
        tag = str(dtype).split(".")[-1]

        def core_solve(i, dtype=dtype):
            q = torch.randn(4, n, dtype=dtype, requires_grad=True)
            P = torch.ones(n, dtype=dtype, requires_grad=True)
            Av = torch.as_tensor(A.data, dtype=dtype).requires_grad_(True)
            sol = conic_solve(structure, P, q, Av, torch.as_tensor(b, dtype=dtype))
            (sol.x.square().sum() + sol.y.sum()).backward()
            return [q, P, Av, sol.x, sol.y, sol.s]

        def core_forward_vjp(i, dtype=dtype):
            q = torch.randn(4, n, dtype=dtype)
            sol, state = conic_forward(structure, torch.ones(n, dtype=dtype), q,
                                       torch.as_tensor(A.data, dtype=dtype),
                                       torch.as_tensor(b, dtype=dtype))
            grads = conic_vjp(state, torch.ones_like(sol.x), None, None)
            return [q, sol.x, sol.y, sol.s, state, *[g for g in grads if g is not None]]

        results[f"conic_solve-{tag}"] = alive_after(core_solve)
        results[f"conic_forward_vjp-{tag}"] = alive_after(core_forward_vjp)

    from pounce_cvxpy import diffcp

    def diffcp_api(i):
        c = np.random.default_rng(i).standard_normal(n)
        x, y, s, D, DT = diffcp.solve_and_derivative(
            A, b, c, {"l": n + 1}, P=sp.csc_matrix(np.eye(n)))
        dA, db, dc = DT(np.ones(n), np.zeros(n + 1), np.zeros(n + 1))
        return [x, y, s, D, DT, db, dc]

    results["diffcp"] = alive_after(diffcp_api)

    import theseus as th
    from pounce_theseus import PounceOptimizer

    # y = a exp(b x) fitted to 20 samples, a batch of 4 (float64).
    xs = torch.linspace(0.0, 1.0, 20, dtype=torch.float64).expand(4, 20).clone()
    ys = 1.5 * torch.exp(-xs) + 0.05 * torch.randn(4, 20, dtype=torch.float64)
    a, b = th.Vector(1, name="a", dtype=torch.float64), th.Vector(1, name="b", dtype=torch.float64)

    def fit_error(optim_vars, aux_vars):
        return optim_vars[0].tensor * torch.exp(optim_vars[1].tensor * aux_vars[0].tensor) \
            - aux_vars[1].tensor

    obj = th.Objective(dtype=torch.float64)
    weight = th.ScaleCostWeight(th.Variable(torch.ones(1, 1, dtype=torch.float64), name="w"))
    obj.add(th.AutoDiffCostFunction([a, b], fit_error, 20, name="fit", cost_weight=weight,
                                    aux_vars=[th.Variable(xs, name="x"),
                                              th.Variable(ys, name="y")]))
    inputs = {"a": torch.ones(4, 1, dtype=torch.float64),
              "b": torch.zeros(4, 1, dtype=torch.float64), "x": xs, "y": ys}
    layer = th.TheseusLayer(PounceOptimizer(obj, tol=1e-10))

    def theseus_step(i):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        sol, info = layer.forward(dict(leaves), optimizer_kwargs={"backward_mode": "implicit"})
        sum(v.square().sum() for v in sol.values()).backward()
        return [*leaves.values(), *sol.values()]

    results["theseus"] = alive_after(theseus_step, holds_last=True)
    print("RESULTS " + json.dumps(results))
''')


@pytest.fixture(scope="module")
def survivors() -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(STEPS)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


PATHS = [f"layer-{p}-{d}-{k}" for p in ("qp", "socp") for d in ("float32", "float64")
         for k in ("train", "forward")]
PATHS += [f"{api}-{d}" for api in ("conic_solve", "conic_forward_vjp")
          for d in ("float32", "float64")]
PATHS += ["diffcp", "theseus"]


@pytest.mark.parametrize("path", PATHS)
def test_nothing_survives_a_training_step(survivors, path):
    assert path in survivors, f"the child did not run {path}"
    assert survivors[path] == 0, (
        f"{path}: {survivors[path]} objects made in {STEPS} steps are still alive after "
        "gc.collect() (a reference cycle keeps each step's graph and saved state)")
