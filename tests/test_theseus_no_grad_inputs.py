"""A layer none of whose inputs requires grad returns a plain solution.

Theseus users read solutions with ``.numpy()`` (se2_planning's plotting does); that raises
on a tensor that requires grad. The implicit step's graph always reaches the chart's own
offset, so the test is whether it reaches anything upstream of the layer.
"""

from __future__ import annotations

import torch

from pounce_theseus import PounceOptimizer
from testing_helpers.theseus_problems import curve_fit, pose_graph, solve_with


def test_no_input_requiring_grad_gives_a_solution_without_grad():
    obj, inputs = pose_graph(2, n_poses=12)
    sol, _ = solve_with(PounceOptimizer(obj, max_iterations=50), inputs)
    assert sol, "no solution returned"
    for name, t in sol.items():
        assert not t.requires_grad, name
        t.numpy()  # what se2_planning's plotting does


def test_a_weight_requiring_grad_still_gets_its_gradient():
    obj, inputs = pose_graph(2, n_poses=12)
    inputs["loop_w"] = inputs["loop_w"].clone().requires_grad_(True)
    sol, _ = solve_with(PounceOptimizer(obj, max_iterations=50), inputs)
    assert all(t.requires_grad for t in sol.values())
    sum(t.square().sum() for t in sol.values()).backward()
    g = inputs["loop_w"].grad
    assert g is not None and torch.isfinite(g).all() and g.abs().max() > 0


def test_aux_data_requiring_grad_on_the_unbounded_sparse_path():
    obj, inputs = curve_fit(2)
    inputs["y"] = inputs["y"].clone().requires_grad_(True)
    sol, _ = solve_with(PounceOptimizer(obj, max_iterations=50), inputs)
    sol["a"].sum().backward()
    assert inputs["y"].grad is not None and inputs["y"].grad.abs().max() > 0
