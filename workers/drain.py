"""A worker asked to stop hands back the stage it runs: the stop request between processes.

Celery's warm shutdown (SIGTERM to the worker) stops taking messages but then waits for
the running task, which for a training stage can be days: far past a SLURM time limit or
a spot VM's notice. So the worker's main process, on ``worker_shutting_down``, writes a
stop request ``<runs_dir>/workers/<node>.stop`` naming itself; the task process (its pool
child) sees it within a poll, SIGTERMs the stage's process group (checkpoint, exit 143)
and hands the stage back to the queue (:func:`mkdcore.jobs.dispatch.hand_back`). The
file names the main process (pid + start time) so a stale request left by a previous
worker of the same name never stops a new one; a starting worker removes it anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mkdcore import procinfo
from mkdcore.jobs.heartbeats import workers_dir
from mkdcore.jobs.store import atomic_write, read_json


def stop_path(node: str, runs_dir: Path) -> Path:
    return workers_dir(runs_dir) / f"{node}.stop"


def request_stop(node: str, runs_dir: Path, reason: str) -> None:
    """Called in the worker's main process when it begins to shut down."""
    pid = os.getpid()
    atomic_write(stop_path(node, runs_dir),
                 json.dumps({"worker_pid": pid, "worker_start": procinfo.start_time(pid), "reason": reason}))


def stop_requested(node: str, runs_dir: Path, worker_pid: int) -> str | None:
    """The reason if the worker ``worker_pid`` (the task process's parent) asked to stop."""
    req = read_json(stop_path(node, runs_dir))
    if not req or req.get("worker_pid") != worker_pid:
        return None
    if req.get("worker_start") != procinfo.start_time(worker_pid):
        return None  # a reused pid: another process's request
    return str(req.get("reason") or "worker stopping")


def clear(node: str, runs_dir: Path) -> None:
    stop_path(node, runs_dir).unlink(missing_ok=True)
