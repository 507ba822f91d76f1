"""Theseus' own linearisation inside PounceOptimizer (pounce_theseus/linearization.py): the
Gauss-Newton Hessian equals th.SparseLinearization's A'A, the gradient A'(-b) and
autograd's, the exact Hessian autograd's dense one in the tangent chart (on and off its
base); the sparse implicit step equals the dense one; Theseus' own stopping test and the
polish to tol when a gradient follows."""

from __future__ import annotations

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_kkt.nlp_kkt import implicit_step, implicit_step_sparse
from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp, ProblemStructure
from pounce_theseus.compat import accurate_se2_log_jacobian
from pounce_theseus.hessian import ExactHessian
from pounce_theseus.linearization import CostLinearization
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _graph(dims: int, vectorize: bool, bsz: int = 2):
    obj, inputs, poses, gt = synthetic_pose_graph(8, bsz, dims=dims)
    if vectorize:
        th.Vectorize(obj)
    obj.update(inputs)
    return obj, ProblemStructure(obj, [])


def _dense_a(lin: th.SparseLinearization, structure: ProblemStructure) -> torch.Tensor:
    """Theseus' A (B, rows, n) with its columns in the chart's order."""
    a = torch.zeros(lin.A_val.shape[0], lin.num_rows, structure.n, dtype=torch.float64)
    perm = torch.cat([torch.arange(structure.chart.offsets[v.name].start,
                                   structure.chart.offsets[v.name].stop) for v in lin.ordering])
    for r in range(lin.num_rows):
        lo, hi = lin.A_row_ptr[r], lin.A_row_ptr[r + 1]
        a[:, r, perm[lin.A_col_ind[lo:hi]]] = lin.A_val[:, lo:hi]
    return a


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("vectorize", [True, False])
def test_gauss_newton_equals_sparse_linearization(dims, vectorize):
    """Theseus' sparse A'A and A'b, its SE2 log-map Jacobians taken as ours are
    (``accurate_se2_log_jacobian``: Theseus' own lose up to ~1e-8 at small rotations)."""
    with accurate_se2_log_jacobian():  # Theseus' vectorisation takes them at update
        obj, structure = _graph(dims, vectorize)
        sl = th.SparseLinearization(obj)
        sl.linearize()
    assert CostLinearization.applies(structure)
    a = _dense_a(sl, structure)
    want_h = a.transpose(1, 2) @ a
    want_g = -(a.transpose(1, 2) @ sl.b.unsqueeze(-1)).squeeze(-1)
    pt = structure.linearization.at(structure.chart.zeros(2))
    got_h = structure.hess.dense(pt.gauss_newton())
    scale = want_h.abs().max()
    assert (got_h - want_h).abs().max() <= 1e-12 * scale
    assert (pt.gradient() - want_g).abs().max() <= 1e-12 * want_g.abs().max()
    structure.chart.restore()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("spread", [0.0, 0.05])
def test_gradient_and_exact_hessian_match_autograd_in_the_chart(dims, spread):
    """Off the chart's base the right Jacobians of exp and the chart's curvature term make
    the gradient and the exact Hessian those of f(base (+) delta)."""
    obj, structure = _graph(dims, vectorize=True)
    nlp = BatchNlp(structure, ExactHessian(), [])
    x = np.random.default_rng(3).normal(size=(2, structure.n)) * spread
    pt = structure.linearization.at(torch.as_tensor(x))
    got_f, got_g, got_h = pt.f, pt.gradient(), structure.hess.dense(pt.exact())
    ev = nlp.evaluate(x)  # the autograd path
    want_g = ev.objective_gradient(create_graph=False).detach()
    assert torch.allclose(got_f, ev.f.detach(), rtol=1e-14, atol=0)
    assert (got_g - want_g).abs().max() <= 1e-10 * want_g.abs().max()
    for b in range(2):
        def element(d, b=b):
            full = torch.as_tensor(x).clone()
            full = torch.cat([full[:b], d.unsqueeze(0), full[b + 1:]])
            structure.chart.apply(full)
            return obj.error_metric().sum()

        want = torch.autograd.functional.hessian(element, torch.as_tensor(x[b]))
        assert (got_h[b] - want).abs().max() <= 1e-9 * want.abs().max()
    structure.chart.restore()


