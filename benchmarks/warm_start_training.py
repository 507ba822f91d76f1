"""Does warm starting pay in a training loop? OptNet-style QP layer, warm start on vs off.

    .venv/bin/python benchmarks/warm_start_training.py [--steps 200] [--batch 64] [--n 20]
        [--m 20] [--lr 1e-3] [--mode full,minibatch] [--torch-threads 0]

The task (OptNet's "learn a QP from data"): targets z_i = argmin 1/2 z'Qz + (W* a_i)'z
s.t. G* z <= h*, for inputs a_i; the model learns W (q_i = W a_i), G and h of the layer
    z = argmin 1/2 z'Qz + q_i'z  s.t.  G z <= h
(`CvxpyLayer(..., solver="pounce")`, q batched, G and h shared) by Adam on the mean squared
error. Five models start from the same initial point and see the same batches; their steps
are interleaved in one process (rotating the order). Three run the interior-point engine
(`engine="ipm"`) with `solver_args={"warm_start": X}`, X = False (cold), True (each solve
starts from the layer's previous solution of the same batch size) and "auto" (warm only
where the canonical data moved little, pounce_cvxpy/solver_interface.py's WARM_AUTO_REL);
two run the QP engines of `SolveOptions.engine` with no IPM warm start: "auto" (the
default: the active set for items that moved little since their previous solve) and
"active_set" (every item starts from its previous answer: its active rows kept, or its
active-set session warm).

Modes:
  full       every step solves the same `--batch` items (full-batch training: the previous
             solution is the same item's, at parameters one Adam step away)
  minibatch  every step draws `--batch` items from a data set of 16 batches (the previous
             solution is another item's: what a DataLoader-fed training loop gives)

Prints per mode the median fwd+bwd wall time per step of each, their ratio, the mean
iterations per item and the median per-step sum of the items' native solve times
(`last_solve_info`: the engine's own time), the share of items each engine answered, the
final training loss of each (they must agree: a warm start must not change what is learned)
and the load average.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy import last_solve_info


def _problem(n: int, m: int, Q: np.ndarray) -> tuple[cp.Problem, list[cp.Parameter], cp.Variable]:
    z = cp.Variable(n)
    q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [G @ z <= h])
    return prob, [q, G, h], z


class Model(torch.nn.Module):
    """q_i = W a_i; the layer's G and h shared by the batch."""

    def __init__(self, layer: CvxpyLayer, W: torch.Tensor, G: torch.Tensor, h: torch.Tensor,
                 solver_args: dict) -> None:
        super().__init__()
        self.layer = layer
        self.W = torch.nn.Parameter(W.clone())
        self.G = torch.nn.Parameter(G.clone())
        self.h = torch.nn.Parameter(h.clone())
        self.solver_args = solver_args

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        (z,) = self.layer(a @ self.W.T, self.G, self.h, solver_args=self.solver_args)
        return z


# name: (label, solver_args); "cold" first (the reference of the ratios).
VARIANTS = {
    "cold": ("warm_start=False, engine='ipm'", {"warm_start": False, "engine": "ipm"}),
    "warm": ("warm_start=True, engine='ipm'", {"warm_start": True, "engine": "ipm"}),
    "auto": ("warm_start='auto', engine='ipm'", {"warm_start": "auto", "engine": "ipm"}),
    "engine_auto": ("engine='auto' (default)", {}),
    "active_set": ("engine='active_set'", {"engine": "active_set"}),
}


