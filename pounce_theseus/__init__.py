"""Theseus adapter: ``PounceOptimizer``, a drop-in for ``th.GaussNewton`` /
``th.LevenbergMarquardt`` solved by POUNCE's NLP interior-point method, with bounds,
general constraints and exact implicit gradients."""

from .constraints import Constraint
from .optimizer import PounceOptimizer

__all__ = ["Constraint", "PounceOptimizer"]
