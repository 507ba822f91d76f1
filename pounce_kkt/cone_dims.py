"""Cone dimensions in the SCS/cvxpy row order: zero, nonneg, SOC, PSD, exp, power."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def svec_dim(order: int) -> int:
    """Rows of the svec of an order x order symmetric matrix (lower triangle)."""
    return order * (order + 1) // 2


@dataclass(frozen=True)
class ConeBlock:
    """One cone of a product cone: `kind` in {"q", "s", "ep", "p"}, rows [start, start + dim).

    `param` is the matrix order for "s", alpha for "p", and the dimension otherwise.
    """

    kind: str
    start: int
    dim: int
    param: float


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
        object.__setattr__(self, "z", int(self.z))
        object.__setattr__(self, "l", int(self.l))
        object.__setattr__(self, "ep", int(self.ep))
        object.__setattr__(self, "q", tuple(int(d) for d in self.q))
        object.__setattr__(self, "s", tuple(int(d) for d in self.s))
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

        Dict keys: "z" (or "f"), "l", "q", "s", "ep", "p"; missing keys are empty.
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
        known = {"z", "f", "l", "q", "s", "ep", "p", "ed"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown cone keys {sorted(unknown)}; known: {sorted(known)}")
        if int(d.get("ed", 0) or 0):
            raise ValueError("the dual exponential cone ('ed') is not supported")
        if "z" in d and "f" in d:
            raise ValueError("give the zero cone as 'z' or 'f', not both")
        return cls(
            z=int(d.get("z", d.get("f", 0)) or 0),
            l=int(d.get("l", 0) or 0),
            q=tuple(d.get("q", ()) or ()),
            s=tuple(d.get("s", ()) or ()),
            ep=int(d.get("ep", 0) or 0),
            p=tuple(d.get("p", ()) or ()),
        )

    @classmethod
    def _from_cvxpy(cls, c: Any) -> ConeDims:
        if list(getattr(c, "pnd", []) or []):
            raise ValueError("N-dimensional power cones (cvxpy PowConeND) are not supported")
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
        """Total number of rows."""
        return (self.z + self.l + sum(self.q) + sum(svec_dim(k) for k in self.s)
                + 3 * self.ep + 3 * len(self.p))

    @property
    def n_diag(self) -> int:
        """Rows whose scaling is diagonal (zero and nonneg): the length of `h_diag`."""
        return self.z + self.l

    def blocks(self) -> list[ConeBlock]:
        """The non-diagonal cones in row order (SOC, PSD, exp, power)."""
        out: list[ConeBlock] = []
        r = self.n_diag
        for d in self.q:
            out.append(ConeBlock("q", r, d, float(d)))
            r += d
        for k in self.s:
            out.append(ConeBlock("s", r, svec_dim(k), float(k)))
            r += svec_dim(k)
        for _ in range(self.ep):
            out.append(ConeBlock("ep", r, 3, 3.0))
            r += 3
        for a in self.p:
            out.append(ConeBlock("p", r, 3, a))
            r += 3
        return out

    @property
    def n_block_entries(self) -> int:
        """Length of `h_blocks`: sum of d_k^2 over the non-diagonal cones."""
        return sum(b.dim * b.dim for b in self.blocks())
