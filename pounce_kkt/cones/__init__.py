"""One class per cone: its layout (rows), its projection and the projection's derivative,
and the scaling H of ``ds = -H dy`` (docs/design.md).

One module per cone (zero, nonneg, soc, psd, exp, power), the shared machinery beside them
(centring: the symmetric cones' recentred pair; barrier: the exp/power H; ray: the exp/power
projection), the classes keyed by their SCS cone-dict key in :mod:`.registry`, and the
product cone's projection in :mod:`.product` (its H is :mod:`pounce_kkt.cone_scaling`).

Conventions (SCS's): rows zero, nonneg, SOC (``t`` first), PSD (svec: lower triangle,
column-major, off-diagonals x sqrt(2)), exp (``(x, y, z)``, ``y exp(x/y) <= z``), power
(``(x, y, z)``, ``x^a y^(1-a) >= |z|``). Batched over a leading dimension, float64.
"""

from pounce_kkt.cones.base import BlockCone, Cone, DiagonalCone
from pounce_kkt.cones.exp import ExpCone
from pounce_kkt.cones.nonneg import NonnegCone
from pounce_kkt.cones.power import PowerCone
from pounce_kkt.cones.product import apply_derivative, project
from pounce_kkt.cones.psd import PsdCone
from pounce_kkt.cones.registry import REGISTRY, ROW_ORDER, BlockGroup, block_groups, blocks
from pounce_kkt.cones.soc import SecondOrderCone
from pounce_kkt.cones.zero import ZeroCone

__all__ = [
    "REGISTRY", "ROW_ORDER", "BlockCone", "BlockGroup", "Cone", "DiagonalCone", "ExpCone",
    "NonnegCone", "PowerCone", "PsdCone", "SecondOrderCone", "ZeroCone", "apply_derivative",
    "block_groups", "blocks", "project",
]
