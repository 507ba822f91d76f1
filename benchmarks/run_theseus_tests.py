"""Rerun Theseus' own optimizer tests with PounceOptimizer (not part of CI).

Usage::

    python benchmarks/run_theseus_tests.py [THESEUS_CHECKOUT] [--suite helpers|pytest|all]
        [--baseline] [-- PYTEST_ARGS]

Without a checkout, ``examples``/``tests`` of the bare mirror
``/work/.mirror/facebookresearch+theseus/repo`` are extracted to a temporary folder (as
benchmarks/run_theseus_examples.py does); nothing of Theseus is copied here.

``--suite helpers`` imports, from that checkout, and calls with ``PounceOptimizer`` (whose
``linear_solver`` is built as Gauss-Newton builds it, so the helpers' assertions on that
attribute hold):

- ``_run_optimizer_test`` in tests/theseus_tests/test_theseus_layer.py: learns a cost
  weight through ``TheseusLayer`` by backpropagating through the optimizer until the loss
  ratio drops below 1%;
- ``run_nonlinear_least_squares_check`` in tests/theseus_tests/optimizer/nonlinear/common.py:
  solves a batch of nonlinear least-squares fits (one Vector and 5 scalar Vectors) with
  ``track_best_solution``, ``track_err_history`` and an ``end_iter_callback``, checks the
  solution and the info, then checks FAIL status on a singular linearisation.

Each case runs in-process; the script prints one line per case and the counts.

``--suite pytest`` runs Theseus' own files tests/theseus_tests/test_theseus_layer.py and
tests/theseus_tests/optimizer/nonlinear/ under pytest (benchmarks/suite_runner.py) with this
file loaded as a plugin that rebinds ``th.GaussNewton`` and ``th.LevenbergMarquardt`` to
subclasses of ``PounceOptimizer`` of the same names before collection, so every test that
names either class runs ours (Dogleg, DCEM and the linear solvers stay Theseus');
``--baseline`` runs the same files unswapped. The
failures are printed grouped by their message; the full log goes to benchmarks/out/.

Failures that are about Theseus' linear-solver optimizers rather than about the contract
(measured on the checkout at c8583de4, theseus-ai 0.2.3 installed):

- the singular case swaps ``optimizer.linear_solver.linearization`` for a singular one
  and expects FAIL plus a RuntimeWarning; PounceOptimizer never reads that linearization,
  and the mock objective (constant error, zero gradient) is optimal at the start, so the
  element is CONVERGED and nothing warns.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import traceback
import warnings
from collections import defaultdict
from pathlib import Path

import theseus as th
import torch
from theseus.constants import __FROM_THESEUS_LAYER_TOKEN__

from pounce_theseus import PounceOptimizer

PYTEST_TARGETS = ("tests/theseus_tests/test_theseus_layer.py",
                  "tests/theseus_tests/optimizer/nonlinear")
SWAPPED = ("GaussNewton", "LevenbergMarquardt")


def swap_in(base: type) -> None:
    """Rebind ``th.GaussNewton`` and ``th.LevenbergMarquardt`` (and their names in
    ``theseus.optimizer.nonlinear``) to subclasses of ``base`` with the same names."""
    import theseus.optimizer.nonlinear as nonlinear

    for name in SWAPPED:
        cls = type(name, (base,), {"__module__": __name__,
                                   "__doc__": f"{base.__name__} standing in for {name}."})
        setattr(th, name, cls)
        setattr(nonlinear, name, cls)


def pytest_configure(config) -> None:  # noqa: ANN001  (pytest plugin hook)
    """Before collection: Theseus' own tests name our classes from here on."""
    swap_in(PounceOptimizer)


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
                    PounceOptimizer, th.CholeskyDenseSolver, {}, m,
                    use_learnable_error=le, learning_method=me, max_iterations=10,
                )
    # the keywords test_backward passes to LevenbergMarquardt
    lm_kwargs = {"damping": 0.01, "adaptive_damping": True}
    yield "_run_optimizer_test[direct, LM keywords, default]", (
        lambda: layer_mod._run_optimizer_test(
            PounceOptimizer, th.CholeskyDenseSolver, lm_kwargs, "direct",
            max_iterations=10,
        )
    )
    yield "run_nonlinear_least_squares_check[with linear_solver attribute]", (
        lambda: nls_mod.run_nonlinear_least_squares_check(
            PounceOptimizer, dict(token), singular_check=False
        )
    )
    yield "run_nonlinear_least_squares_check[with linear_solver attribute, singular]", (
        lambda: nls_mod.run_nonlinear_least_squares_check(
            PounceOptimizer, dict(token), singular_check=True
        )
    )