def run(mode: str, steps: int, batch: int, n: int, m: int, lr: float, seed: int = 0) -> dict:
    """Train the two models side by side; returns the per-step times, iterations and losses."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    Q = M @ M.T / n + np.eye(n)
    k = n  # input features
    W_true = torch.tensor(rng.standard_normal((n, k)))
    G_true = torch.tensor(rng.standard_normal((m, n)))
    h_true = torch.tensor(rng.random(m) + 0.5)
    n_data = batch if mode == "full" else 16 * batch
    a_all = torch.tensor(rng.standard_normal((n_data, k)))
    prob, params, z = _problem(n, m, Q)
    target_layer = CvxpyLayer(prob, params, [z], solver="pounce")
    with torch.no_grad():
        (targets,) = target_layer(a_all @ W_true.T, G_true, h_true,
                                  solver_args={"tol": 1e-10})
    W0 = W_true + 0.3 * torch.tensor(rng.standard_normal((n, k)))
    G0 = G_true + 0.3 * torch.tensor(rng.standard_normal((m, n)))
    h0 = h_true + 0.1
    models, opts = {}, {}
    for name, (_, args) in VARIANTS.items():
        prob, params, z = _problem(n, m, Q)
        layer = CvxpyLayer(prob, params, [z], solver="pounce")
        models[name] = Model(layer, W0, G0, h0, args)
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=lr)
    times = {name: [] for name in models}
    engines: dict[str, collections.Counter] = {name: collections.Counter() for name in models}
    iters = {name: [] for name in models}
    ipm = {name: [] for name in models}
    losses = {name: 0.0 for name in models}
    order = np.random.default_rng(seed + 1)
    for step in range(steps):
        if mode == "full":
            idx = torch.arange(batch)
        else:
            b = int(order.integers(16))
            idx = torch.arange(b * batch, (b + 1) * batch)
        a, target = a_all[idx], targets[idx]
        k = step % len(VARIANTS)
        names = tuple(VARIANTS)[k:] + tuple(VARIANTS)[:k]
        for name in names:
            model, opt = models[name], opts[name]
            t = time.perf_counter()
            opt.zero_grad()
            loss = ((model(a) - target) ** 2).mean()
            loss.backward()
            times[name].append(time.perf_counter() - t)
            opt.step()
            info = last_solve_info(model.layer)
            iters[name].append(float(info.iterations.double().mean()))
            ipm[name].append(float(info.solve_time.sum()))
            if step:
                engines[name].update(info.engine or [])
            losses[name] = float(loss.detach())
    return {"times": times, "iters": iters, "ipm": ipm, "losses": losses, "engines": engines}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mode", default="full,minibatch")
    ap.add_argument("--torch-threads", type=int, default=0)
    a = ap.parse_args()
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    load0 = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, load average {load0[0]:.2f} "
          f"{load0[1]:.2f} {load0[2]:.2f} at start; B={a.batch}, n={a.n}, m={a.m}, "
          f"{a.steps} Adam steps at lr {a.lr}")
    for mode in [s.strip() for s in a.mode.split(",") if s.strip()]:
        r = run(mode, a.steps, a.batch, a.n, a.m, a.lr)
        med = {k: statistics.median(v[1:]) for k, v in r["times"].items()}  # step 0: cold
        it = {k: statistics.fmean(v[1:]) for k, v in r["iters"].items()}
        ipm = {k: statistics.median(v[1:]) for k, v in r["ipm"].items()}
        print(f"\n== {mode}: fwd+bwd per step, median of {a.steps - 1} steps")
        for k, (label, _) in VARIANTS.items():
            total = sum(r["engines"][k].values()) or 1
            mix = ", ".join(f"{e} {c / total:.0%}" for e, c in r["engines"][k].most_common())
            print(f"  {label:30s}  {med[k] * 1e3:8.2f} ms  iterations/item {it[k]:5.2f}  "
                  f"native time (sum over items) {ipm[k] * 1e3:7.2f} ms  final loss "
                  f"{r['losses'][k]:.6e}  engines: {mix}")
        for k in list(VARIANTS)[1:]:
            print(f"  {k} / cold: step time {med[k] / med['cold']:.3f}, iterations "
                  f"{it[k] / it['cold']:.3f}, native time {ipm[k] / ipm['cold']:.3f}")
    load1 = os.getloadavg()
    print(f"\nload average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
