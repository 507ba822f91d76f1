"""Every cone class, keyed by its SCS cone-dict key, in row order; and the walk over a
:class:`~pounce_kkt.cone_dims.ConeDims` that gives each cone its rows.

Rows follow SCS/cvxpy: zero, nonneg, SOC, PSD, exp, power (docs/design.md). The zero and
nonneg rows form one diagonal run ``[0, z + l)``; every other cone is one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from pounce_kkt.cones.base import BlockCone, Cone, ConeBlock, ConeCounts, DiagonalCone
from pounce_kkt.cones.exp import ExpCone
from pounce_kkt.cones.nonneg import NonnegCone
from pounce_kkt.cones.power import PowerCone
from pounce_kkt.cones.psd import PsdCone
from pounce_kkt.cones.soc import SecondOrderCone
from pounce_kkt.cones.zero import ZeroCone

ROW_ORDER: tuple[type[Cone], ...] = (
    ZeroCone, NonnegCone, SecondOrderCone, PsdCone, ExpCone, PowerCone)
REGISTRY: dict[str, type[Cone]] = {cls.key: cls for cls in ROW_ORDER}
DIAGONAL_CONES: tuple[type[DiagonalCone], ...] = tuple(
    cls for cls in ROW_ORDER if issubclass(cls, DiagonalCone))
BLOCK_CONES: tuple[type[BlockCone], ...] = tuple(
    cls for cls in ROW_ORDER if issubclass(cls, BlockCone))


def blocks(cones: ConeCounts) -> list[ConeBlock]:
    """The block cones of ``cones`` in row order: kind (the key), first row, rows, param."""
    return list(_blocks(cones))


@lru_cache(maxsize=256)
def _blocks(cones: ConeCounts) -> tuple[ConeBlock, ...]:
    out: list[ConeBlock] = []
    r = sum(cls.rows(cones) for cls in DIAGONAL_CONES)
    for cls in BLOCK_CONES:
        for param in cls.params(cones):
            d = cls.dim(param)
            out.append(ConeBlock(cls.key, r, d, float(param)))
            r += d
    return tuple(out)


@dataclass(frozen=True)
class BlockGroup:
    """The blocks of one kind and size, computed together.

    members: the blocks in row order; h_offsets: where each member's d x d block starts in
    the row-major ``h_blocks`` layout (cone order). Index tensors, shared by every call
    (index with them, never write into them): rows (G, d), the members' rows; h_index
    (G d^2,), the positions of their H entries in ``h_blocks``. cols: the column selector
    of rows, a slice when they are one consecutive run (a view, no gather or scatter), else
    rows itself.
    """

    cone_type: type[BlockCone]
    dim: int
    members: tuple[ConeBlock, ...]
    h_offsets: tuple[int, ...]
    rows: torch.Tensor = field(init=False, compare=False)
    h_index: torch.Tensor = field(init=False, compare=False)
    cols: torch.Tensor | slice = field(init=False, compare=False)

    def __post_init__(self) -> None:
        d = self.dim
        rows = torch.tensor([[b.start + i for i in range(d)] for b in self.members])
        h_index = torch.tensor([off + i for off in self.h_offsets for i in range(d * d)])
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "h_index", h_index)
        first, n = self.members[0].start, rows.numel()
        run = bool((rows.reshape(-1) == torch.arange(first, first + n)).all())
        object.__setattr__(self, "cols", slice(first, first + n) if run else rows)

    def cone(self, repeat: int) -> BlockCone:
        """The cone instance for these blocks stacked over a batch of ``repeat`` items."""
        return self.cone_type.for_group([b.param for b in self.members], repeat)


@lru_cache(maxsize=256)
def block_groups(cones: ConeCounts) -> tuple[BlockGroup, ...]:
    """The block cones of ``cones`` grouped by (kind, size), in order of first appearance
    (computed once per cone dims)."""
    found: dict[tuple[str, int], list[tuple[ConeBlock, int]]] = {}
    offset = 0
    for blk in _blocks(cones):
        found.setdefault((blk.kind, blk.dim), []).append((blk, offset))
        offset += blk.dim * blk.dim
    return tuple(BlockGroup(REGISTRY[kind], d, tuple(b for b, _ in members),
                            tuple(off for _, off in members))
                 for (kind, d), members in found.items())
