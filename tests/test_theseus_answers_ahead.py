"""Callbacks answered ahead (``BatchNlp.answer_ahead``): an objective round also computes
the gradient and Hessian at its point (in the polish the exact blocks of the elements the
switch puts on them, unless their gradient is within tol), and the solves' own threads take
them without another round; a polish Hessian asked where the solve settled is Gauss-Newton.
None of it may change an iterate: solutions, iterations, errors and outer gradients are
those of the solve that serves every callback, in fewer rounds and without the settled
point's exact blocks."""

from __future__ import annotations

import numpy as np
import pytest
import theseus as th
import torch
from test_theseus_support import THESEUS_MARKS, one_thread  # noqa: F401

from pounce_theseus import PounceOptimizer
from pounce_theseus.batch_nlp import BatchNlp
from pounce_theseus.linearization import LinearizedPoint
from testing_helpers.theseus_problems import synthetic_pose_graph

pytestmark = THESEUS_MARKS


def _solve(monkeypatch, ahead: bool, dims: int, optimizer_kwargs: dict,
           opt_kwargs: dict | None = None, n: int = 40, bsz: int = 4):
    """Solution, iterations, final errors, per-element outer gradients, served rounds and
    exact-block calls of one forward and backward; ``ahead=False`` serves every callback."""
    rounds, exact = [], []
    serve, exact_for = BatchNlp.serve, LinearizedPoint.exact_for

    def counted_serve(self, requests):
        rounds.append(len(requests))
        return serve(self, requests)

    def counted_exact_for(self, elements, **kw):
        exact.append(np.asarray(elements).tolist())
        return exact_for(self, elements, **kw)

    monkeypatch.setattr(BatchNlp, "serve", counted_serve)
    monkeypatch.setattr(LinearizedPoint, "exact_for", counted_exact_for)
    if not ahead:
        monkeypatch.setattr(BatchNlp, "answer_ahead", lambda self, req: None)
    obj, inputs, poses, gt = synthetic_pose_graph(n, bsz, dims=dims, seed=1)
    opt = PounceOptimizer(obj, **(opt_kwargs or {}))
    radius = inputs["log_loss_radius"].clone().requires_grad_(True)
    sol, info = th.TheseusLayer(opt).forward({**inputs, "log_loss_radius": radius},
                                             optimizer_kwargs=optimizer_kwargs)
    group = th.SE2 if dims == 2 else th.SE3
    loss = sum(th.local(group(tensor=sol[p.name]), g).norm(dim=1)
               for p, g in zip(poses, gt, strict=True))
    grads = torch.stack([torch.autograd.grad(loss[b], radius, retain_graph=True)[0]
                         for b in range(bsz)])
    monkeypatch.undo()
    x = torch.cat([t.detach().reshape(bsz, -1) for t in sol.values()], dim=1)
    return x, opt.last_solve["iterations"], info.last_err, grads, rounds, exact


@pytest.mark.parametrize("dims", [2, 3])
def test_answers_ahead_change_no_iterate(monkeypatch, dims):
    """The polished implicit solve (SE2: element 1's polish switches to exact blocks, see
    test_theseus_robust_curvature.py) with and without answers ahead: bitwise the same
    solution, iterations, errors and gradients, in at most half the rounds; the switched
    element's exact blocks are not computed at its settled last point."""
    x, it, err, g, rounds, exact = _solve(monkeypatch, True, dims,
                                          {"backward_mode": "implicit"})
    x0, it0, err0, g0, rounds0, exact0 = _solve(monkeypatch, False, dims,
                                                {"backward_mode": "implicit"})
    assert torch.equal(x, x0)
    assert np.array_equal(it, it0)
    assert torch.equal(err, err0)
    assert torch.equal(g, g0)
    assert 2 * len(rounds) <= len(rounds0)
    if dims == 2:
        assert exact0 and exact  # element 1 switched
        assert len(exact) < len(exact0)


def test_answers_ahead_take_theseus_steps(monkeypatch):
    """Under unroll with LM damping (``unrolled.TheseusStepNlp``: Hessian answers become
    the damped Newton matrix) and a budget too small to converge: the same iterates and
    gradients with and without answers ahead."""
    kw = {"backward_mode": "unroll", "damping": 0.5}
    x, it, err, g, rounds, _ = _solve(monkeypatch, True, 2, kw, {"max_iterations": 3},
                                      n=20, bsz=2)
    x0, it0, err0, g0, rounds0, _ = _solve(monkeypatch, False, 2, kw, {"max_iterations": 3},
                                           n=20, bsz=2)
    assert (it == 3).all()
    assert torch.equal(x, x0)
    assert torch.equal(err, err0)
    assert torch.equal(g, g0)
    assert len(rounds) < len(rounds0)


@pytest.mark.parametrize("dims", [2, 3])
def test_settled_round_answers_plain_gauss_newton(monkeypatch, dims):
    """A polish round whose every asking element has its gradient within tol computes
    Gauss-Newton without the robust term (and no exact blocks) for the Hessian those
    solves still ask before stopping: bitwise the same solution, iterations, errors and
    gradients as computing the polish's blocks there."""
    calls = []
    gauss_newton = LinearizedPoint.gauss_newton

    def spy(self, robust_curvature=False):
        calls.append(robust_curvature)
        return gauss_newton(self, robust_curvature)

    monkeypatch.setattr(LinearizedPoint, "gauss_newton", spy)
    x, it, err, g, _, _ = _solve(monkeypatch, True, dims, {"backward_mode": "implicit"})
    polish = calls[calls.index(True):]  # from the polish's first Hessian on
    assert polish and polish[-1] is False  # its settled round: plain Gauss-Newton
    hessian_ahead = BatchNlp._hessian_ahead

    def as_before(self, pt, grad, requests):
        tol, self.tol = self.tol, -1.0  # no element counts as within tol
        try:
            return hessian_ahead(self, pt, grad, requests)
        finally:
            self.tol = tol

    monkeypatch.setattr(BatchNlp, "_hessian_ahead", as_before)
    x0, it0, err0, g0, _, _ = _solve(monkeypatch, True, dims, {"backward_mode": "implicit"})
    assert torch.equal(x, x0)
    assert np.array_equal(it, it0)
    assert torch.equal(err, err0)
    assert torch.equal(g, g0)
