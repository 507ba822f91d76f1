"""The robust losses' rank-one curvature in the Gauss-Newton blocks
(``LinearizedPoint.gauss_newton(robust_curvature=True)``, used by the polish past Theseus'
test): for an error linear in Vector variables each kept block is the robust cost's exact
Hessian (autograd), a block the term would make indefinite keeps plain Gauss-Newton, and a
polished robust SE3 pose-graph solve reaches the tight solve's solution and gradient; an
element whose polish converges linearly switches to the exact blocks."""

from __future__ import annotations

import math

import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread, se2_element_gradients  # noqa: F401

from pounce_theseus import PounceOptimizer, batch_nlp
from pounce_theseus.batch_nlp import ProblemStructure
from pounce_theseus.linearization import PSD_RTOL, CostLinearization, LinearizedPoint
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS

DIM, N_VARS, BSZ = 3, 5, 2


def _robust(cf, loss, log_radius, flatten):
    if loss is th.GemanMcClureLoss:
        mu = th.Variable(torch.full((1, 1), 1.5, dtype=torch.float64), name=f"mu_{cf.name}")
        return th.GNCRobustCostFunction(cf, loss, log_radius, mu, flatten_dims=flatten)
    return th.RobustCostFunction(cf, loss, log_radius, flatten_dims=flatten)


