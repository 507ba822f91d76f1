"""What the shipped packages (pounce_kkt, pounce_cvxpy, pounce_theseus) may not contain: an
import of test code, or a touch of a third-party internal outside the two compat modules
(pounce_cvxpy/compat.py, pounce_theseus/compat.py). Source scans, so they name the line."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ("pounce_cvxpy", "pounce_kkt", "pounce_theseus")


def _code_lines(skip: set[pathlib.Path] = frozenset()):
    """(where, code) of every shipped source line, comments cut, docstring mentions (lines
    with a backtick) left out."""
    for pkg in SHIPPED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path in skip:
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if "`" not in code:
                    yield f"{path.relative_to(ROOT)}:{i}: {line.strip()}", code


TEST_CODE = re.compile(r"^\s*(from|import)\s+((testing_helpers|tests|conftest)\b|test_\w)")


def test_no_shipped_module_imports_test_code():
    assert not [where for where, code in _code_lines() if TEST_CODE.search(code)]


# The third-party internals the compat modules document (cvxpy, cvxpylayers, Theseus).
INTERNALS = re.compile(r"SOLVER_MAP_CONIC|parse_args\.parse_args|\bpa\.parse_args|reduced_[AP]"
                       r"|problem_data_index|reduced_mat|dims_to_solver_dict|\.ctx\.solver|get_dual_values"
                       r"|\bdefines\.|_error_metric_fn|_get_error_iter|_retract_impl|_init_info"
                       r"|_vectorized_jacobians_iter|_vectorization_run|_schema_dict")


def test_internals_are_touched_only_in_the_compat_modules():
    allowed = {ROOT / "pounce_cvxpy" / "compat.py", ROOT / "pounce_theseus" / "compat.py"}
    assert not [where for where, code in _code_lines(allowed) if INTERNALS.search(code)]
