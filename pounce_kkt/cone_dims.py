"""Cone dimensions in the SCS/cvxpy row order: zero, nonneg, SOC, PSD, exp, power."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pounce_kkt.cones.base import ConeBlock
from pounce_kkt.cones.psd import svec_dim
from pounce_kkt.cones.registry import blocks as _registry_blocks

# Cone-dict keys solved here, and the keys of SCS 3 / cvxpy / diffcp cones that are not
# (accepted only when empty: cvxpy 1.9 always writes "pnd": [], diffcp may write "ed": 0).
_SOLVED_KEYS = ("z", "f", "l", "q", "s", "ep", "p")
_UNSOLVED_KEYS = {
    "ed": "the dual exponential cone (as a ConeDims: read the dict with scs_cones, as "
          "pounce_cvxpy.diffcp does, to solve it on mapped rows)",
    "pnd": "the N-dimensional power cone (cvxpy PowConeND)",
    "bu": "the box cone (SCS)",
    "bl": "the box cone (SCS)",
    "cs": "the complex PSD cone (SCS)",
}


def _is_empty(v: Any) -> bool:
    """Whether a cone-dict entry holds no cone: None, 0 or an empty sequence/array."""
    if v is None:
        return True
    if isinstance(v, (int, float, np.integer, np.floating)):
        return v == 0
    return len(v) == 0


def _count(v: Any) -> Any:
    # Converted (and checked: 2.7 is refused, never truncated) in ConeDims.__post_init__.
    return 0 if _is_empty(v) else v


def _whole(name: str, v: Any) -> int:
    """A cone count or size as an int; a non-integer raises naming the entry."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"cone size {name} must be an integer, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        pass
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise TypeError(f"cone size {name} must be an integer, got {type(v).__name__} {v!r}")


def _sizes(v: Any) -> tuple:
    return () if _is_empty(v) else tuple(np.asarray(v).reshape(-1).tolist())


@dataclass(frozen=True)
class ConeDims:
    """Product cone K in the SCS/diffcp convention (see docs/design.md).

    z: zero-cone rows; l: nonneg rows; q: SOC sizes (t first); s: PSD matrix orders
    (svec rows, lower triangle column-major, off-diagonals x sqrt(2)); ep: number of
    exponential cones (x, y, z) with y exp(x/y) <= z; p: power-cone alphas, triples
    (x, y, z) with x^a y^(1-a) >= |z|.
    """

    z: int = 0
    l: int = 0  # noqa: E741 - the SCS key
    q: tuple[int, ...] = ()
    s: tuple[int, ...] = ()
    ep: int = 0
    p: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "z", _whole("z", self.z))
        object.__setattr__(self, "l", _whole("l", self.l))
        object.__setattr__(self, "ep", _whole("ep", self.ep))
        object.__setattr__(self, "q", tuple(_whole(f"q[{i}]", d) for i, d in enumerate(self.q)))
        object.__setattr__(self, "s", tuple(_whole(f"s[{i}]", d) for i, d in enumerate(self.s)))
        object.__setattr__(self, "p", tuple(float(a) for a in self.p))
        if min(self.z, self.l, self.ep) < 0:
            raise ValueError(f"cone counts must be >= 0: {self}")
        if any(d < 1 for d in self.q):
            raise ValueError(f"SOC sizes must be >= 1: q={list(self.q)}")
        if any(d < 1 for d in self.s):
            raise ValueError(f"PSD orders must be >= 1: s={list(self.s)}")
        if any(not 0.0 < a < 1.0 for a in self.p):
            raise ValueError(f"power-cone alphas must lie in (0, 1): p={list(self.p)}")

    @classmethod
    def from_any(cls, cones: Any = None, **kwargs: Any) -> ConeDims:
        """Build from a ConeDims, a dict with SCS keys, a cvxpy ConeDims, or keywords.

        Dict keys: "z" (or "f"), "l", "q", "s", "ep", "p"; missing keys are empty. The keys
        of cones POUNCE cannot solve ("ed", "pnd", "bu"/"bl", "cs") are accepted when empty.
        """
        if cones is None:
            return cls(**kwargs)
        if kwargs:
            raise ValueError("pass either a cone object or keywords, not both")
        if isinstance(cones, ConeDims):
            return cones
        if isinstance(cones, Mapping):
            return cls._from_mapping(cones)
        if hasattr(cones, "zero") and hasattr(cones, "nonneg"):
            return cls._from_cvxpy(cones)
        raise TypeError(f"cannot read cone dims from {type(cones).__name__}")

    @classmethod
    def _from_mapping(cls, d: Mapping[str, Any]) -> ConeDims:
        """Read a cone dict as SCS 3, cvxpy (`dims_to_solver_dict`) or diffcp write it.

        Every key those produce is accepted; an empty entry (0, None, []) means no cone.
        A non-empty cone that POUNCE cannot solve raises ValueError naming it; any other
        key raises ValueError (a typo never passes silently).
        """
        unknown = set(d) - set(_SOLVED_KEYS) - set(_UNSOLVED_KEYS)
        if unknown:
            raise ValueError(f"unknown cone keys {sorted(unknown)}; known: "
                             f"{sorted((*_SOLVED_KEYS, *_UNSOLVED_KEYS))}")
        present = [k for k in _UNSOLVED_KEYS if not _is_empty(d.get(k))]
        if present:
            k = present[0]
            raise ValueError(f"cone key {k!r} = {d[k]!r}: {_UNSOLVED_KEYS[k]} is not supported "
                             "by POUNCE (only an empty entry is accepted)")
        if not _is_empty(d.get("z")) and not _is_empty(d.get("f")):
            raise ValueError("give the zero cone as 'z' or 'f', not both")
        dual_power = [a for a in _sizes(d.get("p")) if a < 0]
        if dual_power:
            raise ValueError(f"cone key 'p' = {list(_sizes(d.get('p')))}: a negative alpha is "
                             "SCS's dual power cone, which a ConeDims does not hold (read the "
                             "dict with scs_cones, as pounce_cvxpy.diffcp does, to solve it on "
                             "mapped rows)")
        return cls(
            z=_count(d.get("z")) or _count(d.get("f")),
            l=_count(d.get("l")),
            q=_sizes(d.get("q")),
            s=_sizes(d.get("s")),
            ep=_count(d.get("ep")),
            p=_sizes(d.get("p")),
        )

    @classmethod
    def _from_cvxpy(cls, c: Any) -> ConeDims:
        if not _is_empty(getattr(c, "pnd", None)):
            raise ValueError(f"cvxpy cone dims pnd = {list(c.pnd)}: "
                             f"{_UNSOLVED_KEYS['pnd']} is not supported by POUNCE")
        return cls(
            z=c.zero, l=c.nonneg, q=tuple(c.soc), s=tuple(c.psd), ep=c.exp,
            p=tuple(getattr(c, "p3d", []) or []),
        )

    def to_dict(self) -> dict[str, Any]:
        """The SCS-style dict (all keys present), as handed to the native side."""
        return {"z": self.z, "l": self.l, "q": list(self.q), "s": list(self.s),
                "ep": self.ep, "p": list(self.p)}

    @property
    def m(self) -> int:
        """Total number of rows: the diagonal ones and each block cone's own."""
        return self.n_diag + sum(b.dim for b in self.blocks())

    @property
    def n_diag(self) -> int:
        """Rows whose scaling is diagonal (zero and nonneg): the length of `h_diag`."""
        return self.z + self.l

    def blocks(self) -> list[ConeBlock]:
        """The non-diagonal cones in row order (SOC, PSD, exp, power); each cone class in
        pounce_kkt.cones gives its own rows."""
        return _registry_blocks(self)

    @property
    def n_block_entries(self) -> int:
        """Length of `h_blocks`: sum of d_k^2 over the non-diagonal cones."""
        return sum(b.dim * b.dim for b in self.blocks())


