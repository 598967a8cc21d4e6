"""Processes: pools that are safe in a process that already runs torch, liveness, and
stopping a whole process group.

Forking a process whose torch/OpenMP (or CUDA) threads have started can deadlock the
children (seen in the test suite: pool workers stuck on a futex). Every pool in mkd
therefore starts its workers from a ``forkserver`` (a fresh process that imports the
common modules once and forks workers from itself), or ``spawn`` where there is none.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from multiprocessing.context import BaseContext
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of ``n`` (the last one shorter): the batches that
    process pools and batched model calls take."""
    for start in range(0, len(items), n):
        yield items[start : start + n]


def worker_context(preload: Sequence[str] = ()) -> BaseContext:
    """The multiprocessing context for worker pools (see the module docstring), its
    forkserver started now (``preload`` applies only to a forkserver not yet running)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        _start_forkserver_deaf_to_sigterm()
        return ctx
    return multiprocessing.get_context("spawn")


def _start_forkserver_deaf_to_sigterm() -> None:
    """Start this process's forkserver ignoring SIGTERM, so it and every worker it forks
    never act on one (an ignored signal stays ignored across fork and exec). Why: a cancel
    or a preemption SIGTERMs the stage's whole process group; the stage checkpoints,
    exits 143 and stops its workers itself. A forkserver killed by that SIGTERM took the
    DataLoader workers with it (their watchdog follows their parent, the forkserver), and
    the trainer, still finishing its step, crashed on "DataLoader worker exited
    unexpectedly" instead. SIGTERM is also blocked in this thread meanwhile: one sent to
    this process in that window stays pending (Linux keeps a blocked signal pending
    even while it is ignored) and reaches the restored handler, never lost."""
    from multiprocessing import forkserver

    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        try:
            handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:  # not the main thread: the forkserver hears SIGTERM
            handler = None
        try:
            forkserver.ensure_running()
        finally:
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead; a process
    of another user counts as alive)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux) or it just exited
        return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def terminate_group(pgid: int, grace_s: float, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the whole group, wait up to ``grace_s`` (a stage checkpoints meanwhile),
    then SIGKILL what is left. Waiting ends early when the group is gone or its leader has
    exited (its leftovers get SIGKILL). ``proc``: the leader, if this process started it
    (it is reaped so the group can empty)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        if not group_alive(pgid):
            return
        if proc is None and not pid_alive(pgid):
            break
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
