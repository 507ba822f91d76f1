"""Every example runs end to end at its reduced size (--small) and says what it should.

The data-parallel example is run by tests/test_distributed.py (two gloo processes).
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, out: pathlib.Path) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--small", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=EXAMPLES)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "step" in proc.stdout, "examples print their progress"
    return proc.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no line matching {pattern!r} in:\n{text[-2000:]}"
    return float(match.group(1))


def test_quickstart_learns_the_teacher(tmp_path):
    out = run_example("quickstart.py", tmp_path)
    before = number(r"untrained ([-+.\de]+)", out)
    after = number(r"trained ([-+.\de]+)$", out.strip())
    assert after < 0.2 * before


def test_optnet_qp(tmp_path):
    out = run_example("optnet_qp.py", tmp_path)
    assert number(r"teacher: ([.\d]+) of", out) > 0, "the teacher should have active constraints"
    assert (tmp_path / "optnet_qp.png").stat().st_size > 0


def test_portfolio_respects_the_volatility_limit(tmp_path):
    out = run_example("portfolio.py", tmp_path)
    vol = number(r"volatility ([.\d]+) \(limit", out)
    limit = number(r"\(limit ([.\d]+)\)", out)
    assert vol <= limit + 1e-5  # both printed to 5 decimals
    assert (tmp_path / "portfolio.png").stat().st_size > 0


def test_theseus_curve_fit_holds_the_bound_and_matches_scipy(tmp_path):
    out = run_example("theseus_curve_fit.py", tmp_path)
    assert number(r"with bound: a = ([.\d]+)", out) <= 2.0 + 1e-9
    assert abs(number(r"residual at anchor ([-+.\de]+)", out)) < 1e-6
    assert number(r"scipy finite differences ([-+.\de]+)", out) < 1e-4
    assert (tmp_path / "theseus_curve_fit.png").stat().st_size > 0


def test_theseus_pose_graph_compares_gauss_newton_and_pounce(tmp_path):
    out = run_example("theseus_pose_graph.py", tmp_path)
    assert "GaussNewton" in out
    edge = number(r"PounceOptimizer: .*courtyard edge at ([-.\d]+)", out)
    assert number(r"PounceOptimizer: .*landmark x = ([-.\d]+)", out) <= edge + 1e-6
    assert (tmp_path / "theseus_pose_graph.png").stat().st_size > 0
