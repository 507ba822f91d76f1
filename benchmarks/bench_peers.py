"""POUNCE's layers against the other differentiable convex-optimization layers, one process.

Times forward + backward (median wall time, float64, CPU) of the same problems through

  * ours: `CvxpyLayer(..., solver="pounce")` (`import pounce_cvxpy`), and, where the module
    exists, the qpth-compatible `pounce_cvxpy.qpth.QPFunction` (QP cases only; the row is
    skipped with a printed note when it does not import);
  * cvxpylayers' default back end (diffcp), as its users run it;
  * cvxpylayers' `solver="MOREAU"` on CPU tensors;
  * proxsuite's QPLayer (`proxsuite.torch.qplayer.QPFunction`), with torch's default dtype set
    to float64 around its calls (it builds its backward in the default dtype);
  * qpth's `QPFunction`;
  * qpax (implicit backend, tight: `QPAX_ARGS`), jit + vmap of value-and-grad; the first call
    (compilation) is excluded from the median and reported beside it.

and checks every row against a tight reference: cvxpy + Clarabel at 1e-11 on a few batch
items (`--check-items`). Each row reports

  * `x err`: max over the checked items of ||x - x_ref||_inf / (1 + ||x_ref||_inf);
  * `grad err`: max over `--directions` random directions d (supported on the checked items)
    of |g.d - fd| / max(|fd|, 1e-6), where g is the row's gradient of sum(w * x) (w fixed,
    random) and fd the Richardson-extrapolated central difference (steps h and 2h) of the
    same loss through the reference solve (h = 1e-5; 1e-3 for the n=500 QP and 3e-2 for the
    SOCP and exp-cone cases, where Clarabel's x is good to only ~1e-7 to 1e-8 even at
    1e-11; d has unit norm). The case header and the error table give the reference's own
    "fd noise" (the same extrapolation from 2h and 4h against it): a grad err below that
    says only "as good as the reference";
  * `status`: the solver's own status where the layer exposes it (MOREAU's
    `solver.info.status`, which cvxpylayers 1.2 never reads; proxsuite's
    `results.info.status`; qpax's `converged` from an untimed `qpax.solve_qp` of the same
    items; ours raises on failure; qpth and diffcp expose none),
    then "WRONG x" (x err > 1e-3), "grad off" (grad err > 0.1) or "error: ...".

Timing: each row's first call (build caches, thread pools, jit) is the checked one and is
not timed; then up to `--repeats` timed rounds run every row in turn (interleaved, so that a
shared machine's changing load falls on all rows alike); a row whose runs have taken
ROW_BUDGET_S (30 s) stops early. The printed `xN` is the number of timed runs in the median.
By default every timed round solves the checked values again, the regime in which a solver
that keeps its last answer per item (ours: engine "auto") answers from it; `--move REL` gives
every round new values (each entry times 1 + REL * N(0,1), the same for every row), e.g. 1e-3
for a training step on a full batch, 0.1 for a larger one; `--fresh` draws every round's items
anew from the case's own distribution (per-sample data, e.g. OptNet's q from each input: no
previous answer is near, the cold regime).

A fast wrong answer is not a win: rows whose status is not "ok" are printed with their time
but never ranked (their ratio is shown in brackets). Traps this catches on cvxpylayers 1.2 +
cvxpy 1.9 + moreau 0.4: the MOREAU interface drops cvxpy's "direct cones" (`data["dir_cones"]`
of `get_problem_data("MOREAU")`): `cp.norm(x, 2) <= 1` (socp: DualInfeasible, x returned
anyway), `x >= 0` on a variable (nnls: "Solved", unconstrained x) and a `PSD=True` variable
(psd: "Solved", wrong x); `cp.SOC(1, x)` is kept, so the SOCP case also runs MOREAU on the
`cp.SOC` form. And it never reads MOREAU's status (max_iter=200 is hit on the dense n=m=500
QP and a wrong x is returned without a word).

Cases (`--only KEY[,KEY]`; `--skip-large` drops qp500):
  qp64    B=64 QPs n=m=50, parameters q, G, h (Q fixed)
  qp1     B=1 QP n=m=50
  qp512   B=512 QPs n=m=50
  qp1024  B=1024 QPs n=m=10
  qp500   one QP n=m=500
  nnls    qpax's example: B=256 NNLS problems, 5 variables, 10 rows (parameters F, g)
  socp    B=64 SOCPs n=20: min ||A x - b|| + c'x s.t. ||x|| <= 1
  logreg  B=64 l2-regularised logistic regressions (20 samples, 5 features; parameter X)
  softmax B=64 entropy-regularised simplex problems n=20 (softmax; parameter c)
  psd     B=64 projections of a symmetric 6x6 matrix onto the PSD cone

Output: the per-case rows, the ratio table (peer time / our `CvxpyLayer` time: above 1 the
peer is slower than us; for the OptNet-style peers also against our qpth-compatible
`QPFunction` when it exists), two floors beside our time (`flop_floors`): "IPM floor", 10
KKT factorizations per item: for the QP cases the condensed one our IPM does (the n x n
Schur complement S = H + B'WB of the x block and its Cholesky, torch bmm + cholesky on one
thread, batched), for the others the LDL' of the dense (n+m)-square KKT matrix (n, m of the
canonical cone program) at the time LAPACK's sytrf takes at that size on this machine
(measured after the case, batched, one thread: small sizes run far below peak GFlop/s); and
"active-set floor", one such LDL' per item (an active-set method started at the final working
set); "ours / IPM floor" says how far above the first we are. The JSON also holds the older
estimate at the peak rate (dsytrf on a 500x500 matrix, best of a measurement at start and
one after each case). Then the load average (`os.getloadavg()`) at start and end,
benchmarks/out/bench_peers.png and .json. `--torch-threads N` sets torch's threads first;
`--ours-alt-args JSON` adds a second `CvxpyLayer` row of ours with other solver_args, timed
interleaved with the first (an A/B in one process); `--ours-alt-env VAR=VALUE[,...]` runs
that row with environment switches set around each call (e.g.
`POUNCE_LAYERS_KKT_BACKEND=dense`: the full dense KKT factor instead of the condensed one).

Set-up (the peers are NOT project dependencies; they live in the `bench` extra):

    pip install -e ".[cvxpy,bench]"       # moreau, proxsuite, qpax, jax, jaxlib, matplotlib
    pip install --no-deps qpth            # qpth 0.0.18 pins numpy<2 (pip would pull numpy 1.26
                                          # and cvxpy 1.7); it needs only torch and numpy

Check first with `pip install --dry-run` that nothing replaces torch, numpy, scipy or cvxpy.
To keep a shared development venv untouched, a separate venv that sees it works too:

    python3 -m venv /path/benchvenv
    printf '%s\\n' "$PWD/.venv/lib/python3.11/site-packages" "$PWD" \\
        > /path/benchvenv/lib/python3.11/site-packages/main_venv.pth
    /path/benchvenv/bin/pip install moreau proxsuite qpax jax && \\
        /path/benchvenv/bin/pip install --no-deps qpth
    /path/benchvenv/bin/python benchmarks/bench_peers.py [--repeats 5] [--only qp64]
        [--skip-large] [--peers ours,diffcp,moreau,proxsuite,qpth,qpax]
        [--ours-args '{"tol": 1e-10}'] [--profile] [--out-name STEM]

A peer that does not import is skipped with a note. The timings are wall-clock medians on
whatever else the machine runs: read the ratios together with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"
REF_TOL = 1e-11
CLARABEL_REF = {
    "tol_gap_abs": REF_TOL,
    "tol_gap_rel": REF_TOL,
    "tol_feas": REF_TOL,
    "tol_ktratio": 1e-9,
    "max_iter": 400,
}
QPAX_ARGS = {"backend": "i", "solver_tol": 1e-8, "target_kappa": 1e-7}
X_ERR_WRONG = 1e-3
GRAD_ERR_OFF = 1e-1
ROW_BUDGET_S = 30.0  # fewer repeats when one run is slow
IPM_ITERS = 10
PEERS = ("ours", "ours_alt", "ours_qpfn", "diffcp", "moreau", "moreau_soc", "proxsuite", "qpth",
         "qpax")
PEER_LABEL = {
    "ours": "pounce CvxpyLayer",
    "ours_alt": "pounce CvxpyLayer, alt args",
    "ours_qpfn": "pounce QPFunction",
    "diffcp": "cvxpylayers diffcp",
    "moreau": "cvxpylayers MOREAU",
    "moreau_soc": "MOREAU, cp.SOC form",
    "proxsuite": "proxsuite QPLayer",
    "qpth": "qpth QPFunction",
    "qpax": "qpax (jit+vmap)",
}
OPTNET_PEERS = ("proxsuite", "qpth", "qpax")


@dataclass
class Settings:
    """Command-line switches that reach the runners: our layer's solver_args, profiling."""

    ours_args: dict = field(default_factory=dict)
    alt_args: dict | None = None
    alt_env: dict[str, str] = field(default_factory=dict)
    profile: bool = False
    move: float = 0.0
    fresh: bool = False


