"""The ``mkd.run_stage`` task: claim the stage, run it in a child group, record the end.

The steps and the trap each one closes:

1. Validate the message (fields, then the config against ``ExperimentConfig``); an
   invalid one is logged and dropped, never run.
2. Claim: under the store lock the stage must be ``queued`` with the message's token.
   A redelivered or superseded message (Redis visibility timeout, a watchdog re-queue)
   carries an old token and is dropped: no duplicate runs.
3. Take the stage's content lock (flock on ``<runs_dir>/locks/<kind>-<key>.lock``): even
   a stage re-queued while a partitioned worker still runs it cannot run twice at once.
4. Run ``mkd run CONFIG --stages NAME`` in its own process group, polling the job record:
   a cancel request (from any machine) SIGTERMs the group, waits the grace period for a
   checkpoint, then SIGKILLs it.
5. Record the outcome and dispatch the stages that became ready.

Preemption: a stage that exits 143 (it checkpointed on SIGTERM: SLURM preemption,
``scancel``, a spot VM going away, or this worker asked to stop) and was not cancelled is
handed back, ``pending`` then ``queued`` again with the attempt refunded, and resumes from
its checkpoint on the next worker that takes it. A worker asked to stop (``worker_shutting_down``,
:mod:`workers.drain`) or whose task process gets SIGTERM itself SIGTERMs the stage's
group first, waits the job's grace period, and hands the stage back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from pydantic import ValidationError

from mkdcore import names, procinfo, settings
from mkdcore.errors import MkdError
from mkdcore.jobs.dispatch import dispatch, hand_back
from mkdcore.jobs.messages import TASK_NAME, StageMessage, make_sender
from mkdcore.jobs.store import (
    JobNotFound,
    JobStore,
    atomic_write,
    default_runs_dir,
    read_json,
)
from mkdcore.parallel import terminate_group
from workers import drain
from workers.celery_app import app
from workers.runner import EXIT_TERMINATED, spawn_stage, stage_zygote, use_zygote
from workers.zygote import shared

log = get_task_logger("mkd.worker")

#: Seconds between two looks at the job record while a stage runs (cancel latency).
POLL_S = 0.5


def _exited_within(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``proc`` to exit: the poll interval of the stage loop,
    without a fixed sleep that would add up to ``seconds`` to every stage."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


@worker_process_init.connect
def _start_stage_zygote(**_: Any) -> None:
    """Start this task process's stage zygote now: its imports (torch ...) run while the
    worker waits for its first stage instead of after that stage is claimed."""
    if use_zygote():
        try:
            shared(stage_zygote)
        except OSError as exc:  # it could not be started (its imports run later, in it)
            log.warning("no stage zygote (%s): stages start as new interpreters", exc)


def node_name(request_hostname: str | None = None) -> str:
    return settings.NODE.get() or request_hostname or socket.gethostname()


def task_file(node: str) -> Path:
    """Where the task process tells its worker's heartbeat what it runs."""
    return default_runs_dir() / "workers" / f"{node}.task.json"


