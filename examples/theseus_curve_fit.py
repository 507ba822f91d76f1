"""Constrained Theseus curve fit: y = a exp(b x) with a bound, and with an equality.

Theseus' own optimizers cannot take constraints. Here the same objective is solved three ways:
- th.GaussNewton, unconstrained (the fit Theseus gives you today);
- PounceOptimizer with a bound 0 <= a <= 2 (a physical limit the noisy data would break);
- PounceOptimizer with an equality: the curve must pass through an anchor point (x0, y0).
Then the bounded fit is differentiated: d(sum b*)/d(y data) through TheseusLayer's backward
(implicit, at the constrained KKT point) against central finite differences through scipy's
bounded least_squares. Prints both fits and the gradient check; writes out/theseus_curve_fit.png.
"""

from __future__ import annotations

import numpy as np
import theseus as th
import torch
from example_args import Progress, parse_args, save_figure
from scipy.optimize import least_squares

from pounce_theseus import Constraint, PounceOptimizer

A_TRUE, B_TRUE, A_MAX = 2.5, 0.3, 2.0
ANCHOR = (0.0, 1.5)


def curve_objective(n_points: int, batch: int) -> tuple[th.Objective, th.Vector, th.Vector]:
    """Sum of squared residuals y - a exp(b x) over the data held in aux vars "x" and "y"."""
    a, b = th.Vector(1, name="a"), th.Vector(1, name="b")
    x = th.Variable(torch.zeros(batch, n_points), name="x")
    y = th.Variable(torch.zeros(batch, n_points), name="y")

    def residual(optim_vars, aux_vars):
        (a_, b_), (x_, y_) = optim_vars, aux_vars
        return y_.tensor - a_.tensor * torch.exp(b_.tensor * x_.tensor)

    objective = th.Objective()
    objective.add(th.AutoDiffCostFunction([a, b], residual, n_points, aux_vars=[x, y],
                                          name="fit"))
    return objective, a, b


def anchor_constraint(a: th.Vector, b: th.Vector) -> Constraint:
    """a exp(b x0) == y0, written like an AutoDiffCostFunction error function."""
    x0, y0 = ANCHOR

    def through_anchor(optim_vars, aux_vars):
        a_, b_ = optim_vars
        return a_.tensor * torch.exp(b_.tensor * x0) - y0

    return Constraint(through_anchor, [a, b], [], lower=0.0, upper=0.0, name="anchor")


def solve(optimizer_factory, x: torch.Tensor, y: torch.Tensor, n_points: int):
    objective, a, b = curve_objective(n_points, x.shape[0])
    layer = th.TheseusLayer(optimizer_factory(objective, a, b))
    init = {"a": torch.ones(x.shape[0], 1), "b": torch.zeros(x.shape[0], 1)}
    sol, info = layer.forward({"x": x, "y": y, **init},
                              optimizer_kwargs={"backward_mode": "implicit"})
    return sol, info


def scipy_bounded_b(x: np.ndarray, y: np.ndarray) -> float:
    """b* of the bounded fit by scipy (the finite-difference reference)."""
    res = least_squares(lambda p: y - p[0] * np.exp(p[1] * x), x0=[1.0, 0.0],
                        bounds=([0.0, -np.inf], [A_MAX, np.inf]), xtol=1e-15, ftol=1e-15,
                        gtol=1e-15)
    return float(res.x[1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(0)
    n_points = 12 if args.small else 40
    x_np = np.linspace(0.0, 3.0, n_points)
    y_np = A_TRUE * np.exp(B_TRUE * x_np) + 0.1 * rng.standard_normal(n_points)
    x, y = torch.from_numpy(x_np)[None], torch.from_numpy(y_np)[None]
    progress = Progress("curve_fit", 4)

    gn, _ = solve(lambda obj, a, b: th.GaussNewton(obj, max_iterations=50,
                                                   abs_err_tolerance=1e-14,
                                                   rel_err_tolerance=1e-14), x, y, n_points)
    progress(1, a=gn["a"].item(), b=gn["b"].item())

    bounded, _ = solve(lambda obj, a, b: PounceOptimizer(obj, bounds={a: (0.0, A_MAX)}),
                       x, y, n_points)
    progress(2, a=bounded["a"].item(), b=bounded["b"].item())

    anchored, _ = solve(lambda obj, a, b: PounceOptimizer(obj, constraints=[
        anchor_constraint(a, b)]), x, y, n_points)
    x0, y0 = ANCHOR
    miss = anchored["a"].item() * np.exp(anchored["b"].item() * x0) - y0
    progress(3, a=anchored["a"].item(), b=anchored["b"].item(), anchor_miss=miss)

    y_req = y.clone().requires_grad_(True)
    bounded, _ = solve(lambda obj, a, b: PounceOptimizer(obj, bounds={a: (0.0, A_MAX)}),
                       x, y_req, n_points)
    (grad,) = torch.autograd.grad(bounded["b"].sum(), y_req)
    h = 3e-3  # scipy's bounded fit is accurate to ~1e-9: a wide step keeps its noise small
    fd = np.array([(scipy_bounded_b(x_np, y_np + h * e) - scipy_bounded_b(x_np, y_np - h * e))
                   / (2 * h) for e in np.eye(n_points)])
    rel = np.abs(grad[0].numpy() - fd).max() / np.abs(fd).max()
    progress(4, grad_vs_scipy_fd_rel_err=rel)
    print(f"unconstrained GaussNewton: a = {gn['a'].item():.6f} (violates a <= {A_MAX})")
    print(f"PounceOptimizer with bound: a = {bounded['a'].item():.12f} (bound held exactly)")
    print(f"PounceOptimizer through anchor {ANCHOR}: residual at anchor {miss:.2e}")
    print(f"d(b*)/d(y): max relative difference to scipy finite differences {rel:.2e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.0, 3.0, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x_np, y_np, "k.", label="data")
    for name, sol in (("GaussNewton (no constraint)", gn), (f"Pounce, a <= {A_MAX}", bounded),
                      ("Pounce, through anchor", anchored)):
        a_, b_ = sol["a"].item(), sol["b"].item()
        ax.plot(grid, a_ * np.exp(b_ * grid), label=f"{name}: a={a_:.3f}, b={b_:.3f}")
    ax.plot(*ANCHOR, "r*", markersize=12, label="anchor")
    ax.set(xlabel="x", ylabel="y", title="Constrained curve fit with PounceOptimizer")
    ax.legend(fontsize=8)
    save_figure(fig, args.out / "theseus_curve_fit.png")


if __name__ == "__main__":
    main()
