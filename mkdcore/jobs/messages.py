"""The stage message on the broker: plain JSON, re-validated by the worker.

A message names the job, the stage and the stage's lease token, and carries the
resolved config as a JSON object (never pickle): the worker validates both the message
and the config before anything runs, and drops it (logged) when either is invalid or the
token is stale.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mkdcore.jobs.capacity import queue_for, stage_devices
from mkdcore.jobs.model import JobRecord, StageRecord

TASK_NAME = "mkd.run_stage"


class StageMessage(BaseModel):
    """The keyword arguments of the ``mkd.run_stage`` task."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    stage: str
    token: str
    runs_dir: str
    config_hash: str
    config: dict[str, Any]


def celery_priority(priority: int) -> int:
    """mkd priority (0..9, higher first) -> kombu Redis priority (0 served first)."""
    return 9 - max(0, min(9, int(priority)))


def make_sender(app: Any, configs: dict[str, dict[str, Any]] | None = None):
    """A :data:`mkdcore.jobs.dispatch.Sender` that publishes with ``app``.

    ``configs`` caches job id -> config dict (read from the job's config.yaml otherwise).
    The stage goes to the queue of its device count (:mod:`mkdcore.jobs.capacity`), which
    is recorded on the stage (the caller holds the store transaction).
    """
    import yaml

    cache = dict(configs or {})

    def send(job: JobRecord, stage: StageRecord) -> None:
        if job.id not in cache:
            with open(job.config_file) as fh:
                cache[job.id] = yaml.safe_load(fh) or {}
        msg = StageMessage(job_id=job.id, stage=stage.name, token=stage.token or "", runs_dir=job.runs_dir,
                           config_hash=job.config_hash, config=cache[job.id])
        stage.devices = stage_devices(cache[job.id], stage.kind)
        queue = queue_for(job.queue, stage.devices)
        app.send_task(TASK_NAME, kwargs=msg.model_dump(), queue=queue, routing_key=queue,
                      priority=celery_priority(job.priority), task_id=stage.token)

    return send
