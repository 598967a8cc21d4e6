"""What ``mkd status`` shows: jobs from the store, workers from heartbeats, queue depth.

Nothing here waits on a worker: job states come from the job store, worker state from
heartbeat files, and the queue depth from Redis ``LLEN`` with 1 s socket timeouts.
A silent worker (or a running stage whose worker is silent) is shown as ``unknown``.
"""

from __future__ import annotations

import time
from typing import Any

from mkdcore.jobs.capacity import queue_for
from mkdcore.jobs.heartbeats import STALE_AFTER_S, is_stale, read_heartbeats
from mkdcore.jobs.model import JobRecord
from mkdcore.jobs.progress import latest_progress
from mkdcore.jobs.store import JobStore

#: kombu's separator between a queue name and its priority (Redis priority sub-queues).
PRIORITY_SEP = "\x06\x16"


def queue_depth(url: str, queues: list[str], timeout: float = 1.0) -> dict[str, int] | str:
    """Messages waiting per queue (all priorities), or why Redis could not be asked."""
    import redis

    from mkdcore.jobs.broker import redact

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        pipe = client.pipeline()
        for q in queues:
            pipe.llen(q)
            for p in range(1, 10):
                pipe.llen(f"{q}{PRIORITY_SEP}{p}")
        counts = pipe.execute()
    except Exception as exc:
        return f"unreachable at {redact(url)} ({type(exc).__name__})"
    return {q: int(sum(counts[i * 10:(i + 1) * 10])) for i, q in enumerate(queues)}


def job_summary(store: JobStore, job: JobRecord, beats: dict[str, dict[str, Any]], stale_after: float = STALE_AFTER_S) -> dict[str, Any]:
    """A JSON-ready view of one job (``state`` is one of the five job states)."""
    progress = latest_progress(store.progress_path(job.id))
    current = job.current
    cur = progress.get(current.name, {}) if current else {}
    worker_state = None
    if current is not None and current.state == "running":
        worker_state = "unknown" if is_stale(beats.get(current.worker or ""), stale_after) else "alive"
    last_val = next((progress[s.name]["val_acc"] for s in reversed(job.stages) if "val_acc" in progress.get(s.name, {})), None)
    return {
        "id": job.id,
        "name": job.name,
        "group": job.group,
        "state": job.state,
        "worker_state": worker_state,  # "unknown": the stage's worker is silent
        "stage": current.name if current else None,
        "stage_state": current.state if current else None,
        "worker": current.worker if current and current.state == "running" else None,
        "step": cur.get("step"),
        "total": cur.get("total"),
        "loss": cur.get("loss"),
        "val_acc": last_val,
        "eta_s": cur.get("eta_s"),
        "attempts": job.attempts,  # starts charged, summed over stages
        "retries": job.retries,  # starts beyond each stage's first: 0 for a clean job (the `tries` column)
        "preemptions": job.preemptions,  # stages handed back on SIGTERM (charged nothing)
        "priority": job.priority,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "stages": [
            {"name": s.name, "state": s.state, "attempts": s.attempts, "preempted": s.preempted, "devices": s.devices,
             "worker": s.worker, "cached": s.cached,
             "exit_code": s.exit_code, "message": s.message, **{k: progress.get(s.name, {}).get(k) for k in ("step", "total", "loss", "val_acc")}}
            for s in job.stages
        ],
    }


#: What ``mkd status`` shows for a GPU figure NVML could not give (no driver, no GPU).
NA = "n/a"


def gpu_row(stats: dict[str, Any]) -> dict[str, Any]:
    """One GPU of a worker as ``mkd status --json`` gives it: index, name, utilisation (%),
    memory used/total (MiB); each figure NVML did not give is ``"n/a"`` (``detail`` says why)."""
    row: dict[str, Any] = {"index": stats.get("gpu"), "name": stats.get("name", NA)}
    for key in ("utilization_pct", "memory_used_mib", "memory_total_mib"):
        value = stats.get(key)
        row[key] = NA if value is None else value
    if "detail" in stats:
        row["detail"] = stats["detail"]
    return row


def worker_rows(beats: dict[str, dict[str, Any]], stale_after: float = STALE_AFTER_S) -> list[dict[str, Any]]:
    """Per worker: state, devices, each owned GPU (:func:`gpu_row`; [] for a CPU worker),
    stage threads, memory, and the job and stage it runs."""
    rows = []
    for node, b in sorted(beats.items()):
        task = b.get("task") or {}
        rows.append({
            "node": node, "host": b.get("host"), "pid": b.get("pid"),
            "state": "stopped" if b.get("stopped") else ("unknown" if is_stale(b, stale_after) else ("busy" if task else "idle")),
            "devices": b.get("devices", 1), "gpus": [gpu_row(g) for g in b.get("gpus") or []], "threads": b.get("threads"),
            "rss_mib": b.get("rss_mib"), "job": task.get("job"), "stage": task.get("stage"),
            "heartbeat_age_s": round(b.get("age_s", 0.0), 1),
        })
    return rows


def collect(store: JobStore, url: str, job_id: str | None = None, queues: list[str] | None = None,
            limit: int = 50, stale_after: float = STALE_AFTER_S) -> dict[str, Any]:
    """Everything ``mkd status`` prints, as one JSON-ready object."""
    beats = read_heartbeats(store.runs_dir)
    if job_id is not None:
        return job_summary(store, store.load(store.resolve(job_id)), beats, stale_after)
    jobs, corrupt = store.scan()
    jobs.sort(key=lambda j: j.created_at, reverse=True)
    routed = {queue_for(j.queue, s.devices) for j in jobs for s in j.stages if s.state == "queued"}
    queue_names = sorted(set(queues or []) | {j.queue for j in jobs} | routed | {"mkd"})
    return {
        "time": time.time(),
        "runs_dir": str(store.runs_dir),
        "workers": worker_rows(beats, stale_after),
        "jobs": [job_summary(store, j, beats, stale_after) for j in jobs[:limit]],
        "jobs_total": len(jobs),
        "corrupt": [{"id": job_id, "error": error} for job_id, error in sorted(corrupt.items())],
        "queue": queue_depth(url, queue_names),
    }
