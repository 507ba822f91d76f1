"""Two small Theseus problems used by the tests and the benchmark.

- ``curve_fit``: ``y = a exp(b x)`` fitted to noisy samples (Vector variables ``a``, ``b``).
- ``exp_fit_layer``: the same model with one Vector ``a`` = (b, a), as a ``TheseusLayer``
  (the unrolled and step-rule tests).
- ``pose_graph``: an SE2 chain with odometry, a prior on the first pose and one
  inconsistent loop closure (last pose to first), so the residuals do not vanish at the
  solution and the second-order terms matter for the gradient.

Each builder returns ``(objective, inputs)``: ``inputs`` is the dict a ``TheseusLayer``
takes (initial values of the optimisation variables plus the aux data).
"""

from __future__ import annotations

import contextlib
import math

import theseus as th
import torch

__all__ = [
    "central_difference", "central_each", "curve_fit", "exp_fit_layer", "one_torch_thread",
    "pose_graph", "solve_with", "tight_gauss_newton",
]


def curve_fit(
    batch_size: int, n_points: int = 20, seed: int = 0, dtype=torch.float64
) -> tuple[th.Objective, dict[str, torch.Tensor]]:
    """``y = a exp(b x)``; aux ``x``, ``y`` and per-point cost weights ``w`` (B, n_points)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0.0, 1.0, n_points, dtype=dtype).expand(batch_size, n_points).clone()
    a_true = 1.5 + 0.5 * torch.rand(batch_size, 1, generator=g, dtype=dtype)
    b_true = -1.0 - 0.5 * torch.rand(batch_size, 1, generator=g, dtype=dtype)
    y = a_true * torch.exp(b_true * x) + 0.05 * torch.randn(
        batch_size, n_points, generator=g, dtype=dtype
    )
    a = th.Vector(1, name="a", dtype=dtype)
    b = th.Vector(1, name="b", dtype=dtype)
    xv = th.Variable(x, name="x")
    yv = th.Variable(y, name="y")

    def err(optim_vars, aux_vars):
        a_, b_ = optim_vars
        xx, yy = aux_vars
        return a_.tensor * torch.exp(b_.tensor * xx.tensor) - yy.tensor

    w = th.DiagonalCostWeight(th.Variable(torch.ones(batch_size, n_points, dtype=dtype), name="w"))
    cf = th.AutoDiffCostFunction([a, b], err, n_points, aux_vars=[xv, yv], cost_weight=w,
                                 name="fit")
    obj = th.Objective(dtype=dtype)
    obj.add(cf)
    inputs = {
        "a": torch.ones(batch_size, 1, dtype=dtype),
        "b": torch.zeros(batch_size, 1, dtype=dtype),
        "x": x,
        "y": y,
        "w": 1.0 + 0.5 * torch.rand(batch_size, n_points, generator=g, dtype=dtype),
    }
    return obj, inputs


def pose_graph(
    batch_size: int, n_poses: int = 30, seed: int = 0, dtype=torch.float64
) -> tuple[th.Objective, dict[str, torch.Tensor]]:
    """SE2 chain of ``n_poses`` on a circle with noisy odometry ``odom_i`` (aux, SE2), a
    prior on pose 0 and an inconsistent loop closure ``loop`` weighted by the learnable
    scale ``loop_w`` (B, 1). Poses start at dead-reckoned odometry plus noise."""
    g = torch.Generator().manual_seed(seed)
    step = 2 * math.pi / n_poses
    radius = 3.0
    chord = 2 * radius * math.sin(step / 2)

    def se2(xyt: torch.Tensor) -> torch.Tensor:
        return th.SE2(x_y_theta=xyt).tensor

    odo_xyt = torch.tensor([chord, 0.0, step], dtype=dtype).expand(batch_size, 3)
    poses = [th.SE2(name=f"pose_{i}", dtype=dtype) for i in range(n_poses)]
    obj = th.Objective(dtype=dtype)
    inputs: dict[str, torch.Tensor] = {}
    odo_w = th.ScaleCostWeight(torch.tensor(10.0, dtype=dtype), name="odo_w")
    for i in range(n_poses - 1):
        noise = torch.randn(batch_size, 3, generator=g, dtype=dtype) * torch.tensor(
            [0.05, 0.05, 0.02], dtype=dtype
        )
        meas = th.SE2(name=f"odom_{i}", dtype=dtype)
        inputs[f"odom_{i}"] = se2(odo_xyt + noise)
        obj.add(th.Between(poses[i], poses[i + 1], meas, odo_w, name=f"odo_cf_{i}"))
    # loop closure: the measured relative pose last -> first, deliberately inconsistent
    loop_xyt = torch.tensor([chord, 0.0, step], dtype=dtype).expand(batch_size, 3) + torch.tensor(
        [0.3, -0.2, 0.1], dtype=dtype
    )
    loop = th.SE2(name="loop", dtype=dtype)
    inputs["loop"] = se2(loop_xyt)
    loop_w = th.ScaleCostWeight(
        th.Variable(torch.ones(batch_size, 1, dtype=dtype), name="loop_w")
    )
    inputs["loop_w"] = torch.full((batch_size, 1), 2.0, dtype=dtype)
    obj.add(th.Between(poses[-1], poses[0], loop, loop_w, name="loop_cf"))
    prior = th.SE2(name="prior", dtype=dtype)
    start = torch.tensor([radius, 0.0, math.pi / 2], dtype=dtype)
    inputs["prior"] = se2(start.expand(batch_size, 3))
    obj.add(th.Difference(poses[0], prior, th.ScaleCostWeight(torch.tensor(100.0, dtype=dtype)),
                          name="prior_cf"))
    # initial values: dead reckoning from the prior with extra noise
    cur = th.SE2(tensor=inputs["prior"].clone())
    for i in range(n_poses):
        jitter = torch.randn(batch_size, 3, generator=g, dtype=dtype) * 0.05
        inputs[f"pose_{i}"] = cur.compose(th.SE2(x_y_theta=jitter)).tensor
        if i < n_poses - 1:
            cur = cur.compose(th.SE2(tensor=inputs[f"odom_{i}"]))
    return obj, inputs


def solve_with(
    optimizer: th.Optimizer, inputs: dict[str, torch.Tensor], **optimizer_kwargs
) -> tuple[dict[str, torch.Tensor], object]:
    """Run ``TheseusLayer(optimizer)`` on ``inputs``; returns (solution, info)."""
    layer = getattr(optimizer, "_demo_layer", None)
    if layer is None:
        layer = th.TheseusLayer(optimizer)
        optimizer._demo_layer = layer
    return layer.forward(dict(inputs), optimizer_kwargs=optimizer_kwargs)


def tight_gauss_newton(objective: th.Objective, max_iterations: int = 100) -> th.GaussNewton:
    """The reference: Theseus' Gauss-Newton run to its noise floor."""
    return th.GaussNewton(
        objective, max_iterations=max_iterations, abs_err_tolerance=1e-20,
        rel_err_tolerance=1e-20,
    )


