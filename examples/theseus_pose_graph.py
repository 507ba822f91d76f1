"""SE2 pose graph with learned measurement weights and a bound: GaussNewton vs PounceOptimizer.

A robot drives a circle around a courtyard, measuring odometry between consecutive poses,
one (biased) loop closure, and the position of a landmark in its own frame, with a sensor
bias that pushes the landmark out of the courtyard. The landmark is known to stand inside
the courtyard (|x|, |y| <= HALF_WIDTH): PounceOptimizer takes that as bounds on the landmark
variable, Theseus' GaussNewton cannot. An outer Adam loop learns the log-weights of the
three measurement types so that the solved trajectory matches ground truth, with gradients
through TheseusLayer (implicit backward). Prints both training runs and writes
out/theseus_pose_graph.png.
"""

from __future__ import annotations

import math

import theseus as th
import torch
from example_args import Progress, parse_args, save_figure

from pounce_theseus import PounceOptimizer

RADIUS, HALF_WIDTH = 3.0, 1.0
WEIGHT_NAMES = ("w_odometry", "w_loop", "w_landmark")


def se2(x: float, y: float, theta: float) -> torch.Tensor:
    return th.SE2(x_y_theta=torch.tensor([[x, y, theta]])).tensor


def simulate(n_poses: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Ground truth on a circle and noisy measurements (all as (1, .) tensors)."""
    angles = [2 * math.pi * i / n_poses for i in range(n_poses)]
    gt = [th.SE2(x_y_theta=torch.tensor([[RADIUS * math.cos(a), RADIUS * math.sin(a),
                                          a + math.pi / 2]])) for a in angles]
    landmark = torch.tensor([[HALF_WIDTH, 0.5]])  # on the courtyard's edge

    def noisy_between(p: th.SE2, q: th.SE2, sigma_t: float, sigma_r: float, bias=0.0):
        rel = p.between(q).tensor
        x, y = rel[0, 0].item(), rel[0, 1].item()
        theta = math.atan2(rel[0, 3].item(), rel[0, 2].item())
        n = torch.randn(3, generator=gen)
        return se2(x + sigma_t * n[0].item() + bias, y + sigma_t * n[1].item(),
                   theta + sigma_r * n[2].item())

    data = {f"odo_{i}": noisy_between(gt[i], gt[i + 1], 0.03, 0.01)
            for i in range(n_poses - 1)}
    data["loop"] = noisy_between(gt[-1], gt[0], 0.03, 0.01, bias=1.0)  # a bad loop closure
    seen = th.Point2(landmark + torch.tensor([[0.2, 0.0]]))  # a miscalibrated landmark sensor
    for i, pose in enumerate(gt):
        local = pose.transform_to(seen).tensor
        data[f"obs_{i}"] = local + 0.15 * torch.randn(1, 2, generator=gen)
    # Initial guess: chain the odometry from the (known) first pose.
    init = [gt[0]]
    for i in range(n_poses - 1):
        init.append(init[-1].compose(th.SE2(tensor=data[f"odo_{i}"])))
    for i, pose in enumerate(init):
        data[f"pose_{i}"] = pose.tensor
    data["landmark"] = landmark + torch.tensor([[0.4, -0.3]])
    data["gt_xy"] = torch.cat([p.tensor[:, :2] for p in gt])
    data["landmark_true"] = landmark
    data["gt_pose_0"] = gt[0].tensor
    return data


def pose_graph(n_poses: int) -> tuple[th.Objective, list[th.SE2], th.Point2]:
    poses = [th.SE2(name=f"pose_{i}") for i in range(n_poses)]
    lm = th.Point2(name="landmark")
    w = {k: th.ScaleCostWeight(th.Variable(torch.ones(1, 1), name=k)) for k in WEIGHT_NAMES}
    objective = th.Objective()
    anchor = th.SE2(name="gt_pose_0")
    objective.add(th.Difference(poses[0], anchor, th.ScaleCostWeight(100.0), name="prior"))
    for i in range(n_poses - 1):
        objective.add(th.Between(poses[i], poses[i + 1], th.SE2(name=f"odo_{i}"),
                                 w["w_odometry"], name=f"odometry_{i}"))
    objective.add(th.Between(poses[-1], poses[0], th.SE2(name="loop"), w["w_loop"],
                             name="loop_closure"))

    def landmark_error(optim_vars, aux_vars):
        pose, point = optim_vars
        return pose.transform_to(point).tensor - aux_vars[0].tensor

    for i in range(n_poses):
        objective.add(th.AutoDiffCostFunction(
            [poses[i], lm], landmark_error, 2, w["w_landmark"],
            aux_vars=[th.Variable(torch.zeros(1, 2), name=f"obs_{i}")], name=f"sees_{i}"))
    return objective, poses, lm


def build_layer(kind: str, n_poses: int) -> th.TheseusLayer:
    objective, _, lm = pose_graph(n_poses)
    if kind == "GaussNewton":
        optimizer = th.GaussNewton(objective, max_iterations=30, abs_err_tolerance=1e-12,
                                   rel_err_tolerance=1e-12)
    else:
        lower = torch.full((1, 2), -HALF_WIDTH)
        upper = torch.full((1, 2), HALF_WIDTH)
        optimizer = PounceOptimizer(objective, max_iterations=100, bounds={lm: (lower, upper)})
    return th.TheseusLayer(optimizer)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_default_dtype(torch.float64)
    n_poses, outer_steps = (8, 2) if args.small else (30, 25)
    data = simulate(n_poses, torch.Generator().manual_seed(0))
    inputs = {k: v for k, v in data.items() if k not in ("gt_xy", "landmark_true")}
    runs = {}
    for kind in ("GaussNewton", "PounceOptimizer"):
        layer = build_layer(kind, n_poses)
        log_w = torch.zeros(3, requires_grad=True)
        opt = torch.optim.Adam([log_w], lr=0.2)
        history = []
        progress = Progress(kind, outer_steps)
        for step in range(1, outer_steps + 1):
            weights = dict(zip(WEIGHT_NAMES, torch.exp(log_w).reshape(3, 1, 1), strict=True))
            sol, info = layer.forward({**inputs, **weights},
                                      optimizer_kwargs={"backward_mode": "implicit"})
            xy = torch.cat([sol[f"pose_{i}"][:, :2] for i in range(n_poses)])
            loss = ((xy - data["gt_xy"]) ** 2).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
            progress(step, position_mse=loss.item(), landmark_x=sol["landmark"][0, 0].item(),
                     **{k: v.item() for k, v in zip(("w_odo", "w_loop", "w_lm"),
                                                    torch.exp(log_w), strict=True)})
        runs[kind] = (history, xy.detach(), sol["landmark"].detach())
    for kind, (history, _, lm) in runs.items():
        print(f"{kind:>15}: position MSE {history[0]:.4f} -> {history[-1]:.4f}, "
              f"landmark x = {lm[0, 0].item():.6f} (courtyard edge at {HALF_WIDTH})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    gt = data["gt_xy"]
    ax1.plot(gt[:, 0], gt[:, 1], "k-o", markersize=3, label="ground truth")
    init = torch.cat([data[f"pose_{i}"][:, :2] for i in range(n_poses)])
    ax1.plot(init[:, 0], init[:, 1], ":", color="gray", label="odometry")
    for kind, (_, xy, lm) in runs.items():
        line = ax1.plot(xy[:, 0], xy[:, 1], "-", label=kind)[0]
        ax1.plot(lm[0, 0], lm[0, 1], "^", color=line.get_color())
    w = HALF_WIDTH
    ax1.plot([-w, w, w, -w, -w], [-w, -w, w, w, -w], "r--", lw=1, label="landmark bounds")
    ax1.plot(*data["landmark_true"][0], "k^", label="true landmark")
    ax1.set(aspect="equal", title="Solved trajectories after learning the weights")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3)
    for kind, (history, _, _) in runs.items():
        ax2.semilogy(history, label=kind)
    ax2.set(xlabel="outer step", ylabel="position MSE", title="Learning measurement weights")
    ax2.legend()
    save_figure(fig, args.out / "theseus_pose_graph.png")


if __name__ == "__main__":
    main()
