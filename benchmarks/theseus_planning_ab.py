"""se2_planning's solve, LevenbergMarquardt against PounceOptimizer, interleaved in one process.

Usage::

    python benchmarks/theseus_planning_ab.py [--repeats 3] [--max-iterations 20]

Builds the planner of Theseus' ``examples/se2_planning.py`` (its 2 tarpit maps from the
mirror's ``tutorials/data``, SE2 poses, 100 steps, the same weights) once per optimizer
and times ``planner.layer.forward`` alternately, LM then ours, ``--repeats`` times each,
as the example calls it (grad mode on, nothing upstream requiring grad, ``damping=0.1``).
Neither gets ``max_iterations`` from the example (it passes the misspelled
``max_optim_iters``), so both run their default budget unless ``--max-iterations`` is
given. ``--no-grad`` runs the forwards under ``torch.no_grad()``; ``--verbose`` passes
``verbose=True`` as the example does (each optimizer prints its iterations). Prints the median
forward time of each, their ratio, and the final mean error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def build(name: str, data_dir: Path, max_iterations: int | None):
    import theseus as th
    import theseus.utils.examples as theg

    import pounce_theseus  # noqa: F401 - th.PounceOptimizer

    dataset = theg.TrajectoryDataset(True, 2, str(data_dir), "tarpit")
    batch = next(iter(torch.utils.data.DataLoader(dataset, 2, shuffle=False)))
    steps = batch["expert_trajectory"].shape[2] - 1
    kwargs = {"max_optim_iters": 50, "step_size": 0.25}  # as the example writes them
    if max_iterations is not None:
        kwargs["max_iterations"] = max_iterations
    planner = theg.MotionPlanner(
        optimizer_config=(name, kwargs), map_size=batch["map_tensor"].shape[1],
        epsilon_dist=1.5 + 0.25, total_time=10.0, collision_weight=20.0,
        Qc_inv=torch.eye(3), num_time_steps=steps, device="cpu", pose_type=th.SE2,
        nonholonomic_w=10.0, positive_vel_w=5.0)
    start = torch.zeros(2, 4)
    start[:, :2] = batch["expert_trajectory"][:, :2, 0]
    start[:, 3] = -1
    inputs = {"sdf_origin": batch["sdf_origin"], "start": start,
              "goal": batch["expert_trajectory"][:, :2, -1],
              "cell_size": batch["cell_size"], "sdf_data": batch["sdf_data"]}
    inputs.update(planner.get_variable_values_from_straight_line(inputs["start"],
                                                                 inputs["goal"]))
    return planner, inputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-iterations", type=int)
    ap.add_argument("--no-grad", action="store_true",
                    help="run the forwards under torch.no_grad() (an evaluation pass)")
    ap.add_argument("--verbose", action="store_true",
                    help="optimizer_kwargs verbose=True, as the example passes it")
    args = ap.parse_args()
    from run_theseus_examples import extract_mirror

    torch.set_default_dtype(torch.double)  # as the example's planner data
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        data = extract_mirror(Path(tmp)) / "tutorials" / "data" / "motion_planning_2d"
        runs = {n: build(n, data, args.max_iterations)
                for n in ("LevenbergMarquardt", "PounceOptimizer")}
    times: dict[str, list[float]] = {n: [] for n in runs}
    errors: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (planner, inputs) in runs.items():
            t0 = time.perf_counter()
            with torch.set_grad_enabled(not args.no_grad):
                planner.layer.forward(dict(inputs), optimizer_kwargs={
                    "damping": 0.1, "verbose": args.verbose})
            times[name].append(time.perf_counter() - t0)
            with torch.no_grad():
                errors[name] = float(planner.objective.error_metric().mean())
    lm, ours = (statistics.median(times[n]) for n in runs)
    for name in runs:
        print(f"{name:20s} forward median {statistics.median(times[name]):7.3f} s "
              f"(all {', '.join(f'{t:.2f}' for t in times[name])})  final error "
              f"{errors[name]:.6g}")
    print(f"ratio ours / LM: {ours / lm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