SETTINGS = Settings()


# --------------------------------------------------------------------------- cases


Built = tuple[cp.Problem, list[cp.Parameter], cp.Variable]
QpMap = Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]]


@dataclass
class Case:
    """One benchmark problem family: a single-item cvxpy problem and batched values.

    `values[j]` has shape (B, *parameters[j].shape). `qp_torch` maps the batched torch
    parameters to OptNet's (Q, p, G, h) with G x <= h, differentiably; `qp_jax` does the
    same per item in jax (for qpax). Both are None for non-QP cases. `moreau_soc` builds the
    same problem with every second-order cone written as `cp.SOC`.
    """

    key: str
    label: str
    build: Callable[[], Built]
    values: list[np.ndarray]
    qp_torch: QpMap | None = None
    qp_jax: Callable | None = None
    moreau_soc: Callable[[], Built] | None = None
    large: bool = False
    fd_eps: float = 1e-5
    round_values: list[np.ndarray] | None = None  # this timed round's values (--move, --fresh)
    draw: Callable[[np.random.Generator], list[np.ndarray]] | None = None  # new data (--fresh)

    def current(self) -> list[np.ndarray]:
        """The values a run solves: `values`, or the timed round's moved copy."""
        return self.values if self.round_values is None else self.round_values

    @property
    def batch(self) -> int:
        return self.values[0].shape[0]


def _qp_Q(n: int) -> np.ndarray:
    M = np.random.default_rng(0).standard_normal((n, n))
    return M @ M.T / n + np.eye(n)


def qp_case(key: str, label: str, n: int, m: int, batch: int, large: bool = False,
            fd_eps: float = 1e-5) -> Case:
    """min 1/2 x'Qx + q'x s.t. G x <= h; Q fixed positive definite; q, G, h per item."""
    Q = _qp_Q(n)

    def build() -> Built:
        x = cp.Variable(n)
        q, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
        prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [G @ x <= h])
        return prob, [q, G, h], x

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        G = r.standard_normal((batch, m, n))
        x0 = r.standard_normal((batch, n))
        h = np.einsum("bij,bj->bi", G, x0) + r.random((batch, m))  # x0 strictly feasible
        q = r.standard_normal((batch, n))
        return [q, G, h]

    Qt = torch.tensor(Q)

    def qp_torch(ps: list[torch.Tensor]):
        return Qt, ps[0], ps[1], ps[2]

    def qp_jax(q, G, h):
        import jax.numpy as jnp

        return jnp.asarray(Q), q, G, h

    return Case(key, label, build, draw(np.random.default_rng(1)), qp_torch, qp_jax,
                large=large, fd_eps=fd_eps, draw=draw)


