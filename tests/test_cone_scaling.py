"""The cone scaling H of ``ds = -H dy`` (pounce_kkt/cones/, cone_scaling.py), cone by cone.

Each cone's H is checked for symmetry and positive semidefiniteness, for ``H y = s`` where
the design says it holds (NT cones at any interior pair through ``soc_nt_scaling``; every
cone on the central path), and against the limit it must reach at a strictly complementary
boundary pair: there ``ds = D dw`` and ``dy = -(I - D) dw`` with ``D`` the derivative of the
projection onto K at ``w = s - y`` (Moreau), i.e. ``D = H (I + H)^-1``. D comes from central
finite differences of diffcp's cone projections (an independent implementation).
Barrier gradients and Hessians are checked by finite differences.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffcp.cones import pi as diffcp_pi

from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.cone_scaling import cone_scaling, dense_h, equilibration
from pounce_kkt.cones.exp import exp_barrier, exp_hess_inv, exp_interior, exp_scaling
from pounce_kkt.cones.nonneg import nonneg_scaling
from pounce_kkt.cones.power import power_barrier, power_hess_inv, power_interior, power_scaling
from pounce_kkt.cones.psd import mat_to_svec, psd_nt_operator, psd_scaling, svec_to_mat
from pounce_kkt.cones.soc import soc_nt_scaling, soc_scaling
from pounce_kkt.structure import ConicStructure
from testing_helpers.cone_pairs import pair_exp, pair_power, pair_psd, pair_soc
from testing_helpers.svec import smat, svec

DT = torch.float64


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=DT)


def _soc_interior(rng, B, d):
    x = rng.standard_normal((B, d - 1))
    t = np.linalg.norm(x, axis=1) + rng.uniform(0.1, 1.0, B)
    return _t(np.concatenate([t[:, None], x], axis=1))


def _check_sym_psd(H, tol=1e-10):
    H = H.detach()
    scale = H.abs().amax(dim=(-1, -2), keepdim=True).clamp(min=1.0)
    assert ((H - H.transpose(-1, -2)).abs() / scale).max() < tol
    lam = torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))
    assert (lam / scale[..., 0]).min() > -tol


def _apply(H, v):
    return (H @ v[..., None])[..., 0]


def _projection_jacobian(w, cones_scs, h=1e-7):
    """Central-difference Jacobian of diffcp's projection onto K at w."""
    cones = [(k, v) for k, v in cones_scs.items()]
    cols = []
    for j in range(w.size):
        e = np.zeros(w.size)
        e[j] = h
        cols.append((diffcp_pi(w + e, cones) - diffcp_pi(w - e, cones)) / (2 * h))
    return np.stack(cols, axis=1)


