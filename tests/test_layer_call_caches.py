"""What the layers keep between calls is never stale: the qpth QPFunction's Q check and
the cvxpylayers adapter's options (pounce_cvxpy/qpth.py `_CheckedQ`,
pounce_cvxpy/solver_args.py `PounceArgs.solve_options`).

References: qpth's rule (every Q positive definite, else ValueError naming the batch item);
the per-call `solver_args` table of pounce_cvxpy/solver_args.py; the gradient of a
nonsymmetric Q against central differences of the forward (float64, h = 1e-6, 1e-6 rel).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from cvxpylayers.torch import CvxpyLayer

import pounce_cvxpy  # noqa: F401  (registers "pounce")
from pounce_cvxpy.qpth import QPFunction


def _qp(seed: int = 0, nz: int = 4, nineq: int = 6):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(nz, nz, generator=g, dtype=torch.float64)
    Q = L @ L.T / nz + torch.eye(nz, dtype=torch.float64)
    G = torch.randn(nineq, nz, generator=g, dtype=torch.float64)
    h = G @ torch.randn(nz, generator=g, dtype=torch.float64) + 0.5
    p = torch.randn(2, nz, generator=g, dtype=torch.float64)
    return Q, p, G, h


def test_q_modified_in_place_is_checked_again():
    """A Q that passed once and is then made indefinite in place raises on the next call."""
    Q, p, G, h = _qp()
    f = QPFunction()
    e = torch.empty(0, dtype=torch.float64)
    f(Q, p, G, h, e, e)
    f(Q, p, G, h, e, e)  # the same, unchanged Q: accepted again
    with torch.no_grad():
        Q[0, 0] = -5.0
    with pytest.raises(ValueError, match="Q is not positive definite"):
        f(Q, p, G, h, e, e)
    # a new tensor with the values of an indefinite Q is checked too
    with pytest.raises(ValueError, match="Q is not positive definite"):
        f(Q.clone(), p, G, h, e, e)


def test_nonsymmetric_q_solves_its_symmetric_part_with_its_gradient():
    """Q and (Q + Q')/2 give the same z, and dz/dQ matches central differences."""
    Q, p, G, h = _qp(1)
    K = torch.randn(Q.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Qn = (Q + 0.3 * (K - K.T)).requires_grad_(True)  # same symmetric part as Q
    e = torch.empty(0, dtype=torch.float64)
    f = QPFunction()
    z = f(Qn, p, G, h, e, e)
    torch.testing.assert_close(z, f(Q, p, G, h, e, e), atol=1e-9, rtol=0)
    w = torch.linspace(-1, 1, z.numel(), dtype=torch.float64).reshape(z.shape)
    (z * w).sum().backward()
    D = torch.randn(Q.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    step = 1e-6
    with torch.no_grad():
        fd = ((f(Qn + step * D, p, G, h, e, e) * w).sum()
              - (f(Qn - step * D, p, G, h, e, e) * w).sum()) / (2 * step)
    got = (Qn.grad * D).sum()
    assert abs(float(got - fd)) <= 1e-6 * max(1.0, abs(float(fd))), (float(got), float(fd))


def test_per_call_solver_args_still_apply_after_cached_defaults():
    """A layer's defaults are built once; a per-call key still changes the call that has it
    (max_iter=1 cannot solve this QP) and the next call without it is the default again."""
    x = cp.Variable(3)
    q = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x), [x >= -1, cp.sum(x) == 1])
    layer = CvxpyLayer(prob, [q], [x], solver="pounce")
    qv = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (x0,) = layer(qv)
    with pytest.raises(Exception, match="iteration_limit"):
        layer(qv, solver_args={"max_iter": 1, "engine": "ipm"})
    (x1,) = layer(qv)
    np.testing.assert_allclose(x1.numpy(), x0.numpy(), atol=1e-9)
