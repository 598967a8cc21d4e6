"""Process pools that are safe in a process that already runs torch.

Forking a process whose torch/OpenMP (or CUDA) threads have started can deadlock the
children (seen in the test suite: pool workers stuck on a futex). Every pool in mkd
therefore starts its workers from a ``forkserver`` (a fresh process that imports the
common modules once and forks workers from itself), or ``spawn`` where there is none.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext
from typing import Sequence


def worker_context(preload: Sequence[str] = ()) -> BaseContext:
    """The multiprocessing context for worker pools (see the module docstring)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")
