"""Dump cvxpy's SCS-form data of the exp-cone and SOCP benchmark families as text, for the
Rust profiling example (rust/core/examples/exp_socp_profile.rs).

Families (the bench_peers.py cases, scaled):
  softmax K  min c'x - sum(entr(x)) s.t. sum(x) = 1, x in R^K: K exp cones.
  logreg S   l2 logistic regression, S samples, 5 features: 2 exp cones per sample.
  socp N     min ||A x - b|| + c'x s.t. ||x|| <= 1, A N x N.

File format (one array per line, whitespace separated): `n m`; `z l ep`; the SOC sizes;
P's indptr, P's indices (empty lines without P); A's indptr; A's indices; `B`; then per item
the lines p_values, a_values, q, b (SCS form: A x + s = b, s in K).

    python benchmarks/exp_socp_dump.py OUTDIR [--batch 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cvxpy as cp
import numpy as np
import scipy.sparse as sp


def softmax(k: int):
    x, c = cp.Variable(k), cp.Parameter(k)
    prob = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1])
    r = np.random.default_rng(3)
    return prob, lambda: c.__setattr__("value", r.standard_normal(k))


def logreg(samples: int, features: int = 5):
    r = np.random.default_rng(5)
    y = np.sign(r.standard_normal(samples))
    w, X = cp.Variable(features), cp.Parameter((samples, features))
    loss = cp.sum(cp.logistic(-cp.multiply(y, X @ w))) / samples
    prob = cp.Problem(cp.Minimize(loss + 0.1 * cp.sum_squares(w)))
    return prob, lambda: X.__setattr__("value", r.standard_normal((samples, features)))


def socp(n: int):
    x = cp.Variable(n)
    A, b, c = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 2) + c @ x), [cp.norm(x, 2) <= 1])
    r = np.random.default_rng(2)

    def draw():
        A.value, b.value, c.value = (r.standard_normal((n, n)), r.standard_normal(n),
                                     r.standard_normal(n))
    return prob, draw


def line(v) -> str:
    return " ".join(repr(float(a)) if isinstance(a, (float, np.floating)) else str(int(a))
                    for a in np.asarray(v).ravel())


def dump(prob: cp.Problem, draw, batch: int, path: Path) -> None:
    items, head = [], None
    for _ in range(batch):
        draw()
        data, _, _ = prob.get_problem_data(cp.SCS)
        A = sp.csc_matrix(data["A"])
        A.sort_indices()
        P = data.get("P")
        P = None if P is None else sp.csc_matrix(P)
        if P is not None:
            P.sort_indices()
        d = data["dims"]
        h = (A.shape[1], A.shape[0], d.zero, d.nonneg, d.exp, list(d.soc),
             None if P is None else (P.indptr.tolist(), P.indices.tolist()),
             A.indptr.tolist(), A.indices.tolist())
        assert head is None or head == h, "structure changed between items"
        assert not d.psd and not d.p3d
        head = h
        items.append(([] if P is None else P.data, A.data, data["c"], data["b"]))
    n, m, z, l_, ep, soc, pp, ai, aj = head
    out = [f"{n} {m}", f"{z} {l_} {ep}", line(soc),
           line(pp[0]) if pp else "", line(pp[1]) if pp else "", line(ai), line(aj), str(batch)]
    for it in items:
        out += [line(v) for v in it]
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for k in (2, 5, 10, 20, 40, 80):
        dump(*softmax(k), a.batch, out / f"softmax_{k}.txt")
    for s in (1, 3, 5, 10, 20, 40):
        dump(*logreg(s), a.batch, out / f"logreg_{s}.txt")
    for n in (5, 10, 20, 40):
        dump(*socp(n), a.batch, out / f"socp_{n}.txt")


if __name__ == "__main__":
    main()
