"""Error measures shared by the tests and benchmarks."""

from __future__ import annotations

import numpy as np


def rel_err(a, b) -> float:
    """``||a - b||_inf / max(1, ||b||_inf)``; 0 for empty arrays."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))) if a.size else 0.0
