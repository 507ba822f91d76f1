"""The cone registry (pounce_kkt/cones/registry.py): one class per SCS cone key, whose rows
tile the cone dict's rows in SCS order, and whose grouped evaluation (cones of one kind and
size at once) puts every block's H, projection and derivative where that block alone would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pounce_kkt.cone_dims import ConeDims, svec_dim
from pounce_kkt.cone_scaling import cone_scaling
from pounce_kkt.cones import (
    REGISTRY,
    ROW_ORDER,
    BlockCone,
    DiagonalCone,
    ExpCone,
    PowerCone,
    PsdCone,
    SecondOrderCone,
    block_groups,
    blocks,
    project,
)
from testing_helpers.cone_pairs import complementary_pair

DT = torch.float64
# Interleaved sizes, so that grouping by (kind, size) reorders the blocks.
MIXED = ConeDims(z=1, l=2, q=(3, 2, 3, 1), s=(2, 1, 2), ep=2, p=(0.3, 0.7, 0.5))


def test_registry_holds_the_cone_dict_keys_in_row_order():
    assert list(REGISTRY) == list(ConeDims().to_dict())
    assert tuple(REGISTRY.values()) == ROW_ORDER
    assert [c.key for c in ROW_ORDER if issubclass(c, DiagonalCone)] == ["z", "l"]


def test_blocks_tile_the_rows_with_each_cones_own_size():
    r = MIXED.n_diag
    expected = ([("q", d, d) for d in MIXED.q] + [("s", svec_dim(k), k) for k in MIXED.s]
                + [("ep", 3, 3.0)] * MIXED.ep + [("p", 3, a) for a in MIXED.p])
    got = blocks(MIXED)
    assert [(b.kind, b.dim, b.param) for b in got] == expected
    for b in got:
        assert b.start == r
        r += b.dim
    assert r == MIXED.m
    assert MIXED.blocks() == got


def test_groups_keep_each_blocks_rows_and_h_offset():
    groups = block_groups(MIXED)
    by_start = {}
    for g in groups:
        assert all(b.dim == g.dim and b.kind == g.cone_type.key for b in g.members)
        for b, off, rows in zip(g.members, g.h_offsets, g.rows.tolist(), strict=True):
            assert rows == list(range(b.start, b.start + b.dim))
            by_start[b.start] = off
    off = 0
    for b in blocks(MIXED):  # h_blocks is in cone order, whatever the grouping
        assert by_start[b.start] == off
        off += b.dim * b.dim
    assert off == MIXED.n_block_entries


@pytest.mark.parametrize("cls, params, size", [
    (SecondOrderCone, [4.0, 4.0], 4), (PsdCone, [3.0], 6), (ExpCone, [3.0] * 3, 3),
    (PowerCone, [0.2, 0.9], 3)])
def test_block_cone_layout(cls, params, size):
    assert issubclass(cls, BlockCone)
    assert all(cls.dim(p) == size for p in params)
    cone = cls.for_group(params, repeat=2)
    if cls is PowerCone:  # stacked item-major: the batch repeats the group's alphas
        assert cone.alpha.tolist() == params * 2


def test_grouped_evaluation_equals_block_by_block():
    """H, Pi and D of the product cone, block by block, against each block's class alone
    (catches a group's rows, alphas or offsets landing on another block)."""
    cones = ConeDims(z=1, l=2, q=(3, 2, 3), ep=2, p=(0.3, 0.7, 0.5))
    rng = np.random.default_rng(3)
    pairs = [complementary_pair(rng, cones.to_dict()) for _ in range(2)]
    s = torch.tensor(np.stack([p[0] for p in pairs]), dtype=DT) + 0.01
    y = torch.tensor(np.stack([p[1] for p in pairs]), dtype=DT) + 0.01
    h_diag, h_blocks = cone_scaling(s, y, cones)
    w = s - y
    p, parts = project(w, cones, derivative=True)
    D_of = {int(rows[g, 0]): D[:, g] for rows, D in parts for g in range(rows.shape[0])}
    off = 0
    for b in blocks(cones):
        rows = slice(b.start, b.start + b.dim)
        alone = REGISTRY[b.kind].for_group([b.param], repeat=2)
        H = alone.scaling(s[:, rows], y[:, rows])
        torch.testing.assert_close(
            h_blocks[:, off:off + b.dim ** 2].reshape(2, b.dim, b.dim), H, rtol=1e-12, atol=0)
        pb, Db = alone.project_and_derivative(w[:, rows])
        torch.testing.assert_close(p[:, rows], pb.reshape(2, b.dim), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(D_of[b.start], Db.reshape(2, b.dim, b.dim))
        off += b.dim ** 2
    assert (h_diag[:, 0] == 0).all()
