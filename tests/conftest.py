"""Pytest fixtures and hooks shared by the test modules.

Helpers (problem generators, reference solvers, svec, error measures) live in
``testing_helpers/`` and are imported from there by tests and benchmarks alike; this file
holds only what pytest itself must find here.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _no_default_dtype_leak():
    """Fail a test that leaves torch's default dtype changed: later tests (Theseus allocates
    its histories in the default dtype) would otherwise see it."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    torch.set_default_dtype(before)
    assert after == before, f"test changed torch's default dtype from {before} to {after}"
