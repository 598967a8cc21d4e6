"""Worker pools' processes leave SIGTERM to the stage that owns them."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import signal
import sys

import pytest

from mkdcore.parallel import worker_context

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return bool(int(fields["SigIgn"], 16) & (1 << (signal.SIGTERM - 1)))


def _report_sigterm_ignored(queue) -> None:
    queue.put(ignores_sigterm(os.getpid()))


def test_the_forkserver_and_its_workers_ignore_sigterm_and_this_process_keeps_its_handler():
    """A cancel SIGTERMs the stage's whole group: the forkserver (and so the DataLoader
    workers, whose watchdog follows it) must not die of it before the stage checkpoints."""
    heard = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        ctx = worker_context()
        assert ignores_sigterm(multiprocessing.forkserver._forkserver._forkserver_pid)
        queue = ctx.Queue()
        worker = ctx.Process(target=_report_sigterm_ignored, args=(queue,))
        worker.start()
        assert queue.get(timeout=60) is True
        worker.join(60)
        assert not ignores_sigterm(os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
        assert heard == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
