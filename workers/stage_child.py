"""The first code a queue stage child runs: SIGTERM before the engine is ready exits 143.

A worker runs a stage as ``python -m workers.stage_child MODULE run CONFIG --stages NAME``
(``MODULE`` is ``mkdcore.cli.main``, or a test's stand-in). Importing torch and the
plugins takes seconds; a SIGTERM in that window (SLURM preemption, ``scancel``, a worker
asked to stop) used to kill the child with the default action (exit code -15), which the
worker could not tell from a crash. Nothing has been computed yet, so the right answer is
the same as the engine's after its checkpoint: exit :data:`TERMINATED_EXIT_CODE` (143),
"stopped on request, resumable". The training engine installs its own handler (checkpoint,
then 143) while it trains and restores this one afterwards.

This module imports nothing heavy before installing the handler.
"""

from __future__ import annotations

import runpy
import signal
import sys

#: 128 + SIGTERM; the same value as :data:`mkdcore.errors.TERMINATED_EXIT_CODE` (not
#: imported: the handler must be in place before any mkd import).
EXIT_TERMINATED = 143


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_TERMINATED)


def main(argv: list[str]) -> None:
    """Install the handler, then run ``argv[0]`` as ``__main__`` with ``argv[1:]``."""
    signal.signal(signal.SIGTERM, _stop)
    if not argv:
        raise SystemExit("usage: python -m workers.stage_child MODULE ARGS...")
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