def nnls_case(batch: int = 256, n: int = 5, m: int = 10) -> Case:
    """qpax's example: min 1/2 ||F x - g||^2 s.t. x >= 0, F (10 x 5) and g per item."""

    def build() -> Built:
        x = cp.Variable(n)
        F, g = cp.Parameter((m, n)), cp.Parameter(m)
        prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(F @ x - g)), [x >= 0])
        return prob, [F, g], x

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        return [r.standard_normal((batch, m, n)), r.standard_normal((batch, m))]

    G_t = -torch.eye(n, dtype=torch.float64)
    h_t = torch.zeros(n, dtype=torch.float64)

    def qp_torch(ps: list[torch.Tensor]):
        F, g = ps
        return F.transpose(1, 2) @ F, -(F.transpose(1, 2) @ g.unsqueeze(-1)).squeeze(-1), G_t, h_t

    def qp_jax(F, g):
        import jax.numpy as jnp

        return F.T @ F, -F.T @ g, -jnp.eye(n), jnp.zeros(n)

    return Case("nnls", "B=256 NNLS 5 var, 10 rows", build, draw(np.random.default_rng(4)),
                qp_torch, qp_jax, draw=draw)


def socp_case(batch: int = 64, n: int = 20, m: int = 20) -> Case:
    """min ||A x - b||_2 + c'x s.t. ||x||_2 <= 1, with A, b, c per item."""

    def build_with(soc_form: bool) -> Callable[[], Built]:
        def build() -> Built:
            x = cp.Variable(n)
            A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
            if soc_form:
                t = cp.Variable()
                cons = [cp.SOC(t, A @ x - b), cp.SOC(cp.Constant(1.0), x)]
                prob = cp.Problem(cp.Minimize(t + c @ x), cons)
            else:
                prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + c @ x),
                                  [cp.norm(x, 2) <= 1])
            return prob, [A, b, c], x

        return build

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        return [r.standard_normal((batch, m, n)), r.standard_normal((batch, m)),
                r.standard_normal((batch, n))]

    return Case("socp", "B=64 SOCPs n=20", build_with(False), draw(np.random.default_rng(2)),
                moreau_soc=build_with(True), fd_eps=3e-2, draw=draw)


def logreg_case(batch: int = 64, samples: int = 20, features: int = 5) -> Case:
    """l2-regularised logistic regression: min mean(logistic(-y * X w)) + 0.1 ||w||^2."""
    r = np.random.default_rng(5)
    y = np.sign(r.standard_normal(samples))

    def build() -> Built:
        w = cp.Variable(features)
        X = cp.Parameter((samples, features))
        loss = cp.sum(cp.logistic(-cp.multiply(y, X @ w))) / samples
        prob = cp.Problem(cp.Minimize(loss + 0.1 * cp.sum_squares(w)))
        return prob, [X], w

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        return [r.standard_normal((batch, samples, features))]

    return Case("logreg", "B=64 logistic regressions (exp)", build, draw(r), fd_eps=3e-2,
                draw=draw)


def softmax_case(batch: int = 64, n: int = 20) -> Case:
    """min c'x - sum(entr(x)) s.t. sum(x) = 1: the solution is softmax(-c)."""

    def build() -> Built:
        x = cp.Variable(n)
        c = cp.Parameter(n)
        prob = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1])
        return prob, [c], x

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        return [r.standard_normal((batch, n))]

    return Case("softmax", "B=64 softmax/entropy n=20 (exp)", build,
                draw(np.random.default_rng(3)), fd_eps=3e-2, draw=draw)


def psd_case(batch: int = 64, k: int = 6) -> Case:
    """min ||X - A||_F^2 s.t. X PSD: projection of a symmetric A onto the PSD cone."""

    def build() -> Built:
        X = cp.Variable((k, k), PSD=True)
        A = cp.Parameter((k, k))
        prob = cp.Problem(cp.Minimize(cp.sum_squares(X - A)))
        return prob, [A], X

    def draw(r: np.random.Generator) -> list[np.ndarray]:
        R = r.standard_normal((batch, k, k))
        return [(R + R.transpose(0, 2, 1)) / 2]

    return Case("psd", "B=64 PSD projections 6x6", build, draw(np.random.default_rng(6)),
                draw=draw)


def all_cases(skip_large: bool) -> list[Case]:
    """The benchmark's cases, in print order."""
    cases = [
        qp_case("qp64", "B=64 QPs n=m=50", 50, 50, 64),
        qp_case("qp1", "B=1 QP n=m=50", 50, 50, 1),
        qp_case("qp512", "B=512 QPs n=m=50", 50, 50, 512),
        qp_case("qp1024", "B=1024 QPs n=m=10", 10, 10, 1024),
        qp_case("qp500", "one QP n=m=500", 500, 500, 1, large=True, fd_eps=1e-3),
        nnls_case(),
        socp_case(),
        logreg_case(),
        softmax_case(),
        psd_case(),
    ]
    return [c for c in cases if not (skip_large and c.large)]


# --------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """Tight Clarabel solutions and central-difference directional derivatives."""

    items: np.ndarray
    weights: np.ndarray  # (B, size of x)
    x_ref: np.ndarray  # (len(items), size of x)
    directions: list[list[np.ndarray]]  # per direction, per parameter: (len(items), *shape)
    fd: np.ndarray  # per direction
    fd_noise: float  # max over directions of |R(h, 2h) - R(2h, 4h)| / max(|fd|, 1e-6)
    statuses: list[str]
    dims: tuple[int, int]  # canonical (n, m) of one item
    seconds: float


def _ref_solve(prob: cp.Problem, params: list[cp.Parameter], var: cp.Variable,
               vals: list[np.ndarray], statuses: list[str]) -> np.ndarray:
    for p, v in zip(params, vals, strict=True):
        p.value = v
    prob.solve(solver=cp.CLARABEL, **CLARABEL_REF)
    statuses.append(prob.status)
    if var.value is None:
        raise RuntimeError(f"reference solve failed: {prob.status}")
    return np.asarray(var.value, dtype=np.float64).ravel()