def _vector_chain(loss, radius: float, flatten: bool, vectorize: bool, seed: int = 0):
    """Robust ``Between``s of a chain of Vector variables (errors linear in them, with
    residuals of assorted sizes) and a robust prior on the first, at a random point."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    xs = [th.Vector(DIM, name=f"x{i}", **f64) for i in range(N_VARS)]
    log_radius = th.Variable(torch.full((1, 1), float(torch.tensor(radius).log()), **f64),
                             name="log_radius")
    obj = th.Objective(dtype=torch.float64)
    for i in range(N_VARS - 1):
        meas = th.Vector(tensor=2.0 * torch.randn(BSZ, DIM, generator=g, **f64),
                         name=f"m{i}")
        w = th.DiagonalCostWeight(th.Variable(
            0.5 + torch.rand(BSZ, DIM, generator=g, **f64), name=f"w{i}"))
        obj.add(_robust(th.Between(xs[i], xs[i + 1], meas, w, name=f"b{i}"), loss,
                        log_radius, flatten))
    target = th.Vector(tensor=torch.randn(BSZ, DIM, generator=g, **f64), name="target")
    obj.add(_robust(th.Difference(xs[0], target, th.ScaleCostWeight(
        torch.tensor(1.3, **f64)), name="prior"), loss, log_radius, flatten))
    if vectorize:
        th.Vectorize(obj)
    obj.update({x.name: torch.randn(BSZ, DIM, generator=g, **f64) for x in xs})
    return obj


def _expected(obj, structure) -> tuple[torch.Tensor, list[bool]]:
    """Per element, the sum over cost functions of the autograd Hessian of
    ``1/2 |weighted error|^2`` where positive semidefinite (to ``PSD_RTOL`` of the larger of
    its largest eigenvalue and ``j'j``'s largest diagonal entry), else Theseus' ``j'j``
    (``j`` its weighted Jacobian); and per
    (cost function, element) whether the exact block was taken."""
    n = structure.n
    out = torch.zeros(BSZ, n, n, dtype=torch.float64)
    kept = []
    for cf in obj.cost_functions.values():
        cols = torch.cat([torch.arange(structure.chart.offsets[v.name].start,
                                       structure.chart.offsets[v.name].stop)
                          for v in cf.optim_vars])
        saved = [v.tensor for v in cf.optim_vars]
        jacs, _ = cf.weighted_jacobians_error()
        j = torch.cat(jacs, dim=2)
        for b in range(BSZ):
            def fk(x, b=b, cf=cf, saved=saved):
                parts = x.split([v.dof() for v in cf.optim_vars])
                for v, t, p in zip(cf.optim_vars, saved, parts, strict=True):
                    v.update(torch.cat([t[:b], p.unsqueeze(0), t[b + 1:]]))
                e = cf.weighted_error()[b]
                return 0.5 * (e * e).sum()
            x0 = torch.cat([t[b] for t in saved])
            h = torch.autograd.functional.hessian(fk, x0)
            for v, t in zip(cf.optim_vars, saved, strict=True):
                v.update(t)
            gn = j[b].T @ j[b]
            lam = torch.linalg.eigvalsh(h)
            ok = bool(lam[0] >= -PSD_RTOL * max(lam.abs().max(), gn.diagonal().max()))
            kept.append(ok)
            block = h if ok else gn
            out[b][cols[:, None], cols[None, :]] += block
    return out, kept


LOSSES = [th.WelschLoss, th.HuberLoss, th.HingeLoss, th.GemanMcClureLoss]


# flatten_dims only unvectorised: Theseus' own RobustCostFunction.weighted_jacobians_error
# fails under Vectorize with flatten_dims (radius stacked to K * B rows against the K * B *
# dim flattened entries)
FLATTEN_VECTORIZE = [(False, True), (False, False), (True, False)]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(("flatten", "vectorize"), FLATTEN_VECTORIZE)
def test_kept_blocks_are_the_exact_hessian(loss, flatten, vectorize):
    """A radius at which every block keeps the term (Welsch, Geman-McClure: large; Huber
    and Hinge: small, so that every residual is past it and the term acts): the assembled
    Hessian is autograd's exact one, and differs from plain Gauss-Newton."""
    radius = 1e4 if loss in (th.WelschLoss, th.GemanMcClureLoss) else 1e-3
    obj = _vector_chain(loss, radius, flatten, vectorize)
    structure = ProblemStructure(obj, [])
    assert CostLinearization.applies(structure)
    pt = structure.linearization.at(structure.chart.zeros(BSZ))
    got = structure.hess.dense(pt.gauss_newton(robust_curvature=True))
    plain = structure.hess.dense(pt.gauss_newton())
    want, kept = _expected(obj, structure)
    assert all(kept)
    assert pt.robust_kept == 1.0
    # (flattened Huber and Hinge past the radius: f linear in |e_i|, exact Hessian zero)
    scale = max(want.abs().max(), plain.abs().max())
    assert (got - want).abs().max() <= 1e-11 * scale
    assert (plain - want).abs().max() >= 1e-6 * scale
    # the inner errors kept from the linearisation (what the polish uses) give the same
    kept_errors = structure.linearization.at(structure.chart.zeros(BSZ), robust_errors=True)
    assert torch.equal(structure.hess.dense(kept_errors.gauss_newton(robust_curvature=True)),
                       got)
    structure.chart.restore()


@pytest.mark.parametrize("loss", [th.WelschLoss, th.GemanMcClureLoss])
@pytest.mark.parametrize(("flatten", "vectorize"), FLATTEN_VECTORIZE)
def test_term_dropped_where_block_would_be_indefinite(loss, flatten, vectorize):
    """At a radius near the residuals' sizes some robust blocks' exact Hessians are
    indefinite: those keep Gauss-Newton, the rest the exact block, so the sum is positive
    semidefinite, as the autograd rule gives."""
    obj = _vector_chain(loss, 20.0, flatten, vectorize, seed=1)
    structure = ProblemStructure(obj, [])
    pt = structure.linearization.at(structure.chart.zeros(BSZ))
    got = structure.hess.dense(pt.gauss_newton(robust_curvature=True))
    want, kept = _expected(obj, structure)
    assert 0 < sum(kept) < len(kept)
    assert pt.robust_kept == pytest.approx(sum(kept) / len(kept))
    assert (got - want).abs().max() <= 1e-11 * want.abs().max()
    assert bool((torch.linalg.eigvalsh(got)[:, 0] >= -1e-10 * got.abs().max()).all())
    structure.chart.restore()