def central_difference(
    loss, inputs: dict[str, torch.Tensor], key: str, index: tuple, h: float = 1e-3
) -> torch.Tensor:
    """d loss / d inputs[key][:, *index] for every batch element at once, by central
    differences with one Richardson extrapolation (error O(h^4)).

    ``loss(inputs) -> (B,)`` must be a sum of per-element terms, so perturbing the same
    entry of every element gives all B partial derivatives from one pair of solves.
    """

    def diff(step: float) -> torch.Tensor:
        plus, minus = dict(inputs), dict(inputs)
        plus[key] = inputs[key].clone()
        minus[key] = inputs[key].clone()
        plus[key][(slice(None), *index)] += step
        minus[key][(slice(None), *index)] -= step
        return (loss(plus) - loss(minus)) / (2 * step)

    return (4 * diff(h / 2) - diff(h)) / 3


def exp_fit_layer(optimizer_cls, batch: int = 2, n_points: int = 8, **kwargs
                  ) -> th.TheseusLayer:
    """``a1 exp(a0 x) - y`` over ``n_points`` noisy samples per element (float64, seed 0;
    Vector ``a`` of size 2, aux ``x`` and ``y``, unit weight) in a layer built with
    ``optimizer_cls(objective, **kwargs)``: nonlinear, so a few steps do not solve it."""
    dt = torch.float64
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, n_points, dtype=dt).expand(batch, n_points)
    y = 1.5 * torch.exp(0.7 * x) + 0.05 * torch.randn(batch, n_points, generator=gen, dtype=dt)
    a = th.Vector(2, name="a", dtype=dt)
    xv, yv = th.Variable(x.clone(), name="x"), th.Variable(y.clone(), name="y")

    def err(optim_vars, aux_vars):
        p = optim_vars[0].tensor
        return p[:, 1:2] * torch.exp(p[:, 0:1] * aux_vars[0].tensor) - aux_vars[1].tensor

    obj = th.Objective(dtype=dt)
    obj.add(th.AutoDiffCostFunction([a], err, n_points, aux_vars=[xv, yv], name="fit",
                                    cost_weight=th.ScaleCostWeight(torch.ones(1, 1, dtype=dt))))
    return th.TheseusLayer(optimizer_cls(obj, **kwargs))


