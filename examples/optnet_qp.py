"""OptNet-style learned QP layer: the QP's cost, constraints and input map are all learned.

    z*(x) = argmin_z  1/2 z'(L L' + eps I) z + (W x)'z   s.t.  G z <= h

A hidden teacher of this form generates (x, z*) pairs; a student with its own L, W, G, h
learns them end to end through the layer (gradients from the QP's KKT system, computed by
pounce-layers). An MLP with a comparable number of weights is trained on the same data for
contrast: it cannot represent the teacher's active constraints. Writes out/optnet_qp.png.

`--layer cvxpylayers` (the default) builds the QP as a CvxpyLayer with solver="pounce";
`--layer qpth` calls it through `pounce_cvxpy.qpth.QPFunction`, qpth's OptNet API
(Q = LL' + eps I, p = W x, G z <= h), and first checks it against the CvxpyLayer.
"""

from __future__ import annotations

import cvxpy as cp
import torch
from cvxpylayers.torch import CvxpyLayer
from example_args import Progress, parse_args, save_figure

import pounce_cvxpy  # noqa: F401  (registers solver="pounce")
from pounce_cvxpy.qpth import QPFunction

EPS = 0.1


class OptNetQP(torch.nn.Module):
    """A QP layer whose L, G, h and input map W are learnable parameters."""

    def __init__(self, n_in: int, n: int, m: int, layer: str = "cvxpylayers") -> None:
        super().__init__()
        self.kind = layer
        self.W = torch.nn.Parameter(torch.randn(n, n_in) / n_in**0.5)
        self.L = torch.nn.Parameter(torch.eye(n) + 0.1 * torch.randn(n, n))
        self.G = torch.nn.Parameter(torch.randn(m, n))
        self.h = torch.nn.Parameter(torch.rand(m) + 0.5)
        L, p, G, h = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
        z = cp.Variable(n)
        objective = 0.5 * cp.sum_squares(L.T @ z) + 0.5 * EPS * cp.sum_squares(z) + p @ z
        problem = cp.Problem(cp.Minimize(objective), [G @ z <= h])
        self.layer = CvxpyLayer(problem, parameters=[L, p, G, h], variables=[z], solver="pounce")
        self.qp = QPFunction()

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        if (layer or self.kind) == "qpth":
            Q = self.L @ self.L.T + EPS * torch.eye(self.L.shape[0], dtype=self.L.dtype)
            empty = torch.empty(0, dtype=self.L.dtype)  # no equality constraints
            return self.qp(Q, x @ self.W.T, self.G, self.h, empty, empty)
        (z,) = self.layer(self.L, x @ self.W.T, self.G, self.h)
        return z


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda parser: parser.add_argument(
        "--layer", choices=("cvxpylayers", "qpth"), default="cvxpylayers",
        help="the QP layer: a CvxpyLayer, or qpth's QPFunction API (default cvxpylayers)"))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    n_in, n, m = 10, 8, 12
    n_train, n_test, steps, batch = (64, 32, 15, 16) if args.small else (1024, 256, 300, 64)

    teacher = OptNetQP(n_in, n, m, args.layer)
    x_train, x_test = torch.randn(n_train, n_in), torch.randn(n_test, n_in)
    if args.layer == "qpth":
        with torch.no_grad():
            gap = (teacher(x_test, "qpth") - teacher(x_test, "cvxpylayers")).abs().max().item()
        print(f"layer: qpth's QPFunction API; max |z_qpth - z_cvxpylayer| = {gap:.1e}")
    with torch.no_grad():
        z_train, z_test = teacher(x_train), teacher(x_test)
        active = (z_test @ teacher.G.T >= teacher.h - 1e-6).float().sum(1).mean().item()
    print(f"teacher: {active:.1f} of {m} constraints active per test point on average")

    student = OptNetQP(n_in, n, m, args.layer)
    mlp = torch.nn.Sequential(torch.nn.Linear(n_in, 32), torch.nn.ReLU(), torch.nn.Linear(32, n))
    opt_qp = torch.optim.Adam(student.parameters(), lr=0.02)
    opt_mlp = torch.optim.Adam(mlp.parameters(), lr=0.01)
    mse = torch.nn.functional.mse_loss
    history = {"OptNet QP layer": [], "MLP": []}
    progress = Progress("optnet", steps, every=max(1, steps // 15))
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_train, (batch,))
        for model, opt in ((student, opt_qp), (mlp, opt_mlp)):
            loss = mse(model(x_train[idx]), z_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if step % max(1, steps // 15) == 0 or step == steps:
            with torch.no_grad():
                test = {name: mse(model(x_test), z_test).item()
                        for name, model in (("OptNet QP layer", student), ("MLP", mlp))}
            for name, value in test.items():
                history[name].append((step, value))
            progress(step, qp_test_mse=test["OptNet QP layer"], mlp_test_mse=test["MLP"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in history.items():
        ax.semilogy(*zip(*points, strict=True), marker="o", label=name)
    ax.set(xlabel="training step", ylabel="test MSE", title="Learning a constrained QP map")
    ax.legend()
    save_figure(fig, args.out / "optnet_qp.png")


if __name__ == "__main__":
    main()
