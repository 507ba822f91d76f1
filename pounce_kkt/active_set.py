"""The complementary pair and the cone scaling at the active set identified by ``w = s - y``.

An interior-point iterate has ``s_i y_i ~ mu`` rather than 0, and the scaling H of the
linearised complementarity ``ds = -H dy`` (pounce_kkt/cone_scaling.py) built from it smooths
the derivative over a band of width ~sqrt(mu) around every kink (a nonneg row with slack
3e-4 and mu = 1e-10 gets H ~ 1e3 instead of infinity). Moreau's decomposition names the
active set exactly: with ``w = s - y``,

    s~ = Pi_K(w),   y~ = Pi_K(w) - w                (complementary, in K x K*)

and the derivative of the solution map at a regular point is that of the KKT system with
``ds = D dw``, ``dy = (D - I) dw``, ``D = dPi_K/dw`` (diffcp's form), i.e. ``ds = -H dy``
with ``H = D (I - D)^-1``: 0 on active directions, infinite on inactive ones, finite on the
curvature directions of a curved face. :func:`limit_scaling` is H of cone_scaling evaluated at
``(s~, y~)``, where ``<s~, y~> = 0`` leaves only cone_scaling's floors: nonneg rows get 0 or
1e20 exactly (a diagonal holds that spread), SOC/PSD/exp/power blocks hold it within ~1e-8
(cones.centring.TAU_REL_MIXED and its interior push), so K stays factorable by both backward
paths.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import torch

from pounce_kkt.cone_dims import ConeDims
from pounce_kkt.cone_scaling import block_scaling
from pounce_kkt.cones import apply_derivative, project

# Bytes each row memo (:class:`_RowMemo`) keeps: keys and values (the oldest go first); a
# batch whose keys exceed this fraction of it is not remembered.
MEMO_BYTES = 8 << 20
MEMO_BATCH_FRACTION = 0.125


class _RowMemo:
    """Rows keyed by the bytes of (s_i, y_i) and their cone dims, with an optional row value
    each (CPU float64, no graph). One budget, MEMO_BYTES of keys and values, holds for all
    cone dims together (the least recently added rows go first), so a process that builds
    many layer shapes holds no more than one that builds one.

    Two instances: :data:`_SNAPPED` holds the pairs :func:`snap` returned lately. Such a pair
    is its own snap: s in K, y in K*, <s, y> = 0 give Pi_K(s - y) = s by Moreau's
    decomposition (exactly on zero and nonneg rows, to the projection's rounding on curved
    blocks), so a refined point's H (limit_scaling at each Newton step, and the backward's)
    needs no second projection. :data:`_SCALED` holds limit_scaling's H rows at such pairs:
    a kept answer's H, computed by one call's backward, is the next call's first Newton
    step's (and, on the same values, its backward's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: OrderedDict[tuple[int, bytes], np.ndarray | None] = OrderedDict()
        self.bytes = 0
        # One small int per cone dims: a row's key is (token, bytes), whose hash is cheap
        # (a ConeDims hashes all its fields every time).
        self.tokens: dict[ConeDims, int] = {}

    def _token(self, cones: ConeDims) -> int:
        """The cone dims' token (under the lock)."""
        return self.tokens.setdefault(cones, len(self.tokens))

    @staticmethod
    def keys(s: torch.Tensor, y: torch.Tensor) -> list[bytes] | None:
        """One key per row; None unless both are CPU float64 without a graph and the batch's
        keys take at most MEMO_BATCH_FRACTION of MEMO_BYTES (a memo that cannot hold a few
        calls' rows would only cost their copies)."""
        if not (s.device.type == y.device.type == "cpu"
                and s.dtype == y.dtype == torch.float64) or s.requires_grad or y.requires_grad:
            return None
        if s.shape[0] * (s.shape[1] + y.shape[1]) * 8 > MEMO_BATCH_FRACTION * MEMO_BYTES:
            return None
        return [r.tobytes() for r in np.concatenate([s.numpy(), y.numpy()], axis=1)]

    def has(self, cones: ConeDims, keys: list[bytes]) -> bool:
        """Whether every key is held."""
        with self.lock:
            t = self._token(cones)
            return bool(keys) and all((t, k) in self.rows for k in keys)

    def values(self, cones: ConeDims, keys: list[bytes]) -> np.ndarray | None:
        """The held rows' values stacked (a copy), or None unless every key holds one."""
        if not keys:
            return None
        with self.lock:
            t = self._token(cones)
            got = [self.rows.get((t, k)) for k in keys]
        if any(v is None for v in got):
            return None
        return np.stack(got)

    def add(self, cones: ConeDims, keys: list[bytes], values: np.ndarray | None = None
            ) -> None:
        """Hold the keys (with values[i] for keys[i] if given)."""
        if not keys:
            return
        with self.lock:
            t = self._token(cones)
            for i, k in enumerate(keys):
                old = self.rows.pop((t, k), _ABSENT)
                if old is not _ABSENT:
                    self.bytes -= _row_bytes(k, old)
                v = None if values is None else values[i].copy()
                self.rows[(t, k)] = v
                self.bytes += _row_bytes(k, v)
            while self.bytes > MEMO_BYTES and self.rows:
                (_, k), v = self.rows.popitem(last=False)
                self.bytes -= _row_bytes(k, v)


