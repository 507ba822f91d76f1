"""Differentiable portfolio: an SOCP layer with a risk limit, fed by a learned return model.

    w*(mu) = argmax_w  mu'w - gamma ||w||^2   s.t.  1'w = 1,  w >= 0,  ||L'w|| <= sigma_max

(L L' = Sigma, so the last constraint is a second-order cone bounding the portfolio's
volatility.) A linear model predicts mu from market features. We train it two ways on the
same synthetic market:
- "predict, then optimise": least squares on the returns, then plug mu into the layer;
- "decision-focused": maximise the realised return r'w*(mu) directly, backpropagating through
  the SOCP (pounce-layers' KKT adjoint).
Prints the test-set realised return of both and writes out/portfolio.png.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer
from example_args import Progress, parse_args, save_figure

import pounce_cvxpy  # noqa: F401  (registers solver="pounce")

GAMMA = 0.05


def portfolio_layer(L: np.ndarray, sigma_max: float) -> CvxpyLayer:
    """w*(mu): mean-variance-regularised allocation with a volatility (SOC) limit."""
    n = L.shape[0]
    mu = cp.Parameter(n)
    w = cp.Variable(n)
    constraints = [cp.sum(w) == 1, w >= 0, cp.norm(L.T @ w, 2) <= sigma_max]
    objective = cp.Maximize(mu @ w - GAMMA * cp.sum_squares(w))
    return CvxpyLayer(cp.Problem(objective, constraints), parameters=[mu], variables=[w],
                      solver="pounce")


def synthetic_market(n_assets: int, n_features: int, periods: int, rng: np.random.Generator):
    """Features and next-period returns with a nonlinear (so misspecified) signal."""
    B = rng.standard_normal((n_assets, n_features)) * 0.005
    F = rng.standard_normal((periods, n_features))
    signal = F @ B.T + 0.02 * np.tanh(2 * F[:, :1]) * rng.standard_normal(n_assets)
    factor = rng.standard_normal((n_assets, 2)) * 0.03
    noise = rng.standard_normal((periods, 2)) @ factor.T + 0.02 * rng.standard_normal(
        (periods, n_assets))
    return F, signal + noise


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(0)
    n_assets, n_features = (5, 3) if args.small else (12, 5)
    n_train, n_test, epochs, batch = (64, 32, 2, 32) if args.small else (600, 300, 12, 100)

    F, R = synthetic_market(n_assets, n_features, n_train + n_test, rng)
    F, R = torch.from_numpy(F), torch.from_numpy(R)
    F_tr, R_tr, F_te, R_te = F[:n_train], R[:n_train], F[n_train:], R[n_train:]
    Sigma = np.cov(R_tr.numpy().T) + 1e-4 * np.eye(n_assets)
    L = np.linalg.cholesky(Sigma)
    sigma_max = 0.8 * np.sqrt(np.mean(np.diag(Sigma)))  # below the average asset's volatility
    layer = portfolio_layer(L, sigma_max)

    def realised(model: torch.nn.Module, F_: torch.Tensor, R_: torch.Tensor) -> torch.Tensor:
        (w,) = layer(model(F_))
        return (w * R_).sum(dim=1)

    models = {"predict-then-optimise": torch.nn.Linear(n_features, n_assets),
              "decision-focused": torch.nn.Linear(n_features, n_assets)}
    with torch.no_grad():
        models["decision-focused"].load_state_dict(models["predict-then-optimise"].state_dict())
    # The decision loss has much smaller gradients than the squared error: a larger step.
    optimisers = {"predict-then-optimise": torch.optim.Adam(models["predict-then-optimise"]
                                                            .parameters(), lr=0.01),
                  "decision-focused": torch.optim.Adam(models["decision-focused"].parameters(),
                                                       lr=0.05)}
    steps_per_epoch = n_train // batch
    progress = Progress("portfolio", epochs)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n_train)
        for k in range(steps_per_epoch):
            idx = perm[k * batch:(k + 1) * batch]
            for name, model in models.items():
                if name == "decision-focused":
                    loss = -realised(model, F_tr[idx], R_tr[idx]).mean()
                else:
                    loss = torch.nn.functional.mse_loss(model(F_tr[idx]), R_tr[idx])
                optimisers[name].zero_grad()
                loss.backward()
                optimisers[name].step()
        with torch.no_grad():
            test = {name: realised(m, F_te, R_te).mean().item() for name, m in models.items()}
        progress(epoch, pto_test_return=test["predict-then-optimise"],
                 dfl_test_return=test["decision-focused"])

    with torch.no_grad():
        curves = {name: torch.cumsum(realised(m, F_te, R_te), 0).numpy()
                  for name, m in models.items()}
        (w_eq,) = layer(torch.zeros(n_assets))  # no view: the min-norm feasible allocation
        curves["no forecast"] = torch.cumsum(R_te @ w_eq, 0).numpy()
        (w,) = layer(models["decision-focused"](F_te))
        vol = torch.sqrt(torch.einsum("bi,ij,bj->b", w, torch.from_numpy(Sigma), w)).max()
    print(f"largest test-period portfolio volatility {vol:.5f} (limit {sigma_max:.5f})")
    for name, curve in curves.items():
        print(f"{name:>22}: mean test return per period {curve[-1] / n_test:+.5f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(curve, label=name)
    ax.set(xlabel="test period", ylabel="cumulative return",
           title="Portfolio SOCP layer with a volatility limit")
    ax.legend()
    save_figure(fig, args.out / "portfolio.png")


if __name__ == "__main__":
    main()