@app.task(name=TASK_NAME, bind=True, acks_late=True)
def run_stage(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
    node = node_name(getattr(self.request, "hostname", None))
    msg = validate_message(args, kwargs)
    if isinstance(msg, str):
        log.error("rejected stage message %s: %s", self.request.id, msg)
        return {"outcome": "rejected", "reason": msg}
    return StageRun(msg, node, self.app).run()


def validate_message(args: tuple, kwargs: dict[str, Any]) -> StageMessage | str:
    """The message, or why it is rejected (one line)."""
    from mkdcore.config import config_from_dict

    if args:
        return "positional arguments are not accepted"
    try:
        msg = StageMessage.model_validate(kwargs)
    except ValidationError as err:
        return f"invalid message fields: {err.errors()[0]['loc']} {err.errors()[0]['msg']}"
    try:  # both become paths (runs/jobs/<id>/logs/<stage>.log)
        names.job_id(msg.job_id)
        names.stage_name(msg.stage)
    except names.UnsafeNameError as err:
        return f"invalid message: {err}"
    try:
        config_from_dict(msg.config, source=f"job {msg.job_id}", check_plugins=False)
    except MkdError as err:
        return f"invalid config: {err}"
    return msg


class StageRun:
    """One claimed stage on this worker, from claim to recorded outcome."""

    def __init__(self, msg: StageMessage, node: str, celery_app: Any) -> None:
        self.msg = msg
        self.node = node
        self.app = celery_app
        self.store = JobStore(msg.runs_dir)
        self.worker_pid = os.getppid()  # the Celery worker's main process (we are its pool child)
        self.sigterm: str | None = None  # set by our SIGTERM handler while the stage runs

    def stop_reason(self) -> str | None:
        """Why this worker wants the stage stopped and handed back, if it does."""
        return self.sigterm or drain.stop_requested(self.node, default_runs_dir(), self.worker_pid)

    @contextlib.contextmanager
    def _sigterm_handback(self):
        """While the stage runs, SIGTERM to this task process (SLURM signals every process
        of a step; Celery resets the pool child's handler to "die") means: stop the stage
        gracefully and hand it back, not die and leave it to the watchdog."""
        def handle(signum: int, frame: Any) -> None:
            self.sigterm = "the worker's task process got SIGTERM"

        try:
            previous = signal.signal(signal.SIGTERM, handle)
        except ValueError:  # not the main thread (a thread pool): the stop file still works
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    # ----------------------------------------------------------------- claim
    def claim(self) -> str | None:
        """Mark the stage running; return why not (stale token, cancelled...) or None."""
        m = self.msg
        with self.store.transaction() as tx:
            try:
                job = tx.get(m.job_id)
            except JobNotFound:
                return f"no job record {m.job_id} in {self.store.root}"
            if job.config_hash != m.config_hash:
                return f"config hash {m.config_hash} does not match job {m.job_id}"
            try:
                stage = job.stage(m.stage)
            except KeyError:
                return f"job {m.job_id} has no stage {m.stage!r}"
            if stage.token != m.token or stage.state != "queued":
                return f"stale message for {m.job_id}/{m.stage} (stage is {stage.state}); dropped"
            if job.cancel_requested:
                stage.state, stage.finished_at, stage.message = "cancelled", time.time(), "cancelled before it started"
                return "job cancelled before the stage started"
            stage.state, stage.attempts = "running", stage.attempts + 1
            stage.worker, stage.host, stage.started_at = self.node, socket.gethostname(), time.time()
            stage.pid, stage.exit_code, stage.message = None, None, None
            self.job = job.model_copy(deep=True)
        return None

    # ------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        m = self.msg
        why = self.claim()
        if why:
            log.warning("%s", why)
            return {"outcome": "dropped", "reason": why}
        stage = self.job.stage(m.stage)
        log.info("running %s/%s (attempt %d) on %s", m.job_id, m.stage, stage.attempts, self.node)
        # The Celery worker (our parent) is named in the file: a worker restarted under the
        # same node name recognises a dead predecessor's task (workers.heartbeat).
        worker = os.getppid()
        self._announce({"job": m.job_id, "stage": m.stage, "token": m.token, "runs_dir": m.runs_dir, "since": time.time(),
                        "worker_pid": worker, "worker_start": procinfo.start_time(worker)})
        try:
            with self._sigterm_handback(), self._stage_lock(stage) as got:
                if got == "cancel":
                    return self._finish(None, cancelled=True, note="cancelled while waiting for the stage lock")
                if got is not True:  # asked to stop before the stage started: nothing to checkpoint
                    return self._finish(None, cancelled=False, note=f"{got} while waiting for the stage lock")
                return self._run_child()
        finally:
            self._announce(None)

    def _run_child(self) -> dict[str, Any]:
        m, job = self.msg, self.job
        proc = spawn_stage(job.config_file, m.stage, cwd=job.cwd, log_path=self.store.log_path(m.job_id, m.stage),
                           progress_file=self.store.progress_path(m.job_id))
        with self.store.transaction() as tx:
            rec = tx.get(m.job_id).stage(m.stage)
            if rec.token == m.token:
                rec.pid = proc.pid
        cancelled = lost_lease = False
        while not _exited_within(proc, POLL_S):  # wakes as soon as the stage exits
            stop = self.stop_reason()
            if stop is not None:
                grace = self.job.cancel_grace_s
                log.info("%s: SIGTERM to stage group %d, %.0f s grace to checkpoint, then hand it back", stop, proc.pid, grace)
                terminate_group(proc.pid, grace, proc)
                break
            current = self._current()
            if current is None:
                continue
            job_now, rec = current
            if rec.token != m.token or rec.state != "running":
                lost_lease = True  # re-queued elsewhere (we were thought dead): stop, no duplicate
                terminate_group(proc.pid, 5.0, proc)
                break
            if job_now.cancel_requested:
                cancelled = True
                log.info("cancel requested: SIGTERM to group %d, %.0f s grace", proc.pid, job_now.cancel_grace_s)
                terminate_group(proc.pid, job_now.cancel_grace_s, proc)
                break
        rc = proc.wait()
        if lost_lease:
            log.warning("%s/%s was re-queued elsewhere; stopped this copy", m.job_id, m.stage)
            return {"outcome": "lost-lease", "exit_code": rc}
        return self._finish(rc, cancelled=cancelled)

    def _current(self):
        try:
            job = self.store.load(self.msg.job_id)
            return job, job.stage(self.msg.stage)
        except (JobNotFound, KeyError, ValueError, OSError):
            return None

    # ---------------------------------------------------------------- finish
    def _finish(self, rc: int | None, cancelled: bool, note: str | None = None) -> dict[str, Any]:
        m = self.msg
        with self.store.transaction() as tx:
            job = tx.get(m.job_id)
            rec = job.stage(m.stage)
            if rec.token != m.token:
                return {"outcome": "lost-lease", "exit_code": rc}
            rec.exit_code, rec.finished_at, rec.pid = rc, time.time(), None
            if cancelled or job.cancel_requested:
                rec.state = "cancelled"
                rec.message = note or ("checkpointed and stopped (mkd retry resumes it)" if rc == EXIT_TERMINATED
                                       else f"cancelled (exit code {rc})")
            elif rc == 0:
                rec.state, rec.message = "succeeded", None
            elif rc is None and note:
                hand_back(rec, note)
            elif rc == EXIT_TERMINATED:
                why = self.stop_reason() or "the stage got SIGTERM (preempted)"
                hand_back(rec, f"{why}: checkpointed and stopped (exit code {rc})")
            elif rc is not None and rc < 0 and rec.attempts < job.max_attempts:
                rec.state, rec.token, rec.finished_at = "pending", None, None
                rec.message = f"stopped by a signal (exit code {rc}); re-queued, resumes from its checkpoint"
            else:
                rec.state = "failed"
                rec.message = f"exit code {rc}: {last_line(self.store.log_path(m.job_id, m.stage))}"
            outcome = rec.state
            dispatch(tx, make_sender(self.app, {m.job_id: m.config}), raise_errors=False)
        log.info("%s/%s %s (exit code %s)", m.job_id, m.stage, outcome, rc)
        return {"outcome": outcome, "exit_code": rc}

    # ----------------------------------------------------------------- locks
    @contextlib.contextmanager
    def _stage_lock(self, stage):
        """Hold the stage's content lock (yields True); yields "cancel" if the job is
        cancelled meanwhile, or the stop reason if this worker is asked to stop."""
        path = Path(self.msg.runs_dir) / "locks" / f"{stage.kind}-{stage.key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    current = self._current()
                    if current and current[0].cancel_requested:
                        yield "cancel"
                        return
                    stop = self.stop_reason()
                    if stop is not None:
                        yield stop
                        return
                    time.sleep(POLL_S)
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _announce(self, task: dict[str, Any] | None) -> None:
        path = task_file(self.node)
        try:
            if task is None:
                if (read_json(path) or {}).get("token") == self.msg.token:  # not a successor's
                    path.unlink(missing_ok=True)
            else:
                atomic_write(path, json.dumps(task))
        except OSError:
            pass  # status shows less detail; the run itself is unaffected


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (for one-line failure messages)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return (lines[-1] if lines else "no output")[:limit]