def _central_pair_check(H, s, y):
    assert torch.allclose(_apply(H, y), s, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------------ nonneg


def test_nonneg_is_s_over_y_inside_and_finite_outside():
    rng = np.random.default_rng(0)
    s, y = _t(rng.uniform(0.1, 2, (3, 5))), _t(rng.uniform(0.1, 2, (3, 5)))
    assert torch.allclose(nonneg_scaling(s, y), s / y, rtol=1e-12)
    # a converged point with s a hair below 0 (s = b - A x rounding) still gives H >= 0
    s_bad = _t([[-1e-14, 1.0, 0.0]])
    y_bad = _t([[1.0, -1e-14, 0.0]])
    h = nonneg_scaling(s_bad, y_bad)
    assert torch.isfinite(h).all() and (h > 0).all()
    assert h[0, 0] < 1e-12 and h[0, 1] > 1e12  # active -> 0, inactive -> infinity


# ------------------------------------------------------------------------------------ SOC


@pytest.mark.parametrize("d", [2, 3, 5])
def test_soc_nt_scaling_maps_y_to_s(d):
    rng = np.random.default_rng(d)
    s, y = _soc_interior(rng, 6, d), _soc_interior(rng, 6, d)
    W2 = soc_nt_scaling(s, y)
    _check_sym_psd(W2)
    assert torch.allclose(_apply(W2, y), s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_soc_recentred_equals_nt_on_central_path(d):
    """On the central path (same Jordan frame, s_i y_i = tau) H is exactly NT."""
    rng = np.random.default_rng(10 + d)
    B = 5
    u = rng.standard_normal((B, d - 1))
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)
    sig = rng.uniform(0.2, 2.0, (B, 2))
    tau = rng.uniform(1e-3, 1e-1, (B, 1))
    eta = tau / sig

    def frame(v):
        return _t(np.concatenate([(v[:, :1] + v[:, 1:]) / 2, (v[:, :1] - v[:, 1:]) / 2 * u], 1))

    s, y = frame(sig), frame(eta)
    H = soc_scaling(s, y)
    _check_sym_psd(H)
    _central_pair_check(H, s, y)
    assert torch.allclose(H, soc_nt_scaling(s, y), rtol=1e-7, atol=1e-9)


def test_soc_of_size_one_is_nonneg():
    rng = np.random.default_rng(1)
    s, y = _t(rng.uniform(0.1, 2, (4, 1))), _t(rng.uniform(0.1, 2, (4, 1)))
    assert torch.allclose(soc_scaling(s, y)[:, :, 0], s / y, rtol=1e-7)


@pytest.mark.parametrize("mode", ["boundary", "s_interior", "y_interior"])
def test_soc_limit_matches_projection_derivative(mode):
    rng = np.random.default_rng(3)
    for _ in range(4):
        s, y = pair_soc(rng, 4, mode)
        H = soc_scaling(_t(s)[None], _t(y)[None])[0]
        _check_sym_psd(H)
        D = _projection_jacobian(s - y, {"q": [4]})
        D_h = H @ torch.linalg.inv(torch.eye(4, dtype=DT) + H)
        np.testing.assert_allclose(D_h.numpy(), D, atol=2e-6)


def test_soc_boundary_tangent_eigenvalue_is_norm_ratio():
    """Across an active SOC the finite eigenvalues of H are |s| / |y| (cone curvature)."""
    s = _t([[1.0, 0.6, 0.8]]) * 2.0
    y = _t([[1.0, -0.6, -0.8]]) * 0.5
    lam = torch.linalg.eigvalsh(soc_scaling(s, y))[0]
    ratio = (s.norm() / y.norm()).item()
    # the middle one (tangent direction), to the ~1e-7 the TAU_REL_MIXED floor allows
    assert abs(lam[1].item() - ratio) < 1e-6 * ratio
    assert lam[0] < 1e-6 and lam[2] > 1e6


def test_soc_slightly_outside_is_finite_psd():
    s = _t([[1.0, 1.0 + 1e-13, 0.0]])
    y = _t([[1.0, -1.0, 0.0]])
    H = soc_scaling(s, y)
    assert torch.isfinite(H).all()
    _check_sym_psd(H)


# ------------------------------------------------------------------------------------ PSD


def test_svec_round_trip_and_scaling():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((4, 4))
    M = M + M.T
    v = svec(M)
    assert torch.allclose(mat_to_svec(_t(M)), _t(v))
    assert torch.allclose(svec_to_mat(_t(v), 4), _t(M))
    # svec preserves the trace inner product
    N = rng.standard_normal((4, 4))
    N = N + N.T
    assert abs(v @ svec(N) - np.trace(M @ N)) < 1e-12


@pytest.mark.parametrize("k", [1, 2, 3])
def test_psd_central_pair(k):
    rng = np.random.default_rng(k)
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    sig = rng.uniform(0.2, 2.0, k)
    eta = 0.03 / sig
    s = _t(svec(Q @ np.diag(sig) @ Q.T))[None]
    y = _t(svec(Q @ np.diag(eta) @ Q.T))[None]
    H = psd_scaling(s, y, k)
    _check_sym_psd(H)
    _central_pair_check(H, s, y)


def test_psd_nt_operator_at_general_interior_pair():
    """psd_nt_operator is the svec matrix of dY -> W dY W, W = S^1/2 (S^1/2 Y S^1/2)^-1/2 S^1/2,
    here for a non-commuting interior pair (W built independently in numpy)."""
    rng = np.random.default_rng(5)
    k = 3
    Ls, Ly = rng.standard_normal((2, k, k))
    S, Y = Ls @ Ls.T + 0.1 * np.eye(k), Ly @ Ly.T + 0.1 * np.eye(k)
    ls, Vs = np.linalg.eigh(S)
    sq = Vs @ np.diag(np.sqrt(ls)) @ Vs.T
    lm, Vm = np.linalg.eigh(sq @ Y @ sq)
    W = sq @ (Vm @ np.diag(lm ** -0.5) @ Vm.T) @ sq
    np.testing.assert_allclose(W @ Y @ W, S, atol=1e-9)  # the NT identity
    lw, Q = np.linalg.eigh(W)
    H = psd_nt_operator(_t(Q)[None], _t(lw)[None])[0].numpy()
    dY = rng.standard_normal((k, k))
    dY = dY + dY.T
    np.testing.assert_allclose(H @ svec(dY), svec(W @ dY @ W), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(H @ svec(Y), svec(S), rtol=1e-9, atol=1e-9)


def test_psd_limit_matches_projection_derivative():
    rng = np.random.default_rng(7)
    k = 3
    for _ in range(4):
        s, y = pair_psd(rng, k)
        H = psd_scaling(_t(s)[None], _t(y)[None], k)[0]
        _check_sym_psd(H)
        D = _projection_jacobian(s - y, {"s": [k]})
        D_h = H @ torch.linalg.inv(torch.eye(H.shape[0], dtype=DT) + H)
        np.testing.assert_allclose(D_h.numpy(), D, atol=2e-6)


# ------------------------------------------------------------------------------------ exp / power


def _fd_check_barrier(fun, s0, h=1e-6):
    f0, g0, H0 = fun(s0)
    for j in range(3):
        e = torch.zeros(3, dtype=DT)
        e[j] = h
        fp, gp, _ = fun(s0 + e)
        fm, gm, _ = fun(s0 - e)
        np.testing.assert_allclose(((fp - fm) / (2 * h)).numpy(), g0[..., j].numpy(),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(((gp - gm) / (2 * h)).numpy(), H0[..., j].numpy(),
                                   rtol=1e-5, atol=1e-5)
    # log-homogeneity of degree -3: f(ts) = f(s) - 3 log t, grad f(s) . s = -3
    assert torch.allclose((g0 * s0).sum(-1), torch.full_like(f0, -3.0), atol=1e-9)
    assert torch.allclose(fun(2.0 * s0)[0], f0 - 3 * np.log(2.0), atol=1e-9)


def test_closed_form_inverse_hessians():
    s = _t([[-1.0, 1.0, 1.0], [0.3, 0.8, 2.5], [-2.0, 0.5, 0.1]])
    eye = torch.eye(3, dtype=DT)
    assert torch.allclose(exp_hess_inv(s) @ exp_barrier(s)[2], eye, atol=1e-12)
    a = torch.tensor([0.3, 0.5, 0.8], dtype=DT)
    s = _t([[1.0, 1.0, 0.2], [2.0, 0.4, -0.5], [0.3, 1.5, 0.1]])
    assert torch.allclose(power_hess_inv(s, a) @ power_barrier(s, a)[2], eye, atol=1e-12)


def test_exp_barrier_derivatives():
    s0 = _t([[-1.0, 1.0, 1.0], [0.3, 0.8, 2.5], [-2.0, 0.5, 0.1]])
    assert exp_interior(s0).all()
    _fd_check_barrier(exp_barrier, s0)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_power_barrier_derivatives(alpha):
    s0 = _t([[1.0, 1.0, 0.2], [2.0, 0.4, -0.5], [0.3, 1.5, 0.1]])
    a = torch.full((3,), alpha, dtype=DT)
    assert power_interior(s0, a).all()
    _fd_check_barrier(lambda v: power_barrier(v, a), s0)


def test_cone_orientation_of_interior_tests():
    """SCS orientation: exp (x, y, z) with y exp(x/y) <= z; power x^a y^(1-a) >= |z|."""
    assert exp_interior(_t([[0.0, 1.0, 1.5]])).all()
    assert not exp_interior(_t([[1.5, 1.0, 1.0]])).any()  # x large: outside
    a = torch.tensor([0.5], dtype=DT)
    assert power_interior(_t([[1.0, 4.0, 1.9]]), a).all()  # sqrt(1*4) = 2 > 1.9
    assert not power_interior(_t([[1.0, 4.0, -2.1]]), a).any()


def test_exp_and_power_central_path():
    mu = 0.07
    s = _t([[-1.0, 1.0, 1.0], [0.3, 0.8, 2.5]])
    y = -mu * exp_barrier(s)[1]
    H = exp_scaling(s, y)
    _check_sym_psd(H)
    assert torch.allclose(_apply(H, y), s, rtol=1e-7, atol=1e-8)
    a = torch.tensor([0.3, 0.7], dtype=DT)
    s = _t([[1.0, 1.0, 0.2], [2.0, 0.4, -0.5]])
    y = -mu * power_barrier(s, a)[1]
    H = power_scaling(s, y, a)
    _check_sym_psd(H)
    assert torch.allclose(_apply(H, y), s, rtol=1e-7, atol=1e-8)


def test_exp_limit_matches_projection_derivative():
    rng = np.random.default_rng(11)
    for _ in range(6):
        s, y = pair_exp(rng)
        H = exp_scaling(_t(s)[None], _t(y)[None])[0]
        _check_sym_psd(H, tol=1e-8)
        # diffcp's exp projection is a Newton solve accurate to ~1e-9: a wide step
        D = _projection_jacobian(s - y, {"ep": 1}, h=1e-3)
        D_h = H @ torch.linalg.inv(torch.eye(3, dtype=DT) + H)
        np.testing.assert_allclose(D_h.numpy(), D, atol=5e-5)


def test_power_boundary_pair_and_outside_point():
    rng = np.random.default_rng(13)
    for a in (0.3, 0.6):
        for _ in range(4):
            s, y = pair_power(rng, a)
            at = torch.tensor([a], dtype=DT)
            H = power_scaling(_t(s)[None], _t(y)[None], at)[0]
            assert torch.isfinite(H).all()
            _check_sym_psd(H, tol=1e-8)
            # ds = -H dy keeps s on the boundary to first order: H maps the normal y to ~0
            assert torch.allclose(H @ _t(y), torch.zeros(3, dtype=DT), atol=1e-5)
    # a point a hair outside the cone still gives a finite PSD H
    s = _t([[1.0, 1.0, 1.0 + 1e-12]])
    y = _t([[0.5, 0.5, -1.0]])
    H = power_scaling(s, y, torch.tensor([0.5], dtype=DT))
    assert torch.isfinite(H).all()
    _check_sym_psd(H, tol=1e-8)


# ------------------------------------------------------------------------------------ composite


def test_composite_layout_and_equilibration():
    cones = ConeDims.from_any({"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "p": [0.4]})
    rng = np.random.default_rng(2)
    parts_s, parts_y = [np.zeros(1)], [rng.standard_normal(1)]
    parts_s.append(rng.uniform(0.1, 1, 2))
    parts_y.append(rng.uniform(0.1, 1, 2))
    for pair in (pair_soc(rng, 3, "boundary"), pair_psd(rng, 2), pair_exp(rng),
                 pair_power(rng, 0.4)):
        parts_s.append(pair[0])
        parts_y.append(pair[1])
    s, y = _t(np.concatenate(parts_s))[None], _t(np.concatenate(parts_y))[None]
    s, y = s.repeat(2, 1), y.repeat(2, 1)
    h_diag, h_blocks = cone_scaling(s, y, cones)
    assert h_diag.shape == (2, 3) and h_blocks.shape == (2, cones.n_block_entries)
    assert (h_diag[:, 0] == 0).all()
    blk = cones.blocks()
    soc_rows = slice(blk[0].start, blk[0].start + 3)
    np.testing.assert_allclose(h_blocks[0, :9].reshape(3, 3).numpy(),
                               soc_scaling(s[:1, soc_rows], y[:1, soc_rows])[0].numpy())
    m = cones.m
    # PSD next to exp/power cones is no solvable ConicStructure (POUNCE cannot mix them), but
    # the layout is the structure's: take its h_scatter for these cones directly.
    st = SimpleNamespace(cones=cones, m=m)
    st.h_scatter = ConicStructure.h_scatter.func(st)
    H = dense_h(h_diag, h_blocks, st.h_scatter, m)
    _check_sym_psd(H, tol=1e-8)
    Dm = dense_h(*equilibration(h_diag, h_blocks, cones), st.h_scatter, m)
    # D = (I + H)^(-1/2): D (I + H) D = I
    # (H holds ~1e10 next to O(1) entries at these limit pairs: ~1e-6 is float64's share)
    np.testing.assert_allclose((Dm @ (torch.eye(m, dtype=DT) + H) @ Dm)[0].numpy(),
                               np.eye(m), atol=1e-5)


def test_scaling_is_differentiable_twice():
    """The dense backward differentiates H again: gradcheck H(s, y) on interior points."""
    rng = np.random.default_rng(4)
    s = _soc_interior(rng, 2, 3).requires_grad_()
    y = _soc_interior(rng, 2, 3).requires_grad_()
    assert torch.autograd.gradcheck(soc_scaling, (s, y))
    se = _t([[-1.0, 1.0, 1.0]]).requires_grad_()
    ye = (-0.1 * exp_barrier(se.detach())[1] + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(exp_scaling, (se, ye))
    k = 2
    S = smat(np.array([1.0, 0.2, 0.7]), k)
    sp_ = _t(svec(S))[None].requires_grad_()
    yp = _t(svec(np.linalg.inv(S) * 0.1 + 0.01 * np.eye(k)))[None].requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: psd_scaling(a, b, k), (sp_, yp))


def test_snap_of_a_snapped_pair_is_the_pair(monkeypatch):
    """active_set.snap hands back a pair it returned (no second projection), and that pair
    is, to the projection's rounding, what projecting it again gives; so is H there
    (limit_scaling), which is computed once per pair. Zero, nonneg, SOC, PSD, exp and power
    rows."""
    import pounce_kkt.active_set as act

    cones = ConeDims.from_any({"z": 2, "l": 4, "q": [3, 4], "ep": 3, "p": [0.3, 0.7]})
    w = _t(np.random.default_rng(7).standard_normal((5, cones.m)) * 3.0)
    s, y = act.snap(w, torch.zeros_like(w), cones)
    hit_s, hit_y = act.snap(s, y, cones)
    assert torch.equal(hit_s, s) and torch.equal(hit_y, y) and hit_s is not s
    h_memo = act.limit_scaling(s, y, cones)
    assert act._SCALED.values(cones, act._SNAPPED.keys(s, y)) is not None
    h_held = act.limit_scaling(s, y, cones)  # the H held for these pairs: the same values
    assert all(torch.equal(a, b) for a, b in zip(h_memo, h_held, strict=True))
    for name in ("_SNAPPED", "_SCALED"):  # nothing remembered
        monkeypatch.setattr(act, name, act._RowMemo())
    again_s, again_y = act.snap(s, y, cones)
    scale = float(w.abs().max())
    torch.testing.assert_close(again_s, s, rtol=0, atol=1e-14 * scale)
    torch.testing.assert_close(again_y, y, rtol=0, atol=1e-14 * scale)
    for name in ("_SNAPPED", "_SCALED"):
        monkeypatch.setattr(act, name, act._RowMemo())
    h_fresh = act.limit_scaling(s, y, cones)
    for a, b in zip(h_memo, h_fresh, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
    # a batch too large for the memo to hold a few calls' rows is not remembered
    rows = int(act.MEMO_BATCH_FRACTION * act.MEMO_BYTES // (16 * cones.m)) + 1
    big = torch.zeros(rows, cones.m, dtype=torch.float64)
    assert act._RowMemo.keys(big[:-1], big[:-1]) is not None
    assert act._RowMemo.keys(big, big) is None
    # a pair snap did not return is projected (nonneg rows with s, y > 0 both)
    s2, y2 = s.clone(), y.clone()
    s2[:, 2:6], y2[:, 2:6] = 1.0, 1.0
    p, d = act.snap(s2, y2, cones)
    assert torch.equal(p[:, 2:6], torch.zeros_like(p[:, 2:6]))


def test_row_memo_budget_holds_across_cone_dims(monkeypatch):
    """The row memos hold at most MEMO_BYTES of keys and values together over every cone
    dims: a process that snaps many layer shapes holds no more than the budget, the newest
    rows stay and the oldest went; re-adding a held row does not count it twice."""
    import pounce_kkt.active_set as act

    monkeypatch.setattr(act, "MEMO_BYTES", 256 << 10)
    memo = act._RowMemo()
    rng = np.random.default_rng(3)
    shapes = [ConeDims.from_any({"l": k, "q": [3]}) for k in range(1, 41)]
    for cones in shapes:
        s = _t(rng.standard_normal((16, cones.m)))
        keys = act._RowMemo.keys(s, s)
        memo.add(cones, keys, np.ones((16, cones.m)))
        memo.add(cones, keys, np.ones((16, cones.m)))  # the same rows again
        held = sum(act._row_bytes(k, v) for (_, k), v in memo.rows.items())
        assert memo.bytes == held <= act.MEMO_BYTES
    assert memo.values(shapes[-1], keys) is not None  # the newest shape's rows stay
    first = act._RowMemo.keys(*(2 * [_t(np.zeros((1, shapes[0].m)))]))
    assert not memo.has(shapes[0], first)
    assert len({c for c, _ in memo.rows}) < len(shapes)  # the oldest shapes went


def test_exp_scaling_on_numpy_matches_torch():
    """exp_scaling on CPU float64 values without a graph runs on their NumPy views
    (pounce_kkt/cones/arrays.py); with a graph, in Torch ops. Both give the same H: on
    boundary pairs (where the push inside sets H, relative 1e-7) and on interior pairs
    (1e-12), at scales 1e-6 to 1e6."""
    from pounce_kkt.active_set import snap

    rng = np.random.default_rng(11)
    cones = ConeDims.from_any({"ep": 1})
    w = _t(rng.standard_normal((600, 3)) * 10.0 ** rng.uniform(-6, 6, (600, 1)))
    s, y = snap(w, torch.zeros_like(w), cones)
    for (si, yi), rtol in (((s, y), 1e-7), ((s + 1e-2 * s.abs() + 1e-3, y + 1e-2 * y.abs()),
                                            1e-12)):
        H_np = exp_scaling(si, yi)
        H_t = exp_scaling(si.clone().requires_grad_(True), yi).detach()
        scale = H_t.abs().amax((1, 2), keepdim=True)
        assert ((H_np - H_t).abs() <= rtol * scale).all()


def test_push_inside_takes_the_smallest_interior_rung():
    """barrier.push_inside against the ladder written out: s itself where s - PUSH_LADDER[0]
    scale e is interior, else the smallest rung whose push is interior (the largest where
    none is), on boundary, inside, outside and zero rows of the exp cone, Torch and NumPy."""
    from pounce_kkt.active_set import snap
    from pounce_kkt.cones.barrier import PUSH_LADDER, push_inside

    rng = np.random.default_rng(5)
    w = _t(rng.standard_normal((500, 3)) * 10.0 ** rng.uniform(-6, 6, (500, 1)))
    s, y = snap(w, torch.zeros_like(w), ConeDims.from_any({"ep": 1}))
    e = _t([-1.0, 1.0, 1.0])
    for si in (s, s + 1e-3 * s.abs(), s - 1e-3 * s.abs(), -s, torch.zeros_like(s)):
        scale = 1.0 + si.norm(dim=-1) + y.norm(dim=-1)
        expect = torch.full_like(scale, PUSH_LADDER[-1]) * scale
        for rung in reversed(PUSH_LADDER):
            expect = torch.where(exp_interior(si + (rung * scale)[:, None] * e), rung * scale,
                                 expect)
        expect = torch.where(exp_interior(si - (PUSH_LADDER[0] * scale)[:, None] * e), 0.0,
                             expect)
        got = push_inside(si, y, e, exp_interior)
        assert torch.equal(got, si + expect[:, None] * e)
        got_np = push_inside(si.numpy(), y.numpy(), e.numpy(), exp_interior)
        np.testing.assert_allclose(got_np, got.numpy(), rtol=1e-14, atol=0)
