"""Turning a config (or a sweep grid of configs) into job records and queued stages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mkdcore.config import ExperimentConfig, config_from_dict, stable_hash
from mkdcore.errors import MkdError
from mkdcore.jobs.model import JobRecord, StageRecord, new_job_id
from mkdcore.jobs.store import JobStore, atomic_write
from mkdcore.names import experiment_name
from mkdcore.sweep import Member, load_members, sweep_grid  # noqa: F401 (the submit API)


class DuplicateJob(MkdError):
    """The same config (and code version) was submitted before."""


def git_sha(cwd: str | Path = ".") -> str | None:
    """The code version (HEAD) if this is a git checkout; part of the dedupe hash."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=2)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def config_hash(cfg: ExperimentConfig, code: str | None) -> str:
    """Identity of an experiment: the config minus its display name, plus the code version."""
    dump = cfg.model_dump(mode="json")
    dump.pop("name", None)
    return stable_hash({"config": dump, "code": code}, length=16)


def resolved_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as the stages will read it: the run directory made absolute."""
    dump = cfg.model_dump(mode="json")
    dump["runtime"]["runs_dir"] = str(Path(cfg.runtime.runs_dir).absolute())
    return dump


def plan_stages(cfg: ExperimentConfig) -> list[StageRecord]:
    from mkdcore.stages.dag import plan

    return [StageRecord(name=n.name, kind=n.kind, key=n.key, deps=list(n.deps), stage_dir=str(Path(n.stage_dir).absolute()))
            for n in plan(cfg)]


def build_job(member: Member, *, name: str | None, group: str | None, priority: int, queue: str,
              code: str | None, grace_s: float, max_attempts: int) -> tuple[JobRecord, dict[str, Any]]:
    cfg = member.cfg
    resolved = resolved_config(cfg)
    runs_dir = resolved["runtime"]["runs_dir"]
    job_id = new_job_id()
    job_name = experiment_name(name, "job name (--name)") if name is not None else cfg.name
    if member.label:
        job_name = f"{job_name}[{member.label}]"
        # each member reports into its own runs/<experiment>/ folder, tagged with the group
        resolved["name"] = member.run_name  # --sweep values are free text: sanitised, collisions told apart
    if group is not None:
        resolved["group"] = group
    store = JobStore(runs_dir)
    job = JobRecord(
        id=job_id, name=job_name, group=group, config_hash=config_hash(cfg, code),
        config_file=str(store.job_dir(job_id) / "config.yaml"), cwd=os.getcwd(), runs_dir=runs_dir,
        priority=max(0, min(9, priority)), queue=queue, cancel_grace_s=grace_s, max_attempts=max_attempts,
        stages=plan_stages(config_from_dict(resolved, check_plugins=False)),
    )
    return job, resolved


def find_duplicate(store: JobStore, digest: str) -> JobRecord | None:
    for job in store.all():
        if job.config_hash == digest:
            return job
    return None


def record_and_dispatch(jobs: list[tuple[JobRecord, dict[str, Any]]], send, force: bool = False) -> list[JobRecord]:
    """Write the job records and configs, then queue their ready stages (one transaction)."""
    from mkdcore.jobs.dispatch import dispatch

    if not jobs:
        return []
    store = JobStore(jobs[0][0].runs_dir)
    with store.transaction() as tx:
        if not force:
            for job, _ in jobs:
                dup = find_duplicate(store, job.config_hash)
                if dup is not None:
                    raise DuplicateJob(
                        f"{job.name}: the same config and code were submitted as job {dup.id} ({dup.state}); "
                        f"see `mkd status {dup.id}`, `mkd retry {dup.id}`, or pass --force"
                    )
        for job, resolved in jobs:
            atomic_write(Path(job.config_file), yaml.safe_dump(resolved, sort_keys=False), "job config")
            tx.add(job)
        try:
            dispatch(tx, send)
        except Exception as exc:  # nothing is recorded: the transaction is not committed
            from mkdcore.errors import ServiceError
            from mkdcore.jobs.broker import broker_url, redact

            raise ServiceError(f"could not queue on {redact(broker_url())} ({type(exc).__name__}: {exc}); "
                               "check Redis (`mkd doctor`), or use `mkd run`") from None
    return [job for job, _ in jobs]


def new_group_id() -> str:
    return "g" + new_job_id()[1:]