def test_convex_blocks_replace_indefinite_cost_functions_by_gauss_newton():
    """At a spread-out point some Welsch edges are on their concave side: their exact block
    is replaced by the Gauss-Newton one, so the sum is positive semidefinite at the base."""
    obj, structure = _graph(3, vectorize=True, bsz=1)
    x = np.random.default_rng(0).normal(size=(1, structure.n)) * 0.05
    structure.chart.apply(torch.as_tensor(x))
    structure.chart.recenter()  # at the base: no chart term
    pt = structure.linearization.at(structure.chart.zeros(1))
    values, replaced = pt.convex()
    assert bool(replaced.all())
    exact = torch.linalg.eigvalsh(structure.hess.dense(pt.exact()))[0]
    convex = torch.linalg.eigvalsh(structure.hess.dense(values))[0]
    assert exact.min() < -0.1 * exact.abs().max()
    assert convex.min() > -1e-9 * convex.abs().max()


def test_sparse_implicit_step_equals_the_dense_one():
    g = torch.Generator().manual_seed(0)
    n, b = 9, 3
    m = torch.randn(b, n, n, generator=g, dtype=torch.float64)
    h = m @ m.transpose(1, 2) + n * torch.eye(n, dtype=torch.float64)
    h[:, 0, 5] = h[:, 5, 0] = 0.0  # a sparse pattern: drop one pair
    rows, cols = np.tril_indices(n)
    keep = ~((rows == 5) & (cols == 0))
    rows, cols = rows[keep], cols[keep]
    values = h[:, torch.as_tensor(rows), torch.as_tensor(cols)]
    rhs = torch.randn(b, n, generator=g, dtype=torch.float64, requires_grad=True)
    got = implicit_step_sparse(rhs, rows, cols, values)
    want = implicit_step(rhs, h)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda r: implicit_step_sparse(r, rows, cols, values),
                                    (rhs,))
    # an indefinite element goes to the dense rule (named in its warning)
    h_bad = h.clone()
    h_bad[1] = -h_bad[1]
    values_bad = h_bad[:, torch.as_tensor(rows), torch.as_tensor(cols)]
    with pytest.warns(UserWarning, match=r"batch items \[1\]"):
        out = implicit_step_sparse(rhs, rows, cols, values_bad)
    assert torch.allclose(out[0], want[0], rtol=1e-12, atol=1e-14)


def test_theseus_test_stops_the_forward_and_the_gradient_solve_continues_to_tol():
    obj, inputs, _, _ = synthetic_pose_graph(30, 1, dims=3)
    opt = PounceOptimizer(obj)
    layer = th.TheseusLayer(opt)
    with torch.no_grad():
        _, info = layer.forward(dict(inputs))
    assert opt.last_solve["status"] == ["error_change_converged"]
    assert info.status[0] == th.NonlinearOptimizerStatus.CONVERGED
    stopped, its = info.last_err.item(), int(opt.last_solve["iterations"][0])
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    _, info = layer.forward({**inputs, "log_loss_radius": radius})
    assert opt.last_solve["status"] == ["solve_succeeded"]
    assert opt.last_solve["kkt_error"][0] <= 1e-8
    assert int(opt.last_solve["iterations"][0]) > its
    tight = PounceOptimizer(synthetic_pose_graph(30, 1, dims=3)[0], tol=1e-12)
    with torch.no_grad():
        _, ref = th.TheseusLayer(tight).forward(dict(inputs))
    best = ref.last_err.item()
    assert abs(stopped - best) <= 1e-8 * best  # Theseus' rel_err_tolerance
    assert abs(info.last_err.item() - best) <= 1e-12 * best


def test_se2_gradient_solve_reaches_tol_past_theseus_jacobians_accuracy():
    # Theseus' SE2 log-map Jacobian loses digits by cancellation (1/theta - sin / (2 (1 -
    # cos))): its gradient is off by ~1e-7 near the solution, so a polish on it wandered
    # at that floor (this graph: all four elements stopped at KKT errors 2e-8 to 9e-8
    # after 23-58 iterations). The solves to tol take autograd gradients.
    obj, inputs, _, _ = synthetic_pose_graph(40, 4, dims=2)
    opt = PounceOptimizer(obj)
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius})
    assert opt.last_solve["status"] == ["solve_succeeded"] * 4
    assert max(opt.last_solve["kkt_error"]) <= 1e-8
    assert max(opt.last_solve["iterations"]) <= 20