def reference(case: Case, n_items: int, n_dirs: int) -> Reference:
    """Solve `n_items` items tightly and central-difference sum(w * x) along random directions."""
    t0 = time.perf_counter()
    r = np.random.default_rng(7)
    prob, params, var = case.build()
    data = prob.get_problem_data(cp.CLARABEL)[0]
    dims = (data["A"].shape[1], data["A"].shape[0])
    B = case.batch
    items = np.sort(r.choice(B, size=min(B, n_items), replace=False))
    weights = r.standard_normal((B, int(np.prod(var.shape)) if var.shape else 1))
    statuses: list[str] = []
    x_ref = np.stack([_ref_solve(prob, params, var, [v[i] for v in case.values], statuses)
                      for i in items])
    directions, fd, noise = [], [], []
    eps = case.fd_eps
    for _ in range(n_dirs):
        d = [r.standard_normal((len(items), *v.shape[1:])) for v in case.values]
        scale = np.sqrt(sum(float((di * di).sum()) for di in d))
        d = [di / scale for di in d]
        totals = []
        for h in (eps, 2 * eps, 4 * eps):
            total = 0.0
            for k, i in enumerate(items):
                item = [v[i] for v in case.values]
                step = [h * di[k] for di in d]
                plus = _ref_solve(prob, params, var,
                                  [v + s for v, s in zip(item, step, strict=True)], statuses)
                minus = _ref_solve(prob, params, var,
                                   [v - s for v, s in zip(item, step, strict=True)], statuses)
                total += float(weights[i] @ (plus - minus)) / (2 * h)
            totals.append(total)
        directions.append(d)
        # Richardson: (4 D(h) - D(2h)) / 3 cancels the h^2 term; the same from (2h, 4h)
        # estimates what is left (the reference's accuracy / h and the h^4 term)
        r1 = (4 * totals[0] - totals[1]) / 3
        r2 = (4 * totals[1] - totals[2]) / 3
        fd.append(r1)
        noise.append(abs(r1 - r2) / max(abs(r1), 1e-6))
    return Reference(items, weights, x_ref, directions, np.array(fd), float(max(noise)),
                     statuses, dims, time.perf_counter() - t0)


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One implementation on one case."""

    case: str
    peer: str
    seconds: float | None = None
    repeats: int = 0
    x_err: float | None = None
    grad_err: float | None = None
    status: str = "ok"
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ranked(self) -> bool:
        return self.seconds is not None and self.status == "ok"


@dataclass
class Outcome:
    """What a runner hands back from one (untimed) call: x, the gradients and a status."""

    x: np.ndarray  # (B, size of x)
    grads: list[np.ndarray]  # per parameter, batched like case.values
    status: str = "ok"


Runner = Callable[[], Outcome]


def _torch_params(case: Case) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=torch.float64) for v in case.current()]


def _loss_weights(ref: Reference) -> torch.Tensor:
    return torch.tensor(ref.weights, dtype=torch.float64)


def _grads(ps: list[torch.Tensor]) -> list[np.ndarray]:
    return [p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(p.shape)
            for p in ps]


def _cvxpylayer_runner(build: Callable[[], Built], case: Case, ref: Reference,
                       solver: str | None, status_fn: Callable | None = None,
                       solver_args: dict | None = None) -> Runner:
    from cvxpylayers.torch import CvxpyLayer

    prob, params, var = build()
    layer = CvxpyLayer(prob, params, [var], solver=solver)
    w = _loss_weights(ref)
    kwargs = {"solver_args": dict(solver_args)} if solver_args else {}

    def run() -> Outcome:
        ps = [p.requires_grad_(True) for p in _torch_params(case)]
        (x,) = layer(*ps, **kwargs)
        x = x.reshape(case.batch, -1)
        (x * w).sum().backward()
        status = status_fn(layer) if status_fn else "ok"
        return Outcome(x.detach().numpy(), _grads(ps), status)

    return run


def _moreau_status(layer) -> str:
    solver = layer.ctx.solver_ctx.get_torch_solver("cpu")
    st = solver.info.status
    st = st if isinstance(st, list) else [st]
    bad = [str(s) for s in st if str(s) != "Solved"]
    if not bad:
        return "ok"
    kinds = sorted(set(bad))
    return f"MOREAU {'/'.join(kinds)} on {len(bad)}/{len(st)}"


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _optnet_runner(case: Case, ref: Reference, peer: str) -> Runner:
    assert case.qp_torch is not None
    w = _loss_weights(ref)
    empty = torch.empty(0, dtype=torch.float64)

    if peer == "proxsuite":
        from proxsuite.torch.qplayer import QPFunction as ProxQP

        layer = ProxQP()  # its defaults: eps=1e-9, maxIter=1000

        def solve(Q, p, G, h):
            return ProxQP_call(layer, Q, p, G, torch.full_like(h, -1e20), h)

    elif peer == "qpth":
        from qpth.qp import QPFunction as QpthQP

        layer = QpthQP(verbose=-1)

        def solve(Q, p, G, h):
            return layer(Q, p, G, h, empty, empty)

    elif peer == "ours_qpfn":
        from pounce_cvxpy.qpth import QPFunction as OursQP

        layer = OursQP()

        def solve(Q, p, G, h):
            return layer(Q, p, G, h, empty, empty)

    else:
        raise ValueError(peer)

    def run() -> Outcome:
        ctx = _default_dtype(torch.float64) if peer == "proxsuite" else contextlib.nullcontext()
        with ctx:
            ps = [p.requires_grad_(True) for p in _torch_params(case)]
            Q, p, G, h = case.qp_torch(ps)
            x = solve(Q, p, G, h)
            status = _prox_status(x) if peer == "proxsuite" else "ok"
            x = x.reshape(case.batch, -1)
            (x * w).sum().backward()
        return Outcome(x.detach().numpy(), _grads(ps), status)

    return run


def ProxQP_call(layer, Q, p, G, lower, upper) -> torch.Tensor:  # noqa: N802
    """proxsuite's QPFunction(Q, p, A, b, G, l, u) with no equality rows; returns x."""
    empty = torch.empty(0, dtype=torch.float64)
    x, _, _ = layer(Q, p, empty, empty, G, lower, upper)
    return x


def _prox_status(x: torch.Tensor) -> str:
    qps = x.grad_fn.vector_of_qps
    st = [str(qps.get(i).results.info.status).split(".")[-1] for i in range(qps.size())]
    bad = [s for s in st if s != "PROXQP_SOLVED"]
    return "ok" if not bad else f"proxsuite {'/'.join(sorted(set(bad)))} on {len(bad)}/{len(st)}"


