"""Quick start: train a small model through a POUNCE layer (the README demo, < 1 min).

A linear model maps features to scores; a convex-optimisation layer projects the scores onto
the probability simplex (a QP: min ||x - scores||^2 s.t. x >= 0, sum x = 1). The targets come
from a hidden "teacher" model pushed through the same projection. Gradients flow through the
QP's KKT conditions (pounce-layers' implicit backward), so plain SGD recovers the teacher.

The one line that makes cvxpylayers use POUNCE is `solver="pounce"` (after `import pounce_cvxpy`).
"""

from __future__ import annotations

import cvxpy as cp
import torch
from cvxpylayers.torch import CvxpyLayer
from example_args import Progress, parse_args

import pounce_cvxpy  # noqa: F401  (registers solver="pounce")


def simplex_projection_layer(k: int) -> CvxpyLayer:
    """x*(scores) = argmin ||x - scores||^2 over the probability simplex in R^k."""
    scores = cp.Parameter(k)
    x = cp.Variable(k)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - scores)), [x >= 0, cp.sum(x) == 1])
    return CvxpyLayer(problem, parameters=[scores], variables=[x], solver="pounce")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    n_features, k = 6, 5
    n_train, steps, batch = (64, 30, 16) if args.small else (512, 150, 64)

    layer = simplex_projection_layer(k)
    teacher = torch.nn.Linear(n_features, k)
    features = torch.randn(n_train, n_features)
    with torch.no_grad():
        (targets,) = layer(teacher(features))

    model = torch.nn.Linear(n_features, k)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    progress = Progress("quickstart", steps, every=max(1, steps // 10))
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_train, (batch,))
        (x,) = layer(model(features[idx]))
        loss = torch.nn.functional.mse_loss(x, targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress(step, loss=loss.item())

    with torch.no_grad():
        (x,) = layer(model(features))
        final = torch.nn.functional.mse_loss(x, targets).item()
        (x0,) = layer(torch.nn.Linear(n_features, k)(features))
        baseline = torch.nn.functional.mse_loss(x0, targets).item()
    print(f"full-data MSE: untrained {baseline:.3e} -> trained {final:.3e}")


if __name__ == "__main__":
    main()
