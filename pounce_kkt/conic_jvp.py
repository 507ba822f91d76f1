"""Forward-mode derivative of the conic solve (the JVP), on the backward's KKT machinery.

Perturbing the data of ``min 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K`` by
``(dP, dq, dA, db)`` moves the solution by (docs/design.md, "The KKT adjoint")::

    K [dx; dy] = [r1; r2] = [-(dP_eff x + dq + dA' y); db - dA x],   K = [[P_eff, A'], [A, -H]]
    ds = r2 - A dx        (= -H dy exactly; 0 on zero-cone rows)

K is symmetric, so this is the backward's own solve with upstream ``(gx, gy, gs) = (r1, r2, 0)``:
the adjoint solves ``K [u; v] = [gx; gy - H gs]`` and returns ``grad_q = -u``, ``grad_b = v``,
hence ``dx = -grad_q`` and ``dy = grad_b``. The dense Torch or native sparse solve (same
regularisation, refinement and path selection as :func:`pounce_kkt.conic_vjp`) is reused.

Why ``ds = r2 - A dx`` rather than ``-H dy``: on an inactive row H ~ s/y reaches ~1e13, and
``dy`` there is ~1e-13 carrying the solve's absolute rounding (~1e-16 |sol|), which ``-H dy``
multiplies back up to ~1e-3; ``r2 - A dx`` only adds rounding of the size of ``A dx``.
Measured on the LP/QP families of testing_helpers against central differences (docs/design.md).
"""

from __future__ import annotations

from typing import Any

import torch

from pounce_kkt.conic import ConicState, _kkt_vjp, _output_like, _restore
from pounce_kkt.structure import ConicStructure
from pounce_kkt.validation import check_finite, check_last_dim


def _direction(name: str, v: Any, width: int, B: int) -> torch.Tensor | None:
    """A (B, width) float64 CPU copy of a direction given as (B, width), (1, width) or (width,)."""
    if v is None:
        return None
    t = torch.as_tensor(v).detach()
    check_last_dim(name, t, width)
    t = t.to("cpu", torch.float64)
    check_finite(name, t)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.shape[0] not in (1, B):
        raise ValueError(f"{name} has batch {t.shape[0]}, expected {B} (or unbatched)")
    return t.expand(B, width)


def kkt_rhs(structure: ConicStructure, x: torch.Tensor, y: torch.Tensor,
            dP: torch.Tensor | None, dq: torch.Tensor | None, dA: torch.Tensor | None,
            db: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """r1 = -(dP_eff x + dq + dA'y), r2 = db - dA x, all (B, .) float64.

    dP holds values on P's full pattern, dP_eff = (dP + dP')/2 as in the forward's P_eff.
    """
    st = structure
    B = x.shape[0]
    r1 = x.new_zeros(B, st.n)
    r2 = x.new_zeros(B, st.m)
    if dq is not None:
        r1 -= dq
    if db is not None:
        r2 += db
    if dA is not None:
        ar, ac = st.a_rows, st.a_cols
        r1.index_add_(1, ac, -dA * y[:, ar])  # -(dA' y)
        r2.index_add_(1, ar, -dA * x[:, ac])  # -(dA x)
    if dP is not None:
        pr, pc = st.p_rows, st.p_cols
        r1.index_add_(1, pr, -0.5 * dP * x[:, pc])  # -(dP x)/2
        r1.index_add_(1, pc, -0.5 * dP * x[:, pr])  # -(dP' x)/2
    return r1, r2


def conic_jvp(state: ConicState, dP: Any = None, dq: Any = None, dA: Any = None,
              db: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dy, ds): the derivative of the solution at a conic_forward state along (dP, dq, dA, db).

    Directions are value arrays on the structure's patterns (dP on P's FULL pattern, read as
    P is: dP_eff = (dP + dP')/2), batch-first (B, nnzP), (B, n), (B, nnzA), (B, m) or
    unbatched (broadcast over the batch); None means zero (dP must be None without a P
    pattern). Results are shaped like the solution conic_forward returned (its dtype and
    device; unbatched if that call was). Items that were not solved get NaN, as their
    solution does (conic_vjp gives them zero gradient; here no sum over items is formed, so
    NaN marks them without touching the others). Zero-cone rows of ds are exactly 0.
    """
    st = state.structure
    B = state.x.shape[0]
    if dP is not None and not st.has_p:
        raise ValueError("dP given but the structure has no P pattern")
    with torch.no_grad():
        dirs = [_direction(name, v, w, B) for name, v, w in (
            ("dP", dP, st.nnz_p), ("dq", dq, st.n), ("dA", dA, st.nnz_a), ("db", db, st.m))]
        okc = state.ok[:, None]
        x = torch.where(okc, state.x, 0.0)
        y = torch.where(okc, state.y, 0.0)
        r1, r2 = kkt_rhs(st, x, y, *dirs)
        path = state.options.backward_path(st.n + st.m, create_graph=False)
        _, grad_q, _, grad_b = _kkt_vjp(st, path, state.P, state.A, state.x, state.y,
                                        state.s, state.ok, r1, r2, None)
        dx, dy = -grad_q, grad_b
        ds = r2 - torch.zeros_like(r2).index_add_(1, st.a_rows, state.A * dx[:, st.a_cols])
        ds[:, :st.cones.z] = 0.0  # s is identically 0 on zero-cone rows
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        dx, dy, ds = (torch.where(okc, t, nan) for t in (dx, dy, ds))
    out, batched = _output_like(state.like), state.like["batched"]
    return _restore(dx, out, batched), _restore(dy, out, batched), _restore(ds, out, batched)


__all__ = ["conic_jvp", "kkt_rhs"]