@dataclass(frozen=True)
class RowMap:
    """Solver row k holds `scale[k]` times user row `src[k]`: s' = S s for a signed, scaled
    permutation S.

    It carries SCS's dual cones onto POUNCE's primal ones: s is in the user's cone iff S s is
    in the solver's, and a solver dual y' gives the user's dual y = S' y'. Vectors are
    (..., m), batch-first.
    """

    src: np.ndarray
    scale: np.ndarray

    def forward(self, v: Any) -> np.ndarray:
        """S v: user rows to solver rows (b, db, a user slack s)."""
        return self.scale * np.asarray(v, dtype=np.float64)[..., self.src]

    def adjoint(self, w: Any) -> np.ndarray:
        """S' w: solver duals (y, dy, gradients of b) to user rows."""
        w = np.asarray(w, dtype=np.float64)
        out = np.empty_like(w)
        out[..., self.src] = self.scale * w
        return out

    def inverse(self, w: Any) -> np.ndarray:
        """S^-1 w: solver slacks (s, ds) to user rows."""
        w = np.asarray(w, dtype=np.float64)
        out = np.empty_like(w)
        out[..., self.src] = w / self.scale
        return out

    def inverse_adjoint(self, v: Any) -> np.ndarray:
        """S^-T v: a user dual (a warm start) or a slack's upstream gradient to solver rows."""
        return np.asarray(v, dtype=np.float64)[..., self.src] / self.scale


def scs_cones(d: Mapping[str, Any]) -> tuple[ConeDims, RowMap | None]:
    """POUNCE's cones for an SCS cone dict that may hold SCS's dual cones, and the row map
    (None when there is none: the rows are the user's).

    "ed" (dual exponential cones (u, v, w): u < 0, -u exp(v/u) <= e w, or u = 0, v, w >= 0)
    becomes an exponential cone on the rows (-v, -u, e w); a negative alpha in "p" (the dual
    power cone (u/a)^a (v/(1-a))^(1-a) >= |w|, a = |alpha|) becomes the power cone of a on
    (u/a, v/(1-a), w). Row positions stay: SCS puts the ed rows right after the ep rows, as
    the extra exponential cones are here.
    """
    alphas = _sizes(d.get("p"))
    n_ed = ConeDims(ep=_count(d.get("ed"))).ep
    if not n_ed and all(a >= 0 for a in alphas):
        return ConeDims.from_any(d), None
    rest = {k: v for k, v in d.items() if k != "ed"}
    n_ep = ConeDims(ep=_count(d.get("ep"))).ep
    rest.update(ep=n_ep + n_ed, p=[abs(a) for a in alphas])
    cones = ConeDims.from_any(rest)
    src, scale = np.arange(cones.m), np.ones(cones.m)
    first_ed = (cones.n_diag + sum(cones.q) + sum(svec_dim(k) for k in cones.s) + 3 * n_ep)
    for r in range(first_ed, first_ed + 3 * n_ed, 3):
        src[r:r + 3] = (r + 1, r, r + 2)
        scale[r:r + 3] = (-1.0, -1.0, np.e)
    first_p = first_ed + 3 * n_ed
    for j, alpha in enumerate(alphas):
        if alpha < 0:
            r = first_p + 3 * j
            scale[r:r + 2] = (1.0 / -alpha, 1.0 / (1.0 + alpha))
    return cones, RowMap(src, scale)
