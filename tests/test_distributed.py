"""Two gloo processes through a POUNCE layer: averaged gradients equal single-process ones."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import data_parallel  # noqa: E402  (the example itself; spawned ranks import it too)


def test_two_rank_gradients_and_training_match_single_process():
    r = data_parallel.run(small=True, steps=3)
    scale = max(float(np.abs(g).max()) for g in r["single_grads"])
    assert scale > 0, "the fixture should have a nonzero gradient"
    assert data_parallel.max_abs_diff(r["single_grads"], r["ddp_grads"]) <= 1e-10 * scale
    np.testing.assert_allclose(r["ddp_losses"], r["single_losses"], rtol=1e-10)
    assert data_parallel.max_abs_diff(r["single_weights"], r["ddp_weights"]) <= 1e-9
