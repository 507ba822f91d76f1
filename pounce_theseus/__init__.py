"""Theseus adapter: ``PounceOptimizer``, a drop-in for ``th.GaussNewton`` /
``th.LevenbergMarquardt`` solved by POUNCE's NLP interior-point method, with bounds,
general constraints and exact implicit gradients. Importing it makes the optimizer
reachable as ``theseus.PounceOptimizer`` (configs name optimizers by attribute)."""

from .compat import register_optimizer
from .constraints import Constraint
from .optimizer import PounceOptimizer

register_optimizer(PounceOptimizer)

__all__ = ["Constraint", "PounceOptimizer"]
