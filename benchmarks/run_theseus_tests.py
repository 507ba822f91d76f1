"""Rerun Theseus' generic optimizer checks with PounceOptimizer (not part of CI).

Usage::

    git clone /work/.mirror/facebookresearch+theseus/repo /tmp/theseus-src
    python benchmarks/run_theseus_tests.py /tmp/theseus-src

Imports, from that checkout (nothing of it is copied here):

- ``_run_optimizer_test`` in tests/theseus_tests/test_theseus_layer.py: learns a cost
  weight through ``TheseusLayer`` by backpropagating through the optimizer until the loss
  ratio drops below 1%;
- ``run_nonlinear_least_squares_check`` in tests/theseus_tests/optimizer/nonlinear/common.py:
  solves a batch of nonlinear least-squares fits (one Vector and 5 scalar Vectors) with
  ``track_best_solution``, ``track_err_history`` and an ``end_iter_callback``, checks the
  solution and the info, then checks FAIL status on a singular linearisation.

Each case runs in-process; the script prints one line per case and the counts.

Failures that are about Theseus' linear-solver optimizers rather than about the contract
(measured on the checkout at c8583de4, theseus-ai 0.2.3 installed):

- ``learning_method="leo"`` samples from the Gauss-Newton covariance through
  ``optimizer.linear_solver`` (``solve()``, ``linearization.hessian_approx()``);
  PounceOptimizer has no linear solver (Theseus skips LEO for Dogleg and DCEM likewise).
- ``run_nonlinear_least_squares_check`` asserts ``isinstance(optimizer.linear_solver,
  th.CholeskyDenseSolver)`` before solving; with an unused attribute the check passes.
- its singular case swaps ``optimizer.linear_solver.linearization`` for a singular one
  and expects FAIL plus a RuntimeWarning; PounceOptimizer never reads that linearization,
  and the mock objective (constant error, zero gradient) is optimal at the start, so the
  element is CONVERGED and nothing warns.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import traceback
import warnings
from pathlib import Path

import theseus as th
import torch
from theseus.constants import __FROM_THESEUS_LAYER_TOKEN__

from pounce_theseus import PounceOptimizer


class PounceWithLinearSolverAttribute(PounceOptimizer):
    """PounceOptimizer plus an (unused) ``linear_solver`` attribute.

    ``run_nonlinear_least_squares_check`` asserts ``isinstance(optimizer.linear_solver,
    th.CholeskyDenseSolver)`` before it solves anything, an assertion about Gauss-Newton's
    internals. This variant carries such an object so the rest of the check runs; the
    solve never reads it.
    """

    def __init__(self, objective, *args, **kwargs):
        super().__init__(objective, *args, **kwargs)
        self.linear_solver = th.CholeskyDenseSolver(objective)


def _cases(layer_mod, nls_mod):
    token = {__FROM_THESEUS_LAYER_TOKEN__: True}
    for model in ("direct", "mlp"):
        for learnable in (False, True):
            # "default" backpropagates with backward_mode="unroll", "direct" with
            # "implicit" (test_backward parametrises only default and leo).
            for method in ("default", "direct", "leo"):
                name = (f"_run_optimizer_test[{model}, learnable_error={learnable}, "
                        f"{method}]")
                yield name, lambda m=model, le=learnable, me=method: layer_mod._run_optimizer_test(
                    PounceOptimizer, th.CholeskyDenseSolver, {}, m, use_learnable_error=le,
                    learning_method=me, max_iterations=10,
                )
    # the keywords test_backward passes to LevenbergMarquardt
    lm_kwargs = {"damping": 0.01, "adaptive_damping": True}
    yield "_run_optimizer_test[direct, LM keywords, default]", (
        lambda: layer_mod._run_optimizer_test(
            PounceOptimizer, th.CholeskyDenseSolver, lm_kwargs, "direct", max_iterations=10
        )
    )
    yield "run_nonlinear_least_squares_check[PounceOptimizer]", (
        lambda: nls_mod.run_nonlinear_least_squares_check(PounceOptimizer, dict(token))
    )
    yield "run_nonlinear_least_squares_check[with linear_solver attribute]", (
        lambda: nls_mod.run_nonlinear_least_squares_check(
            PounceWithLinearSolverAttribute, dict(token), singular_check=False
        )
    )
    yield "run_nonlinear_least_squares_check[with linear_solver attribute, singular]", (
        lambda: nls_mod.run_nonlinear_least_squares_check(
            PounceWithLinearSolverAttribute, dict(token), singular_check=True
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("theseus_checkout", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true", help="show the tests' output")
    args = ap.parse_args()
    root = args.theseus_checkout.resolve()
    if not (root / "tests" / "theseus_tests").is_dir():
        print(f"{root} has no tests/theseus_tests", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from tests.theseus_tests import test_theseus_layer as layer_mod  # noqa: E402
    from tests.theseus_tests.optimizer.nonlinear import common as nls_mod  # noqa: E402

    torch.set_num_threads(1)
    passed, failed = [], []
    for name, fn in _cases(layer_mod, nls_mod):
        out = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(
                sys.stdout if args.verbose else out
            ):
                warnings.simplefilter("ignore")
                fn()
            passed.append(name)
            print(f"PASS  {name}")
        except BaseException as exc:  # noqa: BLE001 - report every failure and go on
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f for f in reversed(tb) if str(root) in f.filename), tb[-1])
            failed.append(name)
            print(f"FAIL  {name}\n      {type(exc).__name__}: {str(exc)[:200]}\n"
                  f"      at {Path(where.filename).name}:{where.lineno}: {where.line}")
    print(f"\n{len(passed)} passed, {len(failed)} failed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
