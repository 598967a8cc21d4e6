"""The durable job record: what the queue knows about a job, independent of Celery.

Celery results expire and report PENDING for ids they never saw, so the job's truth
lives here (a JSON file per job in the run directory, see :mod:`mkdcore.jobs.store`).
A job is a set of stages (the experiment DAG); each stage carries its own state,
attempt count and a lease token: a task message whose token does not match the stage's
current token is stale (redelivered or superseded) and is dropped, never run.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Job states shown to users (``unknown`` is added by ``mkd status`` for silent workers).
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")

StageState = Literal["pending", "waiting", "queued", "running", "succeeded", "failed", "cancelled"]


def new_token() -> str:
    """A fresh lease token; also used as the Celery task id of the stage message."""
    return uuid.uuid4().hex


def new_job_id() -> str:
    """Sortable, short and unique: ``j<yymmdd-HHMMSS>-<6 hex>``."""
    return "j" + time.strftime("%y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class StageRecord(BaseModel):
    """One stage of one job. ``key``/``stage_dir`` identify its content-addressed output."""

    model_config = ConfigDict(extra="ignore")

    name: str
    kind: str
    key: str
    deps: list[str] = Field(default_factory=list)
    stage_dir: str
    state: StageState = "pending"
    token: str | None = None
    attempts: int = 0  # starts charged so far (re-queues after a lost worker count; preemptions do not)
    devices: int = 1  # devices it asks for (runtime.devices for training/evaluation), set when queued
    preempted: int = 0  # times it checkpointed on SIGTERM and was handed back (no attempt charged)
    worker: str | None = None
    host: str | None = None
    pid: int | None = None  # the stage's process-group leader
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    message: str | None = None  # why it failed / was skipped / waits
    waiting_for: str | None = None  # "<job>/<stage>" running the same key
    cached: bool = False  # finished earlier (manifest present): not run again


class JobRecord(BaseModel):
    """A submitted experiment (one member of a sweep group, or a lone job)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    group: str | None = None
    config_hash: str
    config_file: str  # the resolved config the stages run with
    cwd: str  # relative paths in the config are relative to this directory
    runs_dir: str
    priority: int = 5  # 0..9, higher runs first
    queue: str = "mkd"
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    cancel_requested: bool = False
    cancel_grace_s: float = 30.0
    max_attempts: int = 3
    stages: list[StageRecord] = Field(default_factory=list)

    def stage(self, name: str) -> StageRecord:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def state(self) -> str:
        """The job's state, derived from its stages (one of :data:`JOB_STATES`)."""
        states = {s.state for s in self.stages}
        if "running" in states:
            return "running"
        if self.cancel_requested or "cancelled" in states:
            return "cancelled"
        if "failed" in states:
            return "failed"  # the dispatcher starts nothing new in a failed job
        if states <= {"succeeded"}:
            return "succeeded"
        if any(s.state == "succeeded" and not s.cached for s in self.stages):
            return "running"  # between two stages
        return "queued"

    @property
    def current(self) -> StageRecord | None:
        """The running stage, else the next one to run."""
        for wanted in ("running", "queued", "waiting", "pending"):
            for s in self.stages:
                if s.state == wanted:
                    return s
        return None

    @property
    def attempts(self) -> int:
        return sum(s.attempts for s in self.stages)

    @property
    def retries(self) -> int:
        """Starts beyond each stage's first charged one: 0 for a clean job of any size.

        A stage that ran once counts 0, one re-run after a failure or a lost worker 1; a
        preempted stage that resumed elsewhere counts 0 (preemption charges no attempt)."""
        return sum(max(0, s.attempts - 1) for s in self.stages)

    @property
    def preemptions(self) -> int:
        return sum(s.preempted for s in self.stages)
