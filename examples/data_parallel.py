"""Data-parallel training through a POUNCE layer with torch.distributed (gloo, 2 processes).

Each rank solves its own shard of the batch (its own native POUNCE batch solve) and
DistributedDataParallel averages the gradients. Because the loss is a mean over equal shards,
the averaged gradient equals the single-process gradient over the whole batch; this script
checks that, then trains a few full-batch steps both ways and compares the weights.
Scaling past one machine is the same code with MASTER_ADDR pointing at rank 0's host.
"""

from __future__ import annotations

import gc
import os
import socket

import cvxpy as cp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cvxpylayers.torch import CvxpyLayer
from example_args import parse_args

WORLD_SIZE = 2


class BoxQPNet(torch.nn.Module):
    """Linear scores -> z* = argmin 1/2||z||^2 - scores'z + 1/2||D z||^2
    s.t. 0 <= z <= 1, 1'z = k."""

    def __init__(self, n_in: int, n: int, k: float) -> None:
        super().__init__()
        import pounce_cvxpy  # noqa: F401  (registers solver="pounce"; also in each rank)

        self.score = torch.nn.Linear(n_in, n)
        self.D = torch.nn.Parameter(0.3 * torch.randn(n, n))
        scores, D = cp.Parameter(n), cp.Parameter((n, n))
        z = cp.Variable(n)
        objective = 0.5 * cp.sum_squares(z) - scores @ z + 0.5 * cp.sum_squares(D @ z)
        problem = cp.Problem(cp.Minimize(objective), [z >= 0, z <= 1, cp.sum(z) == k])
        self.layer = CvxpyLayer(problem, parameters=[scores, D], variables=[z], solver="pounce")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (z,) = self.layer(self.score(x), self.D)
        return z


def make_problem(small: bool, seed: int = 0):
    """Model (same initial weights in every process), inputs and targets."""
    torch.manual_seed(seed)
    n_in, n, batch = (4, 5, 16) if small else (8, 12, 256)
    model = BoxQPNet(n_in, n, k=2.0)
    x = torch.randn(batch, n_in)
    target = torch.rand(batch, n)
    target = 2.0 * target / target.sum(dim=1, keepdim=True)
    return model, x, target


def loss_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(model(x), target)


def train(model, x, target, steps: int, lr: float) -> list[float]:
    """Full-batch gradient descent; returns the losses."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, x, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def wrap_ddp(model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """DistributedDataParallel that leaves CvxpyLayer's sparse buffers alone.

    A CvxpyLayer keeps its canonicalisation maps as sparse CSR buffers. DDP broadcasts every
    buffer from rank 0 at construction and fails on sparse CSR; the maps are built from the
    same problem in every rank, so they need no synchronising.
    """
    sparse = [name for name, b in model.named_buffers() if b.layout != torch.strided]
    DDP = torch.nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, sparse)
    return DDP(model)


def _worker(rank: int, port: int, small: bool, steps: int, lr: float, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        model, x, target = make_problem(small)
        shard = slice(rank * x.shape[0] // WORLD_SIZE, (rank + 1) * x.shape[0] // WORLD_SIZE)
        ddp = wrap_ddp(model)
        loss_fn(ddp, x[shard], target[shard]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        model.zero_grad()
        losses = train(ddp, x[shard], target[shard], steps, lr)
        # Report this rank's shard loss average over ranks, the gradient and the final weights.
        t = torch.tensor(losses)
        dist.all_reduce(t)
        if rank == 0:
            results.put(([g.numpy() for g in grads], (t / WORLD_SIZE).tolist(),
                         [p.detach().numpy().copy() for p in model.parameters()]))
        else:
            results.put(None)
        # Tear down in order: DDP's reducer holds gloo work, so it goes before the process
        # group, and no rank leaves while the other still has traffic in flight. Otherwise
        # the slower rank can abort ("terminate called without an active exception").
        del ddp
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(small: bool, steps: int, lr: float = 0.5) -> dict:
    """Single-process and 2-rank gloo runs of the same training; returns both results.

    Runs in float64 and restores the caller's default dtype on return."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, x, target = make_problem(small)
        loss_fn(model, x, target).backward()
        single_grads = [p.grad.detach().numpy().copy() for p in model.parameters()]
        model.zero_grad()
        single_losses = train(model, x, target, steps, lr)
        single_weights = [p.detach().numpy().copy() for p in model.parameters()]
    finally:
        torch.set_default_dtype(previous)

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(_worker, args=(free_port(), small, steps, lr, results), nprocs=WORLD_SIZE)
    outputs = [results.get() for _ in range(WORLD_SIZE)]
    ddp_grads, ddp_losses, ddp_weights = next(o for o in outputs if o is not None)
    return {"single_grads": single_grads, "ddp_grads": ddp_grads,
            "single_losses": single_losses, "ddp_losses": ddp_losses,
            "single_weights": single_weights, "ddp_weights": ddp_weights}


def max_abs_diff(a, b) -> float:
    return max(float(abs(u - v).max()) for u, v in zip(a, b, strict=True))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    steps = 3 if args.small else 20
    print(f"[data_parallel] {WORLD_SIZE} gloo ranks on 127.0.0.1, {steps} full-batch steps",
          flush=True)
    r = run(args.small, steps)
    for step, (a, b) in enumerate(zip(r["single_losses"], r["ddp_losses"], strict=True), 1):
        print(f"[data_parallel] step {step}/{steps}  loss single={a:.6g}  2-rank={b:.6g}",
              flush=True)
    g = max_abs_diff(r["single_grads"], r["ddp_grads"])
    scale = max(float(abs(u).max()) for u in r["single_grads"])
    w = max_abs_diff(r["single_weights"], r["ddp_weights"])
    print(f"max |averaged 2-rank gradient - single-process gradient| = {g:.2e} "
          f"(largest gradient entry {scale:.2e})")
    print(f"max |weights after {steps} steps, 2-rank - single-process| = {w:.2e}")


if __name__ == "__main__":
    main()