_ABSENT = object()


def _row_bytes(key: bytes, value: np.ndarray | None) -> int:
    """The bytes one memo row holds: its key and its value."""
    return len(key) + (0 if value is None else value.nbytes)


_SNAPPED = _RowMemo()
_SCALED = _RowMemo()


def _fresh_after_fork() -> None:
    """In a forked child: fresh memos and locks (another thread may have held a lock)."""
    global _SNAPPED, _SCALED
    _SNAPPED, _SCALED = _RowMemo(), _RowMemo()


os.register_at_fork(after_in_child=_fresh_after_fork)


def snap(s: torch.Tensor, y: torch.Tensor, cones: ConeDims
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Pi_K(w), Pi_K(w) - w) with w = s - y, both (B, m) in SCS row order.

    Differentiable in (s, y) with the projection's derivative D at w (first order exact;
    D itself is held constant), so the dense backward stays differentiable again. Without
    a graph, on CPU float64 rows that are all earlier outputs of snap (a refined point),
    copies of (s, y) themselves (:class:`_RowMemo`).
    """
    p, d, _ = _snap(s, y, cones, _SNAPPED.keys(s, y))
    return p, d


def _snap(s: torch.Tensor, y: torch.Tensor, cones: ConeDims, keys: list[bytes] | None
          ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`snap` given the rows' keys (None: not remembered), and whether every row was a
    pair snap returned before."""
    if keys is not None and _SNAPPED.has(cones, keys):
        return s.clone(), y.clone(), True
    w = s - y
    wd = w.detach()
    p, parts = project(wd, cones, derivative=w.requires_grad)
    if w.requires_grad:
        p = p + apply_derivative(w - wd, wd, cones, parts)
    d = p - w
    if keys is not None:
        _SNAPPED.add(cones, _SNAPPED.keys(p, d))
    return p, d, False


# H of an inactive nonneg row (w_i > 0): "infinite", exactly representable in a diagonal.
INACTIVE_H = 1e20


def limit_scaling(s: torch.Tensor, y: torch.Tensor, cones: ConeDims
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """H at the active set of w = s - y: cone_scaling at :func:`snap` (same layout), with the
    nonneg rows set to their limit exactly, INACTIVE_H where w_i > 0 and 0 elsewhere (the
    recentred formula's floors would leave H ~ w_i^2 / 1e-20 on a row with tiny w_i).
    With zero and nonneg rows only, H is that diagonal alone (constant in s and y). At
    snapped pairs (CPU float64, no graph) H is computed once per pair (:class:`_RowMemo`)."""
    z, nd = cones.z, cones.n_diag
    if nd == s.shape[1] and s.device.type == "cpu" and s.dtype == y.dtype == torch.float64:
        # The same diagonal in numpy: a few Torch ops cost more than the work at small B.
        w = s.detach().numpy()[:, z:] - y.detach().numpy()[:, z:]
        h = np.zeros(s.shape)
        h[:, z:] = np.where(w > 0, INACTIVE_H, 0.0)
        return torch.from_numpy(h), s.new_zeros(s.shape[0], 0)
    w = (s[:, z:nd] - y[:, z:nd]).detach()
    h_nonneg = torch.where(w > 0, INACTIVE_H, 0.0).to(s.dtype)
    if nd == cones.m:
        return torch.cat([s.new_zeros(s.shape[0], z), h_nonneg], dim=1), s.new_zeros(s.shape[0], 0)
    keys = _SNAPPED.keys(s, y)
    if keys is not None:
        held = _SCALED.values(cones, keys)
        if held is not None:  # H at these snapped pairs, computed before (_RowMemo)
            return torch.from_numpy(held[:, :nd]), torch.from_numpy(held[:, nd:])
    p, d, snapped = _snap(s, y, cones, keys)
    h_blocks = block_scaling(p, d, cones)
    h_diag = torch.cat([s.new_zeros(s.shape[0], z), h_nonneg], dim=1)  # zero rows: H = 0
    if snapped:
        _SCALED.add(cones, keys, torch.cat([h_diag, h_blocks], dim=1).numpy())
    return h_diag, h_blocks