def central_each(f, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d f / d t for a scalar ``f(t)``, by a central difference per entry of ``t``."""
    g = torch.zeros_like(t)
    for i in range(t.numel()):
        tp, tm = t.detach().clone(), t.detach().clone()
        tp.view(-1)[i] += eps
        tm.view(-1)[i] -= eps
        g.view(-1)[i] = (f(tp) - f(tm)) / (2 * eps)
    return g


@contextlib.contextmanager
def one_torch_thread():
    """Run with one intra-op torch thread (restored after): these problems are small, and
    extra threads only contend on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def synthetic_pose_graph(
    num_poses: int, batch_size: int = 1, dims: int = 3, seed: int = 0,
    loop_closure_ratio: float = 0.2, outlier_ratio: float = 0.25,
) -> tuple[th.Objective, dict[str, torch.Tensor], list, list]:
    """SE3 (``dims=3``) or SE2 pose graph built as Theseus'
    examples/pose_graph/pose_graph_synthetic.py builds it: synthetic odometry and loop
    closures (a fraction of them outliers) from ``theseus.utils.examples``, each edge a
    ``Between`` cost inside a ``RobustCostFunction`` with a Welsch loss whose
    ``log_loss_radius`` (aux, (1, 1), starts at 3) is the learnable input, and a weak prior
    (1e-3) on pose 0. Returns ``(objective, inputs, poses, gt_poses)``."""
    import random

    import numpy as np
    import theseus.utils.examples as theg

    # the generator also draws from the global generators: seed them, so that every call
    # builds the same graph
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    g = torch.Generator().manual_seed(seed)
    make = theg.PoseGraphDataset.generate_synthetic_3D if dims == 3 else _synthetic_2d
    pg, _ = make(num_poses=num_poses, translation_noise=0.05, rotation_noise=0.02,
                 loop_closure_ratio=loop_closure_ratio,
                 loop_closure_outlier_ratio=outlier_ratio, batch_size=batch_size,
                 dataset_size=batch_size, generator=g, dtype=torch.float64)
    batch = pg.get_batch_dataset(0)
    log_radius = th.Vector(1, name="log_loss_radius", dtype=torch.float64)
    obj = th.Objective(dtype=torch.float64)
    for edge in batch.edges:
        between = th.Between(batch.poses[edge.i], batch.poses[edge.j], edge.relative_pose,
                             edge.weight)
        obj.add(th.RobustCostFunction(between, th.WelschLoss, log_radius))
    prior = batch.poses[0].copy(new_name=batch.poses[0].name + "__PRIOR")
    obj.add(th.Difference(batch.poses[0], prior,
                          th.ScaleCostWeight(torch.tensor(1e-3, dtype=torch.float64))))
    inputs = {p.name: p.tensor.clone() for p in batch.poses}
    inputs[prior.name] = batch.poses[0].tensor.clone()
    inputs.update({e.relative_pose.name: e.relative_pose.tensor for e in batch.edges})
    inputs["log_loss_radius"] = torch.full((1, 1), 3.0, dtype=torch.float64)
    return obj, inputs, list(batch.poses), list(batch.gt_poses)


def _synthetic_2d(num_poses, translation_noise, rotation_noise, loop_closure_ratio,
                  loop_closure_outlier_ratio, batch_size, dataset_size, generator, dtype,
                  max_num_loop_closures=10):
    """Theseus' ``PoseGraphDataset.generate_synthetic_3D`` in SE2 (Theseus has no 2-D
    generator): the same random odometry, loop closures and outliers."""
    import numpy as np
    from theseus.utils.examples.pose_graph.dataset import PoseGraphDataset, PoseGraphEdge

    def noise(rows):
        return th.SE2.exp_map(torch.cat([
            translation_noise * (2.0 * torch.rand(rows, 2, dtype=dtype) - 1),
            rotation_noise * (2.0 * torch.rand(rows, 1, dtype=dtype) - 1)], dim=1))

    info = torch.tensor([1 / translation_noise] * 2 + [1 / rotation_noise],
                        dtype=dtype).view(1, -1)
    eye = th.SE2(x_y_theta=torch.zeros(dataset_size, 3, dtype=dtype)).tensor
    poses = [th.SE2(tensor=eye.clone(), name="VERTEX_SE2__0")]
    gt_poses = [th.SE2(tensor=eye.clone(), name="VERTEX_SE2_GT__0")]
    edges = []
    for n in range(1, num_poses):
        gt_rel = th.SE2.exp_map(torch.cat([torch.rand(dataset_size, 2, dtype=dtype) - 0.5,
                                           2.0 * torch.rand(dataset_size, 1, dtype=dtype) - 1],
                                          dim=1))
        rel = gt_rel.compose(noise(dataset_size))
        rel.name = f"EDGE_SE2__{n - 1}_{n}"
        weight = th.DiagonalCostWeight(th.Variable(info), name=f"EDGE_WEIGHT__{n - 1}_{n}")
        gt_pose = gt_poses[-1].compose(gt_rel)
        gt_pose.name = f"VERTEX_SE2_GT__{n}"
        pose = poses[-1].compose(rel)
        pose.name = f"VERTEX_SE2__{n}"
        gt_poses.append(gt_pose)
        poses.append(pose)
        edges.append(PoseGraphEdge(n - 1, n, relative_pose=rel, weight=weight))
        if np.random.rand(1) <= loop_closure_ratio and n - 1 > 0:
            count = np.random.randint(max_num_loop_closures) + 1
            for i in set(np.random.randint(0, n - 1, count)):
                gt_rel = gt_poses[i].inverse().compose(gt_poses[n])
                if np.random.rand(1) > loop_closure_outlier_ratio:
                    wrong = noise(1)
                else:
                    wrong = th.SE2.rand(dataset_size, generator=generator, dtype=dtype)
                rel = gt_rel.compose(wrong)
                rel.name = f"EDGE_SE2__{i}_{n}"
                weight = th.DiagonalCostWeight(th.Variable(info), name=f"EDGE_WEIGHT__{i}_{n}")
                edges.append(PoseGraphEdge(i, n, relative_pose=rel, weight=weight))
    for pose, gt in zip(poses, gt_poses, strict=True):
        pose.tensor = gt.compose(noise(1)).tensor
    return PoseGraphDataset(poses, edges, gt_poses, batch_size=batch_size), None
