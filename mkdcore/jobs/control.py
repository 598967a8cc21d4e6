"""Cancel and retry: requests written to the job record, which every worker watches.

Cancel never relies on Celery's ``revoke(terminate=True)`` (it signals only the pool
process, not the trainer's process group, and is lost for a busy or restarted worker):

- queued/waiting/pending stages are marked cancelled (their messages are also revoked,
  and a worker that still receives one drops it because the stage is no longer queued);
- a running stage's worker sees ``cancel_requested`` within half a second, SIGTERMs the
  stage's process group, waits ``cancel_grace_s`` for a checkpoint, then SIGKILLs it;
- a running stage nobody runs any more (its worker is silent, or alive but running
  something else: killed and restarted under the same name) is marked cancelled at once
  (and its process group is ended here if it runs on this host).

Retry treats such a lost stage like a failed one: it is put back and resumes.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from mkdcore.errors import MkdError
from mkdcore.jobs.heartbeats import lost_reason, read_heartbeats
from mkdcore.jobs.model import JobRecord
from mkdcore.jobs.store import JobStore


class NothingToDo(MkdError):
    """The job is in a state where the request makes no sense."""


def cancel(store: JobStore, job_id: str, grace_s: float | None = None, revoke=None) -> JobRecord:
    """Record the cancel request; returns the record as written."""
    from mkdcore.parallel import terminate_group

    beats = read_heartbeats(store.runs_dir)
    revoked: list[str] = []
    orphans: list[int] = []
    with store.transaction() as tx:
        job = tx.get(store.resolve(job_id))
        if job.state in ("succeeded", "failed", "cancelled") and not any(s.state == "running" for s in job.stages):
            raise NothingToDo(f"job {job.id} is already {job.state}; nothing to cancel")
        job.cancel_requested = True
        if grace_s is not None:
            job.cancel_grace_s = grace_s
        now = time.time()
        for s in job.stages:
            if s.state in ("pending", "waiting", "queued"):
                if s.state == "queued" and s.token:
                    revoked.append(s.token)
                s.state, s.finished_at, s.message = "cancelled", now, "cancelled before it started"
            elif s.state == "running" and (why := lost_reason(s, beats.get(s.worker or ""), now=now)):
                if s.host == socket.gethostname() and s.pid:
                    orphans.append(s.pid)
                s.state, s.finished_at, s.message = "cancelled", now, f"cancelled ({why})"
        job.finished_at = now if job.state == "cancelled" else None
    for pgid in orphans:
        terminate_group(pgid, job.cancel_grace_s)
    if revoked and revoke is not None:
        try:
            revoke(revoked)
        except Exception:
            pass  # the record already says cancelled; workers drop these messages anyway
    return job


def wait_until_stopped(store: JobStore, job_id: str, timeout: float) -> JobRecord:
    """Poll the record until no stage of the job runs (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.load(job_id)
        if not any(s.state == "running" for s in job.stages) or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def retry(store: JobStore, job_id: str, send) -> tuple[JobRecord, list[str]]:
    """Put failed/cancelled stages back (attempts reset); they resume from checkpoints.

    Queued stages are sent again too, with a new token: a message reserved by a worker that
    died before claiming it would otherwise wait for Redis's 30-day visibility timeout; the
    old message, should it ever arrive, no longer matches the token and is dropped."""
    from mkdcore.jobs.dispatch import dispatch

    beats = read_heartbeats(store.runs_dir)
    with store.transaction() as tx:
        job = tx.get(store.resolve(job_id))
        lost = {s.name for s in job.stages if s.state == "running" and lost_reason(s, beats.get(s.worker or ""))}
        if any(s.state == "running" and s.name not in lost for s in job.stages):
            raise NothingToDo(f"job {job.id} is running; cancel it first (`mkd cancel {job.id}`)")
        again = [s.name for s in job.stages if s.state in ("failed", "cancelled", "queued") or s.name in lost]
        if not again:
            raise NothingToDo(f"job {job.id} is {job.state}; nothing failed, cancelled or queued to retry")
        job.cancel_requested = False
        job.finished_at = None
        for s in job.stages:
            if s.name in again:
                s.state, s.token, s.attempts, s.exit_code, s.pid = "pending", None, 0, None, None
                s.message, s.finished_at = "retried", None
        dispatch(tx, send)
    return store.load(job.id), again


def revoker(app: Any):
    """``revoke(ids)`` via Celery's broadcast (fire and forget: no reply is awaited)."""
    return lambda ids: app.control.revoke(ids)
