"""pounce_cvxpy.qpth.QPFunction against qpth 0.0.18 itself.

References: qpth's QPFunction at its defaults, on well-conditioned QPs (Q = LL' + I, a
strictly feasible point, strictly complementary at the solution) where qpth is itself
accurate: its gradients are checked against central differences of its own forward first.
Tolerances: z 1e-6, gradients 1e-5, relative to max(1, |reference|_inf); gradcheck in
float64 through our QPFunction.
"""

from __future__ import annotations

import warnings

import pytest
import qpth.qp as qpth_qp  # a dev dependency, installed with pip --no-deps (see scripts/dev)
import torch

import pounce_kkt
from pounce_cvxpy.qpth import QPFunction, qp_structure
from testing_helpers.compare import rel_err

NAMES = ("Q", "p", "G", "h", "A", "b")


def qp_batch(seed: int, B: int = 4, nz: int = 6, nineq: int = 8, neq: int = 2,
             dtype=torch.float64) -> list[torch.Tensor]:
    """(Q, p, G, h, A, b), batched, with a strictly feasible z0 and Q = LL' + I."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    L = rand(B, nz, nz)
    Q = L @ L.transpose(1, 2) / nz + torch.eye(nz, dtype=torch.float64)
    G, z0 = rand(B, nineq, nz), rand(B, nz)
    h = (G @ z0[..., None])[..., 0] + 0.1 + torch.rand(B, nineq, generator=g, dtype=torch.float64)
    A = rand(B, neq, nz)
    b = (A @ z0[..., None])[..., 0]
    return [t.to(dtype) for t in (Q, 3 * rand(B, nz), G, h, A, b)]


def value_and_grads(fn, args, weight):
    """z and the gradients of <weight, z> with respect to every argument."""
    leaves = [t.detach().clone().requires_grad_(t.numel() > 0) for t in args]
    z = fn(*leaves)
    (z * weight).sum().backward()
    return z.detach(), [t.grad for t in leaves]


def central_difference(fn, args, weight, k: int, direction: torch.Tensor, h: float = 1e-6):
    plus = [t + h * direction if i == k else t for i, t in enumerate(args)]
    minus = [t - h * direction if i == k else t for i, t in enumerate(args)]
    return float(((fn(*plus) - fn(*minus)) * weight).sum() / (2 * h))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solution_and_gradients_match_qpth(seed):
    args = qp_batch(seed)
    weight = torch.randn(args[1].shape, generator=torch.Generator().manual_seed(seed + 50),
                         dtype=torch.float64)
    z_ref, g_ref = value_and_grads(qpth_qp.QPFunction(), args, weight)
    z, g = value_and_grads(QPFunction(), args, weight)
    # qpth is accurate here: its gradients agree with central differences of its forward.
    rng = torch.Generator().manual_seed(seed + 99)
    for k, name in enumerate(NAMES):
        d = torch.randn(args[k].shape, generator=rng, dtype=torch.float64)
        if name == "Q":  # a symmetric direction: qpth's forward uses Q as given
            d = d + d.transpose(1, 2)
        fd = central_difference(qpth_qp.QPFunction(), args, weight, k, d)
        assert abs(float((g_ref[k] * d).sum()) - fd) <= 1e-5 * max(1.0, abs(fd)), name
    assert rel_err(z, z_ref) <= 1e-6
    for name, u, v in zip(NAMES, g, g_ref, strict=True):
        err = rel_err(u, v)
        assert err <= 1e-5, f"grad {name}: relative error {err:.1e}"
    active = (args[2] @ z[..., None])[..., 0] >= args[3] - 1e-9
    assert active.any(), "the fixture should have active inequalities"


def test_shared_arguments_broadcast_and_their_gradient_is_the_batch_sum():
    """Q, G, h shared: z as qpth's; the gradient is the sum of the per-item gradients
    (qpth's own backward returns the batch mean for a shared argument)."""
    Q, p, G, h, A, b = qp_batch(3, neq=0)
    e = torch.Tensor()
    shared = (Q[0], p, G[0], h[0], e, e)
    expanded = (Q[0].expand_as(Q), p, G[0].expand_as(G), h[0].expand_as(h), e, e)
    weight = torch.randn(p.shape, dtype=torch.float64)
    z, g = value_and_grads(QPFunction(), shared, weight)
    z_ref, g_ref = value_and_grads(qpth_qp.QPFunction(), expanded, weight)
    _, g_qpth_shared = value_and_grads(qpth_qp.QPFunction(), shared, weight)
    assert rel_err(z, z_ref) <= 1e-6
    for k in (0, 2, 3):  # shared: the batch sum of qpth's per-item gradients
        assert g[k].shape == shared[k].shape
        assert rel_err(g[k], g_ref[k].sum(0)) <= 1e-5, NAMES[k]
        assert rel_err(g[k], g_qpth_shared[k] * p.shape[0]) <= 1e-5, NAMES[k]
    assert rel_err(g[1], g_ref[1]) <= 1e-5
    assert g[4] is None and g[5] is None


def test_empty_equalities_and_unbatched_inputs():
    Q, p, G, h, A, b = qp_batch(4, B=1)
    e = torch.Tensor()
    z = QPFunction()(Q[0], p[0], G[0], h[0], e, e)
    z_ref = qpth_qp.QPFunction()(Q[0], p[0], G[0], h[0], e, e)
    assert z.shape == z_ref.shape == (1, p.shape[1])
    assert rel_err(z, z_ref) <= 1e-6
    z_eq = QPFunction()(Q[0], p[0], G[0], h[0], A[0], b[0])
    assert rel_err(z_eq, qpth_qp.QPFunction()(Q[0], p[0], G[0], h[0], A[0], b[0])) <= 1e-6


def test_float32_in_float32_out():
    args64 = qp_batch(5)
    args32 = [t.float() for t in args64]
    weight = torch.randn(args64[1].shape, dtype=torch.float64)
    z32, g32 = value_and_grads(QPFunction(), args32, weight.float())
    z64, g64 = value_and_grads(QPFunction(), args64, weight)
    assert z32.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g32)
    # float32 inputs are rounded data: compare with float64 on the same rounded values.
    z64r, g64r = value_and_grads(QPFunction(), [t.double() for t in args32], weight)
    assert rel_err(z32.double(), z64r) <= 1e-6
    for u, v in zip(g32, g64r, strict=True):
        assert rel_err(u.double(), v) <= 1e-5
    assert rel_err(z32.double(), z64) <= 1e-4