def _qpax_runner(case: Case, ref: Reference, row: Row) -> Runner:
    import jax
    import jax.numpy as jnp
    import qpax

    assert case.qp_jax is not None
    qp_jax = case.qp_jax
    w = jnp.asarray(ref.weights)
    args = [jnp.asarray(v) for v in case.values]

    def one(*ps):
        Q, q, G, h = qp_jax(*ps)
        n = q.shape[0]
        return qpax.solve_qp_primal(Q, q, jnp.zeros((0, n)), jnp.zeros(0), G, h, **QPAX_ARGS)

    def loss(*ps):
        x = jax.vmap(one)(*ps)
        return jnp.sum(x.reshape(x.shape[0], -1) * w), x

    f = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args))), has_aux=True))
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    row.extra["compile_s"] = time.perf_counter() - t
    row.note = f"compile {row.extra['compile_s']:.1f} s excluded"

    # qpax's status (solve_qp_primal returns x alone): the same forward through solve_qp,
    # untimed, for its `converged` flags
    fwd = {k: v for k, v in QPAX_ARGS.items() if k != "target_kappa"}

    def one_status(*ps):
        Q, q, G, h = qp_jax(*ps)
        n = q.shape[0]
        return qpax.solve_qp(Q, q, jnp.zeros((0, n)), jnp.zeros(0), G, h, **fwd)[4]

    converged = np.asarray(jax.jit(jax.vmap(one_status))(*args))
    bad = int((converged == 0).sum())
    status = "ok" if not bad else f"qpax not converged on {bad}/{converged.size}"

    def run() -> Outcome:
        (_, x), g = f(*[jnp.asarray(v) for v in case.current()])
        jax.block_until_ready(g)
        return Outcome(np.asarray(x).reshape(case.batch, -1), [np.asarray(gi) for gi in g],
                       status)

    return run


def _check(out: Outcome, ref: Reference, row: Row) -> None:
    x = out.x[ref.items]
    x_err = np.abs(x - ref.x_ref).max(axis=1) / (1 + np.abs(ref.x_ref).max(axis=1))
    row.x_err = float(x_err.max())
    errs = []
    for d, fd in zip(ref.directions, ref.fd, strict=True):
        gd = sum(float((g[ref.items] * di).sum()) for g, di in zip(out.grads, d, strict=True))
        errs.append(abs(gd - fd) / max(abs(fd), 1e-6))
    row.grad_err = float(max(errs))
    flags = [] if out.status == "ok" else [out.status]
    if not np.isfinite(out.x).all():
        flags.append("non-finite x")
    if row.x_err > X_ERR_WRONG:
        flags.append("WRONG x")
    if not np.isfinite(row.grad_err) or row.grad_err > GRAD_ERR_OFF:
        flags.append("grad off")
    row.status = "ok" if not flags else "; ".join(flags)


def run_case(case: Case, peers: list[str], repeats: int, n_items: int,
             n_dirs: int) -> tuple[Reference, list[Row]]:
    """Reference, then every peer that applies to this case, timed and checked."""
    ref = reference(case, n_items if not case.large else 1, n_dirs if not case.large else 2)
    bad_ref = [s for s in ref.statuses if s != cp.OPTIMAL]
    print(f"\n== {case.key}: {case.label} (B={case.batch}; canonical n={ref.dims[0]}, "
          f"m={ref.dims[1]}; reference: {len(ref.statuses)} Clarabel solves in "
          f"{ref.seconds:.1f} s" + (f", {len(bad_ref)} not 'optimal': {set(bad_ref)}"
                                    if bad_ref else "")
          + f"; fd step {case.fd_eps:g}, fd noise {ref.fd_noise:.0e})", flush=True)
    rows: list[Row] = []
    runners: list[tuple[Row, Runner]] = []
    for peer in peers:  # build, warm up (the checked call) and check each row
        if peer in OPTNET_PEERS + ("ours_qpfn",) and case.qp_torch is None:
            continue
        if peer == "moreau_soc" and case.moreau_soc is None:
            continue
        row = Row(case.key, peer)
        try:
            run = _runner(case, ref, row)
            t = time.perf_counter()
            out = run()
            row.extra["first_s"] = time.perf_counter() - t
            _check(out, ref, row)
            runners.append((row, run))
        except ImportError as err:
            print(f"  note: {PEER_LABEL[peer]} skipped ({err})")
            continue
        except Exception as err:  # noqa: BLE001  (a peer's failure is a result)
            row.status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
            if os.environ.get("BENCH_PEERS_TRACEBACK"):
                traceback.print_exc()
        rows.append(row)
    # timed rounds, interleaved so that the load of a shared machine falls on every row alike;
    # a row stops after `repeats` runs or once its runs have taken ROW_BUDGET_S
    times: dict[str, list[float]] = {row.peer: [] for row, _ in runners}
    rng = np.random.default_rng(1)
    for _ in range(repeats):
        if SETTINGS.fresh and case.draw is not None:  # new data, the same for every row
            case.round_values = case.draw(rng)
        elif SETTINGS.move > 0:  # every row solves the same moved values this round
            case.round_values = [v * (1.0 + SETTINGS.move * rng.standard_normal(v.shape))
                                 for v in case.values]
        for row, run in runners:
            spent = times[row.peer]
            if spent and sum(spent) + row.extra["first_s"] > ROW_BUDGET_S:
                continue
            try:
                t = time.perf_counter()
                run()
                spent.append(time.perf_counter() - t)
            except Exception as err:  # noqa: BLE001
                row.status = f"error (timed run): {type(err).__name__}: {err}"[:100]
    case.round_values = None
    ours = None
    for row in rows:
        if times.get(row.peer):
            row.seconds = statistics.median(times[row.peer])
            row.repeats = len(times[row.peer])
        if row.peer == "ours":
            ours = row
        _print_row(row, ours)
    if SETTINGS.profile:
        for row, run in runners:
            if row.peer in ("ours", "ours_alt", "ours_qpfn"):
                _profile(run, f"{case.key}, {PEER_LABEL[row.peer]}")
    return ref, rows


