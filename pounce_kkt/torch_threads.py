"""Run the layers' small batched Torch work on one intra-op thread.

The Torch work around a native solve (refinement's residuals and operators, the active-set
scaling, the adapters' layout maps) is many small batched ops of 1e3-1e6 entries. Above
Torch's grain (32768 entries) each one opens an OpenMP parallel region, whose barrier waits
for every Torch thread; on a machine whose cores are busy (other processes, or this
process's native pool that runs the solves), a waiting thread first spins and then waits
for a time slice, so each region costs up to milliseconds for microseconds of work.
Measured (docs/profile-layers.md): B=1024 n=m=10 QP forward 63 ms on one thread, 592 ms on
two at load average 2 on 2 cores; with OMP_WAIT_POLICY=PASSIVE, 87 ms on two.

:func:`serial_torch` sets torch's intra-op threads to 1 for the enclosed block and restores
them after. The setting is process-wide, so nested and concurrent blocks share one count
(the first entrant saves the caller's setting, the last one out restores it); while a block
runs, Torch ops of the process's other Python threads run on one thread too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Switch for A/B measurements (benchmarks/profile_layers.py --torch-serial off).
ENABLED = True

_lock = threading.Lock()
_depth = 0
_saved = 1


@contextmanager
def serial_torch() -> Iterator[None]:
    """Torch intra-op parallelism off inside the block (see the module docstring)."""
    global _depth, _saved
    if not ENABLED:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            if _saved != 1:
                torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved != 1:
                torch.set_num_threads(_saved)
