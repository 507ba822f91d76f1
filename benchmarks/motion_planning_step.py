"""motion_planning_2d's first training step, LevenbergMarquardt against PounceOptimizer.

Usage::

    python benchmarks/motion_planning_step.py [--step-size 0.3] [--damping 0.1]

Builds the planner and the ``InitialTrajectoryModel`` of Theseus'
``examples/motion_planning_2d.py`` at its config (the 2 tarpit maps of the mirror's
``tutorials/data``, 100 steps, ``max_iterations=2``, ``step_size=0.3``, ``damping=0.1``,
unroll, seed 0) and, at the same model weights and batch, prints for each optimizer the
outer loss (mean objective term plus imitation MSE, as the example computes it), the
planner error before and after the solve, the gradient of the loss with respect to the
model's parameters, and central differences of the loss along that gradient's direction
(through the layer's own map, under ``torch.no_grad``), then the cosine between the two
gradients. ``--tight`` adds central differences of the loss through a converged inner
solve (ours, implicit mode, 200 iterations): the derivative a solution map would give.
``--ours-full-steps`` runs ours with ``step_size=1`` and no damping (full interior-point
steps, what it took before it took Theseus' step under unroll).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-size", type=float, default=0.3)
    ap.add_argument("--damping", type=float, default=0.1)
    ap.add_argument("--tight", action="store_true")
    ap.add_argument("--ours-full-steps", action="store_true",
                    help="ours with step_size=1 and no damping (full interior-point steps, "
                         "what PounceOptimizer took before it took Theseus' step)")
    args = ap.parse_args()
    import theseus as th
    import theseus.utils.examples as theg
    from run_theseus_examples import extract_mirror

    import pounce_theseus  # noqa: F401 - th.PounceOptimizer

    assert th.PounceOptimizer
    warnings.simplefilter("ignore")
    torch.set_default_dtype(torch.double)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    config = {"max_iterations": 2, "step_size": args.step_size}
    with tempfile.TemporaryDirectory() as tmp:
        data = extract_mirror(Path(tmp)) / "tutorials" / "data" / "motion_planning_2d"
        dataset = theg.TrajectoryDataset(True, 2, str(data), "tarpit")
        batch = next(iter(torch.utils.data.DataLoader(dataset, 2, shuffle=False)))

    full = args.ours_full_steps

    def planner(name: str):
        cfg = {**config, "step_size": 1.0} if full and name == "PounceOptimizer" else config
        return theg.MotionPlanner((name, dict(cfg)), map_size=128, epsilon_dist=0.8,
                                  total_time=10, collision_weight=100.0,
                                  Qc_inv=[[1.0, 0.0], [0.0, 1.0]], num_time_steps=100,
                                  use_single_collision_weight=True, device="cpu")

    names = ("LevenbergMarquardt", "PounceOptimizer")
    planners = {n: planner(n) for n in names}
    model = theg.InitialTrajectoryModel(planners["LevenbergMarquardt"])
    params = list(model.parameters())

    def loss(name: str, **kwargs):
        p = planners[name]
        inputs = {"sdf_origin": batch["sdf_origin"], "start": batch["expert_trajectory"][:, :2, 0],
                  "goal": batch["expert_trajectory"][:, :2, -1],
                  "cell_size": batch["cell_size"], "sdf_data": batch["sdf_data"]}
        p.objective.update(inputs)
        inputs.update(model.forward(batch))
        p.objective.update(inputs)
        with torch.no_grad():
            before = float(p.objective.error_metric().mean())
        damping = 0.0 if full and name == "PounceOptimizer" else args.damping
        p.layer.forward(inputs, optimizer_kwargs={"damping": damping, **kwargs})
        with torch.no_grad():
            after = float(p.objective.error_metric().mean())
        value = (p.objective.error_metric().mean() / p.objective.dim() * 0.0005
                 + F.mse_loss(p.get_trajectory(), batch["expert_trajectory"]))
        return value, before, after

    def central(name: str, v: torch.Tensor, h: float = 1e-6, **kwargs) -> float:
        flat = torch.nn.utils.parameters_to_vector(params).detach().clone()
        out = []
        for s in (1, -1):
            torch.nn.utils.vector_to_parameters(flat + s * h * v, params)
            with torch.no_grad():
                out.append(float(loss(name, **kwargs)[0]))
        torch.nn.utils.vector_to_parameters(flat, params)
        return (out[0] - out[1]) / (2 * h)

    grads = {}
    for name in names:
        for p in params:
            p.grad = None
        value, before, after = loss(name)
        value.backward()
        g = torch.cat([p.grad.reshape(-1) for p in params])
        grads[name] = g
        v = g / g.norm()
        print(f"{name:20s} loss {float(value):.6f}  planner error {before:.1f} -> {after:.1f}  "
              f"|grad| {float(g.norm()):.6e}  central differences along grad "
              f"{central(name, v):.6e}")
    gl, go = grads["LevenbergMarquardt"], grads["PounceOptimizer"]
    print(f"cos(grad LM, grad ours) {float(gl @ go / gl.norm() / go.norm()):.6f}")
    if args.tight:
        opt = planners["PounceOptimizer"].layer.optimizer
        opt.params.max_iterations = 200
        v = gl / gl.norm()
        d = central("PounceOptimizer", v, backward_mode="implicit")
        _, _, err = loss("PounceOptimizer", backward_mode="implicit")
        print(f"tight solve (implicit, 200 iterations, error {err:.1f}, status "
              f"{opt.last_solve['status']}): central differences along grad LM {d:.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
