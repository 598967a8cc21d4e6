"""Turning a config (or a sweep grid of configs) into job records and queued stages."""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mkdcore.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    parse_override,
    read_yaml,
    stable_hash,
)
from mkdcore.errors import ConfigError, MkdError
from mkdcore.jobs.model import JobRecord, StageRecord, new_job_id
from mkdcore.jobs.store import JobStore, atomic_write
from mkdcore.names import experiment_name, sweep_member_name


class DuplicateJob(MkdError):
    """The same config (and code version) was submitted before."""


@dataclass
class Member:
    """One experiment of a submission: its overrides, validated config and label."""

    label: str
    data: dict[str, Any]
    cfg: ExperimentConfig


def sweep_grid(sweeps: list[str] | tuple[str, ...]) -> list[list[str]]:
    """``["a.b=1,2", "c=x,y"]`` -> the overrides of every grid point (cartesian product)."""
    axes = []
    for item in sweeps:
        path, _ = parse_override(item)  # validates KEY=...
        key, _, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--sweep {item!r}: no values (expected KEY=V1,V2,...)")
        axes.append([f"{key.strip()}={v}" for v in values])
    return [list(point) for point in itertools.product(*axes)] if axes else [[]]


def load_members(config: str | Path | None, overrides: list[str], sweeps: list[str], check_plugins: bool = True) -> list[Member]:
    """Read, override and validate every member config (plugin options included)."""
    base = read_yaml(Path(config)) if config is not None else {}
    source = str(config) if config is not None else "<defaults>"
    members = []
    for point in sweep_grid(sweeps):
        data = apply_overrides(base, list(overrides) + point)
        cfg = config_from_dict(data, source, check_plugins=check_plugins)
        label = ",".join(f"{p.split('=')[0].split('.')[-1]}={p.split('=', 1)[1]}" for p in point)
        members.append(Member(label, data, cfg))
    return members


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
        resolved["name"] = sweep_member_name(cfg.name, member.label)  # --sweep values are free text
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