def test_gradcheck_float64():
    Q, p, G, h, A, b = qp_batch(6, B=2, nz=4, nineq=5, neq=1)
    f = QPFunction()

    def fn(Q, p, G, h, A, b):  # noqa: N803
        return f(Q, p, G, h, A, b)

    inputs = [t.detach().clone().requires_grad_() for t in (Q, p, G[0], h, A, b[0])]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_repeated_calls_reuse_one_structure():
    args = qp_batch(7)
    f = QPFunction()
    before = qp_structure.cache_info()
    f(*args)
    f(*[t * 1.01 for t in args])
    after = qp_structure.cache_info()
    assert after.hits - before.hits >= 1
    assert qp_structure(6, 2, 8) is qp_structure(6, 2, 8)


def test_bad_input_is_named():
    Q, p, G, h, A, b = qp_batch(8)
    f = QPFunction()
    with pytest.raises(ValueError, match="G must have shape"):
        f(Q, p, G[:, :, :3], h, A, b)
    h_nan = h.clone()
    h_nan[2, 0] = float("nan")
    with pytest.raises(ValueError, match="h contains NaN at batch index 2"):
        f(Q, p, G, h_nan, A, b)
    Q_bad = Q.clone()
    Q_bad[1] = -torch.eye(Q.shape[1], dtype=Q.dtype)
    with pytest.raises(ValueError, match="Q is not positive definite at batch index 1"):
        f(Q_bad, p, G, h, A, b)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        f(Q[:2], p, G, h, A, b)
    h_bad = h.clone()
    h_bad[3] = -1e3  # G z <= -1000 with the equalities: infeasible
    G_bad = G.clone()
    G_bad[3] = torch.cat([torch.eye(G.shape[2]), -torch.eye(G.shape[2])])[:G.shape[1]]
    with pytest.raises(pounce_kkt.SolverError, match="batch item 3"):
        f(Q, p, G_bad, h_bad, A, b)


def test_positive_semidefinite_Q_with_the_check_off():
    """An LP (Q = 0) is solved with check_Q_spd=False; qpth cannot (its LU needs Q > 0)."""
    _, p, G, h, A, b = qp_batch(9, B=1, nz=3, nineq=6, neq=0)
    G = torch.cat([torch.eye(3), -torch.eye(3)]).to(torch.float64)
    h = torch.ones(6, dtype=torch.float64)
    z = QPFunction(check_Q_spd=False)(torch.zeros(3, 3, dtype=torch.float64), p[0], G, h,
                                      torch.Tensor(), torch.Tensor())
    assert torch.allclose(z[0], -torch.sign(p[0]), atol=1e-7)


def test_qpth_only_options_warn_once_at_the_users_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = QPFunction(verbose=1, maxIter=50, notImprovedLim=10)
    assert len(caught) == 1 and caught[0].filename == __file__
    for key in ("verbose", "maxIter", "notImprovedLim"):
        assert key in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(*qp_batch(10))  # the call itself is silent
        QPFunction()  # qpth's defaults: silent


def test_the_optnet_example_runs_through_the_qpth_api(tmp_path):
    import pathlib
    import re
    import subprocess
    import sys

    examples = pathlib.Path(__file__).resolve().parents[1] / "examples"
    proc = subprocess.run([sys.executable, "optnet_qp.py", "--small", "--layer", "qpth",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=examples)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gap = re.search(r"max \|z_qpth - z_cvxpylayer\| = ([-+.\de]+)", proc.stdout)
    assert gap and float(gap.group(1)) <= 1e-6, proc.stdout[-2000:]
    assert (tmp_path / "optnet_qp.png").stat().st_size > 0
