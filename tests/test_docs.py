"""The guides' and the README's code blocks run, so they cannot rot.

Every ```python block of a page runs, in order, in one fresh interpreter per page (later
blocks see earlier names), with the examples folder on sys.path. A block that must not run is
fenced as ```python no-run; keep those rare. Other languages (bash, text) are not run.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/migrating-from-diffcp.md", "docs/migrating-from-qpth.md",
         "docs/migrating-cvxpylayers.md", "docs/migrating-theseus.md"]
# Lines a page's blocks must print (the blocks also assert their values against references).
EXPECTED_OUTPUT = {
    "docs/migrating-theseus.md": [
        r"with a <= 2: 2\.0\n",
        r"with a == 1\.5: 1\.5 b: 0\.5102\d* status \[<NonlinearOptimizerStatus\.CONVERGED",
        r"b with a fixed at 1\.5 \(GaussNewton\): 0\.5102",
        r"d b\*/d y, with the bound active: torch\.Size\(\[1, 20\]\)",
        r"after 2 iterations: MAX_ITERATIONS gradient finite: True",
    ],
}
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def python_blocks(page: pathlib.Path) -> list[str]:
    """The runnable python blocks of a page, in order."""
    return [code for info, code in FENCE.findall(page.read_text())
            if "no-run" not in info.split()]


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page, tmp_path):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no python block to run"
    script = "\n".join(f"# --- block {i} of {page}\n{code}" for i, code in enumerate(blocks))
    path = tmp_path / "blocks.py"
    env_path = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'examples')!r}]\n"
    path.write_text(env_path + script)
    proc = subprocess.run([sys.executable, "-W", "ignore", str(path)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"{page}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    for pattern in EXPECTED_OUTPUT.get(page, []):
        assert re.search(pattern, proc.stdout), f"{page}: no {pattern!r} in\n{proc.stdout}"


def test_fence_parser_sees_every_python_block(tmp_path):
    page = tmp_path / "probe.md"
    page.write_text("x\n```python\na = 1\n```\n```bash\nls\n```\n```python no-run\nboom\n```\n")
    assert python_blocks(page) == ["a = 1\n"]


def _table_rows(page: str, header: str) -> list[list[str]]:
    """Cells of the markdown table that starts with `header` on `page`."""
    lines = (ROOT / page).read_text().splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_solver_args_tables_match_the_code():
    """The cvxpylayers guide's two solver_args tables list exactly the keys the code knows,
    with the core's current defaults."""
    from pounce_cvxpy import solver_args
    from pounce_kkt import ConeDims, SolveOptions

    ours = _table_rows("docs/migrating-cvxpylayers.md", "| key | default | meaning |")
    defaults = {row[0].strip("`"): row[1] for row in ours}
    assert set(defaults) == set(solver_args._OURS)
    core = SolveOptions()
    meanings = {row[0].strip("`"): row[2] for row in ours}
    for key, text in defaults.items():
        expected = False if key == "warm_start" else getattr(core, key)
        if isinstance(expected, float):
            assert float(text) == expected, key
        else:
            assert text.strip('"') == str(expected), key
    # tol=None means "chosen per problem": the guide must quote both values tol_for picks.
    assert core.tol is None
    soc = ConeDims(q=[3])
    lp = ConeDims(l=2)
    quoted = {float(v) for v in re.findall(r"\d+(?:\.\d+)?e-\d+", meanings["tol"])}
    for cones in (soc, lp):
        assert core.tol_for(cones) in quoted, cones

    foreign = _table_rows("docs/migrating-cvxpylayers.md", "| key | what POUNCE does |")
    documented = {k.strip("` ") for row in foreign for k in row[0].split(",")}
    assert documented == set(solver_args._IGNORED) | set(solver_args._TRANSLATED)


def test_theseus_guide_quotes_pounce_optimizer_defaults():
    """The constructor line quoted in the Theseus guide has the code's defaults."""
    import ast
    import inspect

    from pounce_theseus import PounceOptimizer

    text = (ROOT / "docs/migrating-theseus.md").read_text()
    quoted = re.search(r"`(PounceOptimizer\(objective, .*?\))`", text, re.S).group(1)
    call = ast.parse(" ".join(quoted.replace("*,", "").split())).body[0].value
    params = inspect.signature(PounceOptimizer.__init__).parameters
    assert call.keywords, "no keywords parsed from the quoted signature"
    quoted_names = [kw.arg for kw in call.keywords]
    named = [p for p in params if p not in ("self", "objective", "kwargs")]
    assert quoted_names == named, "the guide's signature lists the parameters in order"
    for kw in call.keywords:
        assert kw.arg in params, f"the guide names {kw.arg!r}, which PounceOptimizer lacks"
        assert ast.literal_eval(kw.value) == params[kw.arg].default, kw.arg
