"""Run diffcp's own test suite with `diffcp` swapped for `pounce_cvxpy.diffcp`.

    .venv/bin/python benchmarks/run_diffcp_tests.py /path/to/diffcp [--baseline]

Takes a checkout of https://github.com/cvxgrp/diffcp (its `tests/` folder) and runs those
tests against the INSTALLED diffcp package (`-c /dev/null` bypasses their pytest config).
Nothing of theirs is copied here: this file is loaded into pytest as a plugin
(`-p run_diffcp_tests`) that puts `pounce_cvxpy.diffcp` where the tests find the solver,
`diffcp.cone_program` (what they import as `cone_prog`) and the package-level
`diffcp.solve_and_derivative*`/`solve_only*`/`SolverError`. diffcp's cone library
(`diffcp.cones`: projections and their derivatives), its C++ helpers (`diffcp._diffcp`) and
`diffcp.utils` (test-data builders) stay diffcp's: they are not the solver, and the tests
that check them run the same code either way.
`--baseline` runs the same files without the plugin (diffcp itself).
Prints pytest's summary and the pass/fail counts (the full log goes to benchmarks/out/).
Not part of the CI suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite_runner import run_suite

SOLVER_NAMES = ("solve_and_derivative", "solve_and_derivative_batch", "solve_only",
                "solve_only_batch", "SolverError")


def _swap_in_pounce() -> None:
    """Make `diffcp.cone_program` and diffcp's solver functions POUNCE's (idempotent)."""
    import diffcp
    import diffcp.cone_program  # noqa: F401  (loaded first, so the swap below sticks)

    from pounce_cvxpy import diffcp as pounce_diffcp

    sys.modules["diffcp.cone_program"] = pounce_diffcp
    diffcp.cone_program = pounce_diffcp
    for name in SOLVER_NAMES:
        setattr(diffcp, name, getattr(pounce_diffcp, name))


def pytest_configure(config) -> None:  # noqa: ANN001  (pytest plugin hook)
    _swap_in_pounce()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="path of a diffcp checkout (with tests/)")
    ap.add_argument("--baseline", action="store_true", help="run without the swap (diffcp)")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    a = ap.parse_args()
    tests = a.checkout / "tests"
    if not tests.is_dir() or not list(tests.glob("test_*.py")):
        print(f"not a diffcp checkout, no tests/test_*.py under {a.checkout}", file=sys.stderr)
        return 2
    return run_suite(a.checkout, [str(tests)], Path(__file__).stem, "diffcp_tests", a.baseline,
                     a.pytest_args)

if __name__ == "__main__":
    raise SystemExit(main())