def test_a_solve_to_a_tight_tol_keeps_its_gradient():
    """After a long solve Theseus' own fill of the vectorised slots (the optimizer's
    ``objective.error_metric()`` under no_grad) replaced the robust schema's radius slot;
    compat.cost_function_groups took the slot for its own fill and the backward's errors
    had no graph to ``log_loss_radius``: the layer returned no gradient."""
    group = th.SE3

    def gradient(tol):
        obj, inputs, poses, gt = synthetic_pose_graph(30, 2, dims=3)
        opt = PounceOptimizer(obj, tol=tol, hessian="gauss-newton", max_iterations=300)
        radius = inputs["log_loss_radius"].clone().requires_grad_(True)
        sol, _ = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                              optimizer_kwargs={"backward_mode": "implicit"})
        loss = sum(th.local(group(tensor=sol[p.name]), g).norm(dim=1)
                   for p, g in zip(poses, gt, strict=True)).sum()
        return torch.autograd.grad(loss, radius)[0].item(), opt.last_solve

    tight, info = gradient(1e-12)
    assert min(info["iterations"]) > 20  # the long solve that lost the graph
    default, _ = gradient(None)
    assert np.isfinite(tight) and abs(tight - default) <= 0.05 * abs(default)


@pytest.mark.parametrize("dims", [2, 3])
def test_linearization_carried_across_a_recentring(dims):
    """A linearisation taken at ``delta`` and carried into the chart re-centred there
    (``LinearizedPoint``'s ``carried``) gives what one taken afresh at the new base gives:
    error metric, gradient, Gauss-Newton blocks with the robust rank-one term, exact
    Hessian; element 1 not re-centred keeps its delta."""
    obj, structure = _graph(dims, vectorize=True)
    lin = structure.linearization
    chart = structure.chart
    delta = torch.as_tensor(np.random.default_rng(5).normal(size=(2, structure.n)) * 0.05)
    old = lin.at(delta)
    old.gradient()
    moved = delta.clone()
    moved[1] = 0.0
    chart.apply(moved)
    chart.recenter()
    new_delta = delta - moved  # element 0 at the new base, element 1 where it was
    carried = lin.at(new_delta, robust_errors=True, carried=old)
    got = (carried.f, carried.gradient(), carried.gauss_newton(True), carried.exact())
    fresh = lin.at(new_delta, robust_errors=True)
    want = (fresh.f, fresh.gradient(), fresh.gauss_newton(True), fresh.exact())
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() <= 1e-12 * max(1.0, w.abs().max().item())
    chart.restore()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("spread", [0.0, 0.05])
def test_exact_for_some_elements_equals_exact(dims, spread):
    """``exact_for`` (the polish's exact blocks for its slow elements, evaluated on their
    rows only) gives ``exact()``'s values for those elements and zeros for the others, and
    leaves the cost functions' variables as they were."""
    obj, inputs, _, _ = synthetic_pose_graph(12, 4, dims=dims)
    th.Vectorize(obj)
    obj.update(inputs)
    structure = ProblemStructure(obj, [])
    lin = structure.linearization
    d = torch.as_tensor(np.random.default_rng(1).normal(size=(4, structure.n)) * spread)
    full = lin.at(d).exact()
    for elements in ([2], [0, 3], [1, 2, 3]):
        pt = lin.at(d)
        before = [t.clone() for t in _all_tensors(pt)]
        part = pt.exact_for(np.array(elements))
        others = [b for b in range(4) if b not in elements]
        assert (part[elements] - full[elements]).abs().max() <= 1e-14 * full.abs().max()
        assert bool((part[others] == 0).all())
        assert all(torch.equal(a, b) for a, b in zip(before, _all_tensors(pt), strict=True))
    structure.chart.restore()


def _all_tensors(pt) -> list[torch.Tensor]:
    from theseus.core.vectorizer import Vectorize

    return [v.tensor for _, ev in pt.groups for v in Vectorize._get_all_vars(ev)]
