"""Deciding what runs next: DAG order, shared stages once, capped recovery.

There is no Celery chain or chord: after every change (submit, a stage ending, retry,
a watchdog tick) :func:`dispatch` looks at all active jobs under the store lock and sends
one message for each stage whose dependencies have succeeded. Independent stages are
therefore queued together and run in parallel on as many workers as there are; a stage
whose content key is already being run by another job (a teacher shared by sweep
members) *waits* for it instead of running twice, and one whose manifest exists is
marked done (``cached``) without running. The decision is plain data in the job store,
so it survives a Redis restart, and it is testable without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdcore.jobs.heartbeats import HEARTBEAT_EVERY_S, STALE_AFTER_S, lost_reason
from mkdcore.jobs.model import JobRecord, StageRecord, new_token
from mkdcore.jobs.store import Transaction

#: ``send(job, stage)`` puts one stage message on the broker (raises if it cannot).
Sender = Callable[[JobRecord, StageRecord], None]


def stage_done_on_disk(job: JobRecord, stage: StageRecord) -> bool:
    """The stage's finished output may be reused: the same provenance rule as ``mkd
    run`` (:mod:`mkdcore.stages.provenance`), decided from manifests alone."""
    from mkdcore.stages import provenance

    expected = {d: Path(job.stage(d).stage_dir) for d in stage.deps}
    return provenance.check(Path(stage.stage_dir), expected).fresh


def _active_owners(jobs: list[JobRecord]) -> dict[tuple[str, str], str]:
    return {(s.kind, s.key): f"{j.id}/{s.name}" for j in jobs for s in j.stages if s.state in ("queued", "running")}


class _SendFailed(Exception):
    pass


def dispatch(tx: Transaction, send: Sender, raise_errors: bool = True) -> list[tuple[str, str]]:
    """Queue every ready stage of every active job; return ``[(job_id, stage)]`` sent.

    If the broker refuses a message the stage goes back to ``pending`` (a later dispatch,
    e.g. the next watchdog tick, queues it) and the error is raised after the records are
    consistent, unless ``raise_errors`` is False (inside workers).
    """
    try:
        return _dispatch(tx, send)
    except _SendFailed as exc:
        if raise_errors:
            raise exc.__cause__ from None
        return []


def _dispatch(tx: Transaction, send: Sender) -> list[tuple[str, str]]:
    jobs = tx.all()
    owners = _active_owners(jobs)
    sent: list[tuple[str, str]] = []
    now = time.time()
    for job in sorted(jobs, key=lambda j: (-j.priority, j.created_at)):
        if job.cancel_requested or any(s.state in ("failed", "cancelled") for s in job.stages):
            _finish(job, now)
            continue
        changed = True
        while changed:  # a cached stage can make its dependents ready in the same pass
            changed = False
            for stage in job.stages:
                if stage.state not in ("pending", "waiting"):
                    continue
                if not all(job.stage(d).state == "succeeded" for d in stage.deps):
                    continue
                if stage_done_on_disk(job, stage):
                    stage.state, stage.cached, stage.finished_at = "succeeded", True, now
                    stage.message, stage.waiting_for = "done earlier (same inputs, code and outputs): not run again", None
                    changed = True
                    continue
                owner = owners.get((stage.kind, stage.key))
                if owner and owner != f"{job.id}/{stage.name}":
                    stage.state, stage.waiting_for = "waiting", owner
                    stage.message = f"same stage is running in {owner}; waits for it"
                    continue
                stage.state, stage.token, stage.queued_at = "queued", new_token(), now
                stage.waiting_for, stage.message = None, None
                try:
                    send(job, stage)
                except Exception as exc:
                    stage.state, stage.token = "pending", None
                    stage.message = f"not queued yet: broker error ({type(exc).__name__})"
                    raise _SendFailed() from exc
                owners[(stage.kind, stage.key)] = f"{job.id}/{stage.name}"
                sent.append((job.id, stage.name))
        _finish(job, now)
    return sent


def _finish(job: JobRecord, now: float) -> None:
    if job.finished_at is None and job.state in ("succeeded", "failed", "cancelled"):
        job.finished_at = now
    elif job.state in ("queued", "running"):
        job.finished_at = None


def recover_stale(
    tx: Transaction,
    heartbeats: dict[str, dict[str, Any]],
    stale_after: float = STALE_AFTER_S,
    beat_every: float = HEARTBEAT_EVERY_S,
    now: float | None = None,
) -> list[tuple[str, str, str]]:
    """Re-queue (as pending) the running stages of silent or lost workers.

    A stage is lost when its worker's heartbeat is stale, or when the worker is alive but
    has reported for a while that it runs something else (its task process died). Each
    start counts as an attempt; after ``max_attempts`` the stage fails with a message
    instead of looping (Celery's ``task_reject_on_worker_lost`` has no such cap).
    Returns ``[(job_id, stage, what happened)]``; the caller then runs :func:`dispatch`.
    """
    now = time.time() if now is None else now
    changes = []
    for job in tx.all():
        for stage in job.stages:
            if stage.state != "running":
                continue
            why = lost_reason(stage, heartbeats.get(stage.worker or ""), stale_after, beat_every, now)
            if why is not None:
                changes.append((job.id, stage.name, requeue_lost(job, stage, why, now)))
    return changes


def requeue_lost(job: JobRecord, stage: StageRecord, why: str, now: float) -> str:
    """Take a running stage nobody runs any more back: ``cancelled`` if the job is being
    cancelled, ``failed`` once it has used ``max_attempts`` starts, else ``pending`` (the
    next dispatch queues it; it resumes from its checkpoint). Returns the new state's verb."""
    if job.cancel_requested:
        stage.state, stage.message, stage.finished_at = "cancelled", f"cancelled ({why})", now
        return "cancelled"
    if stage.attempts >= job.max_attempts:
        stage.state, stage.finished_at = "failed", now
        stage.message = f"{why}; gave up after {stage.attempts} attempts (mkd retry {job.id} to try again)"
        return "failed"
    stage.state, stage.token, stage.pid = "pending", None, None
    stage.message = f"{why}; re-queued (attempt {stage.attempts + 1} of {job.max_attempts}), resumes from its checkpoint"
    return "requeued"


def hand_back(stage: StageRecord, why: str) -> str:
    """Put a stage that checkpointed and stopped on SIGTERM (preemption, a worker asked to
    stop) back in line without charging the attempt it used: the next dispatch queues it
    and it resumes from its checkpoint on whichever worker takes it. Returns the message."""
    stage.state, stage.token, stage.pid, stage.finished_at = "pending", None, None, None
    stage.attempts = max(0, stage.attempts - 1)
    stage.preempted += 1
    stage.message = f"{why}; handed back (no attempt charged), resumes from its checkpoint"
    return stage.message
