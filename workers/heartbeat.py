"""Worker heartbeats and the watchdog, run by a thread in the worker's main process.

Every ``MKD_HEARTBEAT_EVERY`` seconds the worker writes ``<runs_dir>/workers/<node>.json``
(host, pid, device count, each owned GPU's name/memory/utilisation via NVML, stage
threads, process RSS, the stage its task process runs, time). The same thread is the watchdog: it re-queues running stages whose
worker has been silent for ``MKD_STALE_AFTER`` seconds (capped attempts, see
:func:`mkdcore.jobs.dispatch.recover_stale`). Every worker runs it; the store lock makes
concurrent watchdogs harmless. Celery's own ``ping``/``inspect`` are not needed.

At start-up a worker looks for the task file (``<node>.task.json``) of a predecessor with
the same node name that died mid-stage (``kill -9``, OOM; ``mkd worker`` then restarts it):
the file names the dead process (pid + start time), so the stage it ran is re-queued at
once (an attempt is counted, as for a lost worker) instead of staying ``running`` forever.
A task file is only reported in the heartbeat by the worker that wrote it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from celery.utils.log import get_logger

from mkdcore import procinfo, settings
from mkdcore.errors import MkdError
from mkdcore.jobs.dispatch import dispatch, recover_stale, requeue_lost
from mkdcore.jobs.heartbeats import (
    HEARTBEAT_EVERY_S,
    STALE_AFTER_S,
    read_heartbeats,
    workers_dir,
)
from mkdcore.jobs.messages import make_sender
from mkdcore.jobs.store import JobStore, atomic_write, default_runs_dir, read_json
from workers import drain
from workers.gpu import gpu_stats

log = get_logger("mkd.heartbeat")


def worker_gpus() -> list[int]:
    """The GPUs this worker owns (``MKD_WORKER_GPU``, set by ``mkd worker``); [] for CPU."""
    value = settings.WORKER_GPU.get() or ""
    return [int(v) for v in value.split(",") if v.strip().isdigit()]


def worker_devices() -> int:
    """Devices this worker owns: its GPUs, or ``MKD_WORKER_DEVICES`` ranks for a CPU worker."""
    gpus = worker_gpus()
    if gpus:
        return len(gpus)
    value = settings.WORKER_DEVICES.get() or "1"
    return max(1, int(value)) if value.strip().isdigit() else 1


def task_path(node: str, runs_dir: Path) -> Path:
    """The file in which the task process of worker ``node`` names the stage it runs."""
    return workers_dir(runs_dir) / f"{node}.task.json"


def beat_payload(node: str, runs_dir: Path, stopped: bool = False) -> dict[str, Any]:
    import psutil

    task = read_json(task_path(node, runs_dir))
    if task is not None and task.get("worker_pid") != os.getpid():
        task = None  # a dead predecessor's (same node name): not what this worker runs
    rss = 0
    try:
        me = psutil.Process()
        rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
    except psutil.Error:
        pass
    return {
        "node": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": settings.WORKER_QUEUES.get() or "",
        "devices": worker_devices(),
        "gpus": [gpu_stats(i) for i in worker_gpus()],  # [] for a CPU worker
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "rss_mib": round(rss / 2**20),
        "task": task,
        "time": time.time(),
        "stopped": stopped,
    }


def write_beat(node: str, runs_dir: Path, stopped: bool = False) -> dict[str, Any]:
    beat = beat_payload(node, runs_dir, stopped)
    text = json.dumps(beat)
    atomic_write(workers_dir(runs_dir) / f"{node}.json", text)
    other = (beat.get("task") or {}).get("runs_dir")
    if other and Path(other).absolute() != runs_dir.absolute():
        atomic_write(workers_dir(other) / f"{node}.json", text)  # jobs kept in another run dir
    return beat


def watchdog_tick(runs_dir: Path, app: Any, stale_after: float = STALE_AFTER_S) -> list:
    """Re-queue lost stages of this run directory and dispatch them (one pass)."""
    store = JobStore(runs_dir)
    if not store.root.is_dir():
        return []
    beats = read_heartbeats(runs_dir)
    with store.transaction() as tx:
        changes = recover_stale(tx, beats, stale_after=stale_after)
        for job_id, stage, what in changes:
            log.warning("watchdog: %s/%s %s", job_id, stage, what)
        # Also queues stages a failed publish left pending (broker briefly down).
        dispatch(tx, make_sender(app), raise_errors=False)
    return changes


def recover_predecessor(node: str, runs_dir: Path, app: Any) -> str | None:
    """Re-queue the stage a dead worker of the same node name left ``running``.

    Called once at start-up, before this worker runs anything, so any task file of
    ``node`` is a predecessor's. If that process still lives (same pid *and* start time:
    a second worker started under this name), it is left alone. Returns what was done.
    """
    path = task_path(node, runs_dir)
    task = read_json(path)
    if task is None:
        return None
    owner = {"pid": task.get("worker_pid"), "start": task.get("worker_start")}
    if owner["pid"] != os.getpid() and procinfo.same_process(owner):
        log.warning("task file %s belongs to live process %s (another worker named %s?); left alone", path, owner["pid"], node)
        return None
    what = "nothing to do (the stage is no longer running there)"
    try:
        store = JobStore(task["runs_dir"])
        with store.transaction() as tx:
            job = tx.get(task["job"])
            stage = job.stage(task["stage"])
            if stage.state == "running" and stage.token == task["token"] and stage.worker == node:
                why = f"worker {node} died (pid {owner['pid']}) and was restarted"
                what = f"{job.id}/{stage.name} {requeue_lost(job, stage, why, time.time())} ({why})"
            dispatch(tx, make_sender(app), raise_errors=False)
    except (KeyError, TypeError, MkdError) as exc:  # a damaged task file, or the job was deleted
        what = f"ignored unusable task file ({type(exc).__name__}: {exc})"
    path.unlink(missing_ok=True)
    log.warning("start-up: predecessor's task: %s", what)
    return what


class Heartbeat(threading.Thread):
    """The heartbeat + watchdog thread of one worker."""

    def __init__(self, node: str, runs_dir: Path, app: Any, every: float = HEARTBEAT_EVERY_S) -> None:
        super().__init__(name="mkd-heartbeat", daemon=True)
        self.node, self.runs_dir, self.app, self.every = node, runs_dir, app, every
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                write_beat(self.node, self.runs_dir)
                watchdog_tick(self.runs_dir, self.app)
            except Exception as exc:  # a full disk must not kill the worker
                log.error("heartbeat: %s: %s", type(exc).__name__, exc)
            self.stop_event.wait(self.every)


_thread: Heartbeat | None = None


@worker_ready.connect
def _start(sender=None, **_: Any) -> None:
    global _thread
    node = settings.NODE.get() or getattr(sender, "hostname", None) or socket.gethostname()
    drain.clear(node, default_runs_dir())  # a stop request of a predecessor is not ours
    try:
        recover_predecessor(node, default_runs_dir(), sender.app)
    except Exception as exc:  # a full disk or broken record must not stop the worker; the watchdog retries
        log.error("start-up recovery: %s: %s", type(exc).__name__, exc)
    _thread = Heartbeat(node, default_runs_dir(), sender.app)
    _thread.start()
    log.info("heartbeat every %.1f s to %s (stale after %.0f s)", HEARTBEAT_EVERY_S, workers_dir(default_runs_dir()), STALE_AFTER_S)


@worker_shutting_down.connect
def _hand_back(sender=None, sig: str | None = None, how: str | None = None, **_: Any) -> None:
    """Warm shutdown began (SIGTERM, Ctrl-C): Celery stops taking messages and waits for
    the running task; ask that task to checkpoint its stage and hand it back now."""
    node = settings.NODE.get() or sender or socket.gethostname()
    try:
        drain.request_stop(node, default_runs_dir(), f"worker {node} stopping ({sig or 'signal'}, {how or 'warm'} shutdown)")
    except Exception as exc:  # a full disk: the stage then runs to its end, as Celery's warm shutdown does
        log.error("could not ask the running stage to stop: %s: %s", type(exc).__name__, exc)


@worker_shutdown.connect
def _stop(sender=None, **_: Any) -> None:
    if _thread is not None:
        _thread.stop_event.set()
        try:
            write_beat(_thread.node, _thread.runs_dir, stopped=True)
            drain.clear(_thread.node, _thread.runs_dir)
        except OSError:
            pass
