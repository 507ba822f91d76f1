"""What every Theseus test module shares: its marks and a one-thread fixture.

Imported by the test_theseus_* modules (pytest puts tests/ on sys.path); it holds no tests.
"""

from __future__ import annotations

import pytest

from testing_helpers.theseus_problems import one_torch_thread

# No xfail for a build without the native NLP solve: `nlp` is a default feature, so such a
# build is broken and every Theseus test must fail on it (PounceOptimizer raises, naming
# the missing feature).
THESEUS_MARKS = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """The solves are small; intra-op threads only contend on a shared machine."""
    with one_torch_thread():
        yield
