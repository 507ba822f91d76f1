"""What every example shares: the `--small` switch, the output folder and a progress line.

`--small` (or POUNCE_EXAMPLES_SMALL=1) shrinks an example so the test suite can run it in a
few seconds; the default size is the one the README and the guides describe.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from collections.abc import Callable

OUT_DIR = pathlib.Path(__file__).resolve().parent / "out"


def parse_args(description: str,
               extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """Parse `--small`, `--out` and what `extra(parser)` adds; `args.out` is a created
    folder for PNGs."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--small", action="store_true",
                        default=os.environ.get("POUNCE_EXAMPLES_SMALL") == "1",
                        help="reduced size, for the test suite")
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR,
                        help="folder for the PNG (default examples/out)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


class Progress:
    """Prints `[name] step i/n  key=value ...  (elapsed)` lines."""

    def __init__(self, name: str, total: int, every: int = 1) -> None:
        self.name, self.total, self.every = name, total, max(1, every)
        self.start = time.perf_counter()

    def __call__(self, step: int, **metrics: float) -> None:
        if step % self.every and step != self.total:
            return
        values = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        elapsed = time.perf_counter() - self.start
        print(f"[{self.name}] step {step}/{self.total}  {values}  ({elapsed:.1f}s)", flush=True)


def save_figure(fig, path: pathlib.Path) -> None:
    """Write a matplotlib figure and say where."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", flush=True)