def _profile(run: Runner, label: str, top: int = 20) -> None:
    """cProfile of one more run: the top entries by own time and by cumulative time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
        lines = buf.getvalue().splitlines()
        start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
        print(f"  --- profile of one run of {label}, by {key} ---")
        print("\n".join("  " + ln for ln in lines[start:start + top + 1]))


def _runner(case: Case, ref: Reference, row: Row) -> Runner:
    """The fwd+bwd callable of `row.peer` on `case` (ImportError when the peer is absent)."""
    peer = row.peer
    if peer == "ours":
        import pounce_cvxpy  # noqa: F401  (registers "pounce")

        return _cvxpylayer_runner(case.build, case, ref, "pounce",
                                  solver_args=SETTINGS.ours_args)
    if peer == "ours_alt":
        if SETTINGS.alt_args is None:
            raise ImportError("no --ours-alt-args given")
        import pounce_cvxpy  # noqa: F401

        return _with_env(_cvxpylayer_runner(case.build, case, ref, "pounce",
                                            solver_args=SETTINGS.alt_args), SETTINGS.alt_env)
    if peer == "diffcp":
        return _cvxpylayer_runner(case.build, case, ref, None)
    if peer == "moreau":
        return _cvxpylayer_runner(case.build, case, ref, "MOREAU", _moreau_status)
    if peer == "moreau_soc":
        assert case.moreau_soc is not None
        return _cvxpylayer_runner(case.moreau_soc, case, ref, "MOREAU", _moreau_status)
    if peer == "qpax":
        return _qpax_runner(case, ref, row)
    return _optnet_runner(case, ref, peer)


def _with_env(run: Runner, env: dict[str, str]) -> Runner:
    """`run` with the variables `env` set in os.environ around each call (restored after):
    the backend switches pounce_kkt reads per call, e.g. POUNCE_LAYERS_KKT_BACKEND."""
    if not env:
        return run

    def wrapped() -> Outcome:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return run()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return wrapped


def _fmt_ratio(v: float) -> str:
    return f"{v:.2f}" if v >= 0.095 else f"{v:.2g}"


def _fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f}"


def _print_row(row: Row, ours: Row | None) -> None:
    ratio = ""
    if ours is not None and ours.seconds and row.seconds and row.peer != "ours":
        ratio = f"{_fmt_ratio(row.seconds / ours.seconds)}x"
        if not row.ranked:
            ratio = f"[{ratio.strip()}]"
    xe = "-" if row.x_err is None else f"{row.x_err:.1e}"
    ge = "-" if row.grad_err is None else f"{row.grad_err:.1e}"
    print(f"  {PEER_LABEL[row.peer]:22s} {_fmt_ms(row.seconds):>10s} ms  x{row.repeats:<2d} "
          f"x err {xe:>8s}  grad err {ge:>8s}  {ratio:>9s}  {row.status}"
          + (f"  ({row.note})" if row.note else ""), flush=True)


# --------------------------------------------------------------------------- floor, tables


def dense_throughput() -> float:
    """Flop/s of LAPACK's dsytrf (LDL', Bunch-Kaufman) on a 500x500 symmetric matrix."""
    from scipy.linalg import lapack

    n = 500
    M = np.random.default_rng(8).standard_normal((n, n))
    S = np.asfortranarray(M + M.T)
    lapack.dsytrf(S.copy(order="F"), lower=1)
    times = []
    for _ in range(9):
        A = S.copy(order="F")
        t = time.perf_counter()
        lapack.dsytrf(A, lower=1, overwrite_a=1)
        times.append(time.perf_counter() - t)
    return (n**3 / 3) / min(times)  # the best run: a floor should be optimistic


def factor_seconds(k: int, rounds: int = 5) -> float:
    """Best per-matrix seconds of LAPACK's LDL' (sytrf, through torch.linalg.ldl_factor_ex on
    one thread) on a batch of k x k symmetric indefinite matrices: the dense throughput at
    that size, call and memory overheads included."""
    from pounce_kkt.torch_threads import serial_torch

    batch = max(1, min(512, 4_000_000 // (k * k)))
    g = torch.Generator().manual_seed(9)
    M = torch.randn(batch, k, k, generator=g, dtype=torch.float64)
    S = M + M.transpose(1, 2)
    best = float("inf")
    with serial_torch():
        torch.linalg.ldl_factor_ex(S)
        for _ in range(rounds):
            t = time.perf_counter()
            torch.linalg.ldl_factor_ex(S)
            best = min(best, (time.perf_counter() - t) / batch)
    return best


def condensed_factor_seconds(n: int, m: int, rounds: int = 5) -> float:
    """Best per-matrix seconds of the condensed KKT factorization of a QP IPM (the x block's
    Schur complement S = H + B' diag(w) B, B m x n, then Cholesky of S; torch on one thread,
    batched): what rust/core/src/condensed_backend.rs does per IPM iteration."""
    from pounce_kkt.torch_threads import serial_torch

    batch = max(1, min(512, 4_000_000 // max(1, n * (n + m))))
    g = torch.Generator().manual_seed(9)
    R = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    H = R @ R.transpose(1, 2) / n + torch.eye(n, dtype=torch.float64)
    B = torch.randn(batch, m, n, generator=g, dtype=torch.float64)
    w = torch.rand(batch, m, 1, generator=g, dtype=torch.float64) + 0.5

    def once() -> None:
        torch.linalg.cholesky_ex(torch.baddbmm(H, B.transpose(1, 2), B * w))

    best = float("inf")
    with serial_torch():
        once()
        for _ in range(rounds):
            t = time.perf_counter()
            once()
            best = min(best, (time.perf_counter() - t) / batch)
    return best


def flop_floors(batch: int, dims: tuple[int, int], per_factor: float, rate: float,
                per_condensed: float | None = None) -> dict[str, float]:
    """Seconds per case: "ipm" = IPM_ITERS KKT factorizations per item: the condensed one
    (`per_condensed`, QP cases: S = H + B'WB and its Cholesky, the IPM's KKT since
    condensed_backend.rs) when given, else the LDL' of the (n+m) KKT matrix at the measured
    per-size time `per_factor`; "active_set" = one such LDL' per item (an active-set method
    started at the final working set); "peak" = IPM_ITERS (n+m)^3/3 flop per item at the
    n=500 rate `rate`."""
    k = dims[0] + dims[1]
    ipm = per_factor if per_condensed is None else per_condensed
    return {"ipm": batch * IPM_ITERS * ipm, "active_set": batch * per_factor,
            "peak": batch * IPM_ITERS * (k**3 / 3) / rate}


def ratio_table(cases: list[Case], rows: list[Row], floors: dict[str, dict[str, float]],
                base_peer: str, columns: list[str]) -> str:
    """Markdown: per case, base_peer's time, the floors (flop_floors) and each peer's time /
    base_peer's time; unranked rows bracketed."""
    by = {(r.case, r.peer): r for r in rows}
    head = ["case", f"{PEER_LABEL[base_peer]} (ms)", "IPM floor (ms)", "active-set floor (ms)",
            "ours / IPM floor"] + [PEER_LABEL[c] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        base = by.get((case.key, base_peer))
        if base is None:
            continue
        fl = floors[case.key]
        cells = [case.label, _fmt_ms(base.seconds) + ("" if base.ranked else f" ({base.status})"),
                 f"{fl['ipm'] * 1e3:.2g}", f"{fl['active_set'] * 1e3:.2g}",
                 f"{base.seconds / fl['ipm']:.1f}" if base.seconds else "-"]
        for c in columns:
            r = by.get((case.key, c))
            if r is None:
                cells.append("n/a")
            elif r.seconds is None:
                cells.append(r.status.split(":")[0])
            elif not base.seconds:
                cells.append("-")
            else:
                v = _fmt_ratio(r.seconds / base.seconds)
                cells.append(v if r.ranked else f"[{v}] {r.status}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def error_table(cases: list[Case], rows: list[Row], noise: dict[str, float]) -> str:
    """Markdown: per case and peer, `x err / grad err`; the reference's fd noise first."""
    peers = [p for p in PEERS if any(r.peer == p for r in rows)]
    by = {(r.case, r.peer): r for r in rows}
    lines = ["| case | fd noise | " + " | ".join(PEER_LABEL[p] for p in peers) + " |",
             "|---|---|" + "---|" * len(peers)]
    for case in cases:
        if case.key not in noise:
            continue
        cells = [case.label, f"{noise[case.key]:.0e}"]
        for p in peers:
            r = by.get((case.key, p))
            if r is None:
                cells.append("n/a")
            elif r.x_err is None:
                cells.append("-")
            else:
                cells.append(f"{r.x_err:.0e} / {r.grad_err:.0e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(cases: list[Case], rows: list[Row], floors: dict[str, dict[str, float]],
         path: Path) -> None:
    """Grouped log-scale bars per case; unranked rows hatched, the IPM floor as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [p for p in PEERS if any(r.peer == p and r.seconds for r in rows)]
    by = {(r.case, r.peer): r for r in rows}
    width = 0.8 / max(len(peers), 1)
    fig, ax = plt.subplots(figsize=(13, 5.5))
    xs = np.arange(len(cases))
    for j, p in enumerate(peers):
        labelled = False
        for i, case in enumerate(cases):
            r = by.get((case.key, p))
            if r is None or not r.seconds:
                continue
            ax.bar(xs[i] + (j - (len(peers) - 1) / 2) * width, r.seconds * 1e3, width,
                   color=f"C{PEERS.index(p)}", hatch=None if r.ranked else "//", edgecolor="k",
                   linewidth=0.3, label=None if labelled else PEER_LABEL[p])
            labelled = True
    for i, case in enumerate(cases):
        ax.hlines(floors[case.key]["ipm"] * 1e3, xs[i] - 0.42, xs[i] + 0.42, colors="k",
                  linestyles=":", label="flop floor" if i == 0 else None)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, ncol=3)
    ax.set_yscale("log")
    lows = [r.seconds * 1e3 for r in rows if r.seconds] + [f["ipm"] * 1e3
                                                            for f in floors.values()]
    ax.set_ylim(bottom=min(lows) / 2)
    ax.set_ylabel("forward + backward, ms (median)")
    ax.set_xticks(xs, [c.label for c in cases], rotation=20, ha="right", fontsize=7)
    load = os.getloadavg()
    ax.set_title(f"bench_peers.py, float64 CPU, load average {load[0]:.1f} {load[1]:.1f}; "
                 "hatched: wrong x, failed or gradient off (not ranked); dotted: IPM floor",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    ap.add_argument("--only", default="", help="comma-separated case keys (see above)")
    ap.add_argument("--skip-large", action="store_true", help="skip the n=m=500 QP")
    ap.add_argument("--peers", default=",".join(p for p in PEERS if p != "ours_alt"),
                    help="comma-separated subset of "
                    + ",".join(PEERS))
    ap.add_argument("--check-items", type=int, default=3, help="batch items checked")
    ap.add_argument("--directions", type=int, default=3, help="random directions per case")
    ap.add_argument("--ours-args", default="{}",
                    help='JSON solver_args for our CvxpyLayer row, e.g. \'{"tol": 1e-10}\'')
    ap.add_argument("--ours-alt-args", default="",
                    help="JSON solver_args of a second CvxpyLayer row ('ours_alt'), timed "
                         "interleaved with ours: an A/B of an option in one process")
    ap.add_argument("--ours-alt-env", default="",
                    help="VAR=VALUE[,VAR=VALUE]: environment set around each call of the "
                         "'ours_alt' row (with --ours-alt-args '{}' for the same args), e.g. "
                         "POUNCE_LAYERS_KKT_BACKEND=dense for the full dense KKT factor")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads(N) before anything runs (0: torch's default)")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, cProfile one run of each of our rows")
    ap.add_argument("--move", type=float, default=0.0,
                    help="each timed round solves new values: every parameter entry times "
                         "(1 + MOVE * N(0,1)), the same for every row (0: the checked values "
                         "again each round; 1e-3: a training step on a full batch; 0.1: new "
                         "data each step)")
    ap.add_argument("--fresh", action="store_true",
                    help="each timed round solves new data: every item drawn anew from the "
                         "case's own distribution (what a layer fed per-sample data sees "
                         "each step; no previous answer is near)")
    ap.add_argument("--out-name", default="bench_peers",
                    help="file stem of the PNG and JSON written to benchmarks/out/")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    SETTINGS.ours_args = json.loads(a.ours_args)
    SETTINGS.alt_args = json.loads(a.ours_alt_args) if a.ours_alt_args else None
    SETTINGS.alt_env = dict(kv.split("=", 1) for kv in a.ours_alt_env.split(",") if kv)
    if SETTINGS.alt_env and SETTINGS.alt_args is None:
        SETTINGS.alt_args = {}
    if SETTINGS.alt_env:
        print(f"the alt row runs with the environment {SETTINGS.alt_env}")
    SETTINGS.profile = a.profile
    SETTINGS.move = a.move
    SETTINGS.fresh = a.fresh
    regime = ("new data drawn" if a.fresh else
              f"values moved by {a.move:g}" if a.move else "the same values")
    print(f"timed rounds: {regime} each round")
    if SETTINGS.ours_args:
        print(f"our CvxpyLayer row runs with solver_args={SETTINGS.ours_args}")
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    if SETTINGS.alt_args is not None and "ours_alt" not in peers:
        peers.insert(1, "ours_alt")
    unknown = set(peers) - set(PEERS)
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)}")
    cases = all_cases(a.skip_large)
    if a.only:
        keys = {k.strip() for k in a.only.split(",")}
        missing = keys - {c.key for c in cases}
        if missing:
            ap.error(f"unknown (or skipped) cases {sorted(missing)}")
        cases = [c for c in cases if c.key in keys]
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rate = dense_throughput()
    print(f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start; dense LDL' "
          f"(dsytrf, n=500) {rate / 1e9:.2f} GFlop/s", flush=True)
    _print_versions()
    rows: list[Row] = []
    floors: dict[str, dict[str, float]] = {}
    per_factor: dict[str, float] = {}
    per_condensed: dict[str, float] = {}
    noise: dict[str, float] = {}
    dims: dict[str, tuple[int, int]] = {}
    rates = [rate]
    for case in cases:
        ref, case_rows = run_case(case, peers, a.repeats, a.check_items, a.directions)
        noise[case.key] = ref.fd_noise
        dims[case.key] = ref.dims
        rows += case_rows
        rates.append(dense_throughput())  # re-measured between cases: the load comes and goes
        per_factor[case.key] = factor_seconds(sum(ref.dims))
        if case.qp_torch is not None:  # a QP: the IPM's KKT is condensed on its x block
            per_condensed[case.key] = condensed_factor_seconds(*ref.dims)
    rate = max(rates)
    print(f"\nfloors: IPM = {IPM_ITERS} KKT factorizations per item: for the QP cases the "
          "condensed one (S = H + B'WB, n x n, and its Cholesky: torch bmm + cholesky, one "
          f"thread), otherwise the LDL' of the (n+m)-square KKT matrix; active set = one LDL' "
          "per item; each at the time measured at that size after the case (sytrf, one "
          f"thread); the peak rate (dsytrf n=500) was the best of {len(rates)} measurements, "
          f"{min(rates) / 1e9:.2f} to {rate / 1e9:.2f} GFlop/s")
    for case in cases:
        k = sum(dims[case.key])
        floors[case.key] = flop_floors(case.batch, dims[case.key], per_factor[case.key], rate,
                                       per_condensed.get(case.key))
        cond = (f"condensed {per_condensed[case.key] * 1e6:.1f} us, "
                if case.key in per_condensed else "")
        print(f"  {case.key:8s} n+m={k:4d}: {cond}LDL' {per_factor[case.key] * 1e6:9.1f} us "
              f"({k**3 / 3 / per_factor[case.key] / 1e9:5.2f} GFlop/s); IPM floor "
              f"{floors[case.key]['ipm'] * 1e3:.3g} ms, active-set floor "
              f"{floors[case.key]['active_set'] * 1e3:.3g} ms, at the peak rate "
              f"{floors[case.key]['peak'] * 1e3:.3g} ms")
    load1 = os.getloadavg()
    cols = [p for p in PEERS if p not in ("ours",) and any(r.peer == p for r in rows)]
    print("\nRatios: peer time / pounce CvxpyLayer time (above 1: the peer is slower). "
          "[bracketed]: wrong or failed rows, not ranked.")
    table = ratio_table(cases, rows, floors, "ours", cols)
    print(table)
    table_q = ""
    if any(r.peer == "ours_qpfn" for r in rows):
        print("\nOptNet-style peers against pounce QPFunction:")
        table_q = ratio_table([c for c in cases if c.qp_torch is not None], rows, floors,
                              "ours_qpfn", [p for p in OPTNET_PEERS if p in cols])
        print(table_q)
    errors = error_table(cases, rows, noise)
    print("\nx err / grad err against Clarabel at 1e-11 (central differences):")
    print(errors)
    print(f"\nload average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end; "
          f"total {time.perf_counter() - t_start:.0f} s")
    png = OUT / f"{a.out_name}.png"
    plot(cases, rows, floors, png)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.out_name}.json").write_text(json.dumps({
        "load_start": load0, "load_end": load1, "move": a.move, "fresh": a.fresh,
        "dense_flops": rate, "dense_flops_all": rates,
        "floors": floors, "ldl_seconds": per_factor, "condensed_seconds": per_condensed,
        "fd_noise": noise, "canonical_dims": dims,
        "rows": [r.__dict__ for r in rows]}, indent=1, default=str))
    print(f"wrote {png} and {OUT / (a.out_name + '.json')}")
    return 0


def _print_versions() -> None:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "numpy", "cvxpy", "cvxpylayers", "diffcp", "clarabel", "moreau",
             "proxsuite", "qpth", "qpax", "jax"]
    parts = []
    for n in names:
        try:
            parts.append(f"{n} {version(n)}")
        except PackageNotFoundError:
            parts.append(f"{n} -")
    print("versions: " + ", ".join(parts), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