def _solve(opt_kwargs: dict, robust_curvature: bool, monkeypatch, n=30, bsz=2):
    """A robust SE3 pose graph through TheseusLayer (polish on: gradients enabled), the
    outer loss' gradient in log_loss_radius; with ``robust_curvature`` False the polish
    takes plain Gauss-Newton blocks (and no element switches to exact ones)."""
    if not robust_curvature:
        monkeypatch.setattr(batch_nlp, "POLISH_SLOW_RATE", math.inf)
        plain = LinearizedPoint.gauss_newton
        monkeypatch.setattr(LinearizedPoint, "gauss_newton",
                            lambda self, robust_curvature=False: plain(self))
    obj, inputs, poses, gt = synthetic_pose_graph(n, bsz, dims=3)
    opt = PounceOptimizer(obj, **opt_kwargs)
    layer = th.TheseusLayer(opt)
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    sol, info = layer.forward({**inputs, "log_loss_radius": radius},
                              optimizer_kwargs={"backward_mode": "implicit"})
    loss = sum(th.local(th.SE3(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True)).sum()
    (grad,) = torch.autograd.grad(loss, radius)
    monkeypatch.undo()
    x = torch.cat([sol[p.name].reshape(bsz, -1) for p in poses], dim=1)
    return x, grad.item(), info.converged_iter.float()


def test_polished_pose_graph_matches_tight_solve(monkeypatch):
    """The polish with the rank-one term (to Ipopt's tol 1e-8) ends as close to the tight
    (tol 1e-12) solve, solution and implicit gradient, as the polish on plain Gauss-Newton
    blocks does, in fewer iterations. (The graph's weak prior resolves its gauge to ~1e-6
    only, and the gradient, -1.5e-4, is a small difference of large terms: both polishes
    sit ~1e-6 from the tight solution and ~4% from its gradient, 5e-7 apart.)"""
    x, g, it = _solve({}, True, monkeypatch)
    x_gn, g_gn, it_gn = _solve({}, False, monkeypatch)
    x_ref, g_ref, _ = _solve({"tol": 1e-12, "max_iterations": 300}, True, monkeypatch)
    dx, dx_gn = (x - x_ref).abs().max().item(), (x_gn - x_ref).abs().max().item()
    assert dx <= max(2 * dx_gn, 1e-7) and dx <= 1e-5
    assert abs(g - g_ref) <= max(2 * abs(g_gn - g_ref), 1e-3 * abs(g_ref))
    assert abs(g - g_ref) <= 0.1 * abs(g_ref)
    assert bool((it < it_gn).all())


def test_slow_polish_element_takes_exact_blocks(monkeypatch):
    """An element whose polish gains less than ``POLISH_SLOW_RATE`` per iterate switches to
    the exact Hessian blocks: fewer iterations than the Gauss-Newton polish, the tight
    (tol 1e-12) solve's error, and its outer gradient within 1e-4 of the tight solve's (the
    Gauss-Newton polish stops 2.7e-2 off); the other elements are untouched."""
    it, err, g = se2_element_gradients({})
    monkeypatch.setattr(batch_nlp, "POLISH_SLOW_RATE", math.inf)
    it_gn, err_gn, g_gn = se2_element_gradients({})
    monkeypatch.undo()
    _, err_ref, g_ref = se2_element_gradients({"tol": 1e-12, "max_iterations": 300})
    assert it[1] < it_gn[1]
    assert (it[[0, 2, 3]] == it_gn[[0, 2, 3]]).all()
    assert torch.allclose(err, err_ref, rtol=1e-10, atol=0)
    assert abs(g[1] - g_ref[1]) <= 1e-4 * abs(g_ref[1])
    assert abs(g_gn[1] - g_ref[1]) > 1e-2 * abs(g_ref[1])  # what the switch fixes
    assert torch.equal(g[[0, 2, 3]], g_gn[[0, 2, 3]])
