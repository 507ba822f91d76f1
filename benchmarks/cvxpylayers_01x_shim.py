"""pytest plugin: lets cvxpylayers 0.1.x's own torch tests import under the installed 1.x.

cvxpylayers 0.1.x's `cvxpylayers/torch/test_cvxpylayer.py` imports `forward_numpy` and
`backward_numpy` from `cvxpylayers.utils`, internals that 1.x no longer has; they serve one
test only (`test_least_squares_custom_method`, which benchmarks/run_cvxpylayers_tests.py
deselects). This plugin gives those two names a stand-in (None) when they are missing, so the
module imports. It also imports the installed `cvxpylayers.torch` first: the test file sits in
the checkout's own `cvxpylayers/torch/` package, and importing it by path would otherwise load
that 0.1.x package in its place. It changes nothing else and is loaded in both modes (ours and
the baseline).
"""

from __future__ import annotations

import importlib

# The 0.1.x-only names its test module imports from cvxpylayers.utils.
OLD_UTILS_NAMES = ("forward_numpy", "backward_numpy")


def pytest_configure(config) -> None:  # noqa: ANN001  (pytest plugin hook)
    importlib.import_module("cvxpylayers.torch")  # the installed 1.x, before the checkout's
    utils = importlib.import_module("cvxpylayers.utils")
    for name in OLD_UTILS_NAMES:
        if not hasattr(utils, name):
            setattr(utils, name, None)