def run_helpers(root: Path, verbose: bool) -> int:
    """The helper cases in-process; returns the number of failures."""
    sys.path.insert(0, str(root))
    from tests.theseus_tests import test_theseus_layer as layer_mod  # noqa: E402
    from tests.theseus_tests.optimizer.nonlinear import common as nls_mod  # noqa: E402

    torch.set_num_threads(1)
    passed, failed = [], []
    for name, fn in _cases(layer_mod, nls_mod):
        out = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(
                sys.stdout if verbose else out
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
    print(f"\nhelpers: {len(passed)} passed, {len(failed)} failed")
    return len(failed)


def failures_by_message(log: str) -> dict[str, list[str]]:
    """The tests of pytest's FAILURES/ERRORS sections grouped by their first ``E`` line and
    the ``file:line`` the traceback ends at."""
    groups: dict[str, list[str]] = defaultdict(list)
    parts = re.split(r"^_+ (\S+) _+$", log, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        first = next((ln[1:].strip() for ln in body.splitlines() if ln.startswith("E ")),
                     "(no E line)")
        where = re.findall(r"^(\S+\.py):(\d+): \w+", body, flags=re.M)
        at = f" at {Path(where[-1][0]).name}:{where[-1][1]}" if where else ""
        groups[f"{first[:140]}{at}"].append(name)
    return groups


def run_pytest(root: Path, baseline: bool, pytest_args: list[str]) -> int:
    """Theseus' own layer and nonlinear-optimizer test files with our classes swapped in
    (unless ``baseline``); prints the failures grouped by message."""
    from suite_runner import run_suite

    stem = "theseus_tests"
    rc = run_suite(root, [str(root / t) for t in PYTEST_TARGETS], Path(__file__).stem, stem,
                   baseline, pytest_args)
    log = Path(__file__).resolve().parent / "out" / (
        f"{stem}_{'baseline' if baseline else 'pounce'}.log")
    groups = failures_by_message(log.read_text()) if log.exists() else {}
    print(f"\nfailures by message ({sum(map(len, groups.values()))}):")
    for msg, tests in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(tests):3d} x {msg}")
        for t in tests:
            print(f"        {t}")
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("theseus_checkout", type=Path, nargs="?",
                    help="a Theseus checkout (default: extracted from the mirror)")
    ap.add_argument("--suite", choices=("helpers", "pytest", "all"), default="all")
    ap.add_argument("--baseline", action="store_true", help="pytest: Theseus' own classes")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the helpers' output")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="theseus-tests-") as tmp:
        if args.theseus_checkout is None:
            from run_theseus_examples import extract_mirror
            root = extract_mirror(Path(tmp))
        else:
            root = args.theseus_checkout.resolve()
        if not (root / "tests" / "theseus_tests").is_dir():
            print(f"{root} has no tests/theseus_tests", file=sys.stderr)
            return 2
        failed = 0
        if args.suite in ("helpers", "all"):
            failed += run_helpers(root, args.verbose)
        if args.suite in ("pytest", "all"):
            failed += run_pytest(root, args.baseline, args.pytest_args) != 0
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
