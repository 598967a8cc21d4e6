"""``mkd submit``: validate a config (or a sweep grid), record the job(s), queue stages."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import click

from mkdcore.cli.options import config_overrides


def _profile(config: str, overrides: tuple[str, ...]) -> str:
    """The cost profile line from `mkd profile CONFIG --json` (if that command exists)."""
    if importlib.util.find_spec("mkdcore.cli.profile_cmd") is None:
        return "cost profile: unavailable (`mkd profile` is not installed)"
    argv = [sys.executable, "-m", "mkdcore.cli.main", "profile", config, "--json"]
    for o in overrides:
        argv += ["--set", o]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        data = json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        data = None
    if data is None:
        return "cost profile: unavailable (`mkd profile` failed)"
    return "cost profile: " + json.dumps(data)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@config_overrides
@click.option("--name", default=None, help="Job name (default: the config's name).")
@click.option("--priority", default=5, show_default=True, type=click.IntRange(0, 9), help="0..9, higher runs first.")
@click.option("--queue", default="mkd", show_default=True, help="Queue to put the stages on.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2", help="Submit the grid over these values as one group (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the resolved DAG and cost profile; queue nothing.")
@click.option("--force", is_flag=True, help="Submit even if the same config and code were submitted before.")
@click.option("--grace", default=30.0, show_default=True, type=float, help="Seconds a cancelled stage gets to checkpoint.")
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(1, 100), help="Starts per stage before it fails (worker lost).")
def submit(config: str, overrides: tuple[str, ...], name: str | None, priority: int, queue: str, sweeps: tuple[str, ...],
           dry_run: bool, force: bool, grace: float, max_attempts: int) -> None:
    """Queue an experiment's stages on the workers; prints the job id last."""
    from mkdcore.config import validate_plugin_options
    from mkdcore.jobs.broker import broker_url, ping_redis
    from mkdcore.jobs.dispatch import stage_done_on_disk
    from mkdcore.jobs.messages import make_sender
    from mkdcore.jobs.submit import (
        build_job,
        git_sha,
        load_members,
        new_group_id,
        record_and_dispatch,
    )
    from mkdcore.preflight import check_experiment
    from mkdcore.stages.dag import plan

    members = load_members(config, list(overrides), list(sweeps), check_plugins=False)
    url = broker_url()
    if not dry_run:
        ping_redis(url)  # before anything is recorded: one line saying what to do
    for m in members:
        validate_plugin_options(m.cfg, config)
        # what would fail a stage on a worker hours from now fails here, also in --dry-run
        nodes = plan(m.cfg)
        by_name, memo = {n.name: n for n in nodes}, {}
        pending = [n for n in nodes if not n.freshness(by_name, memo)]
        check_experiment(m.cfg, pending, where=f"{config}[{m.label}]" if m.label else config)
    code = git_sha()
    group = new_group_id() if len(members) > 1 else None
    jobs = [build_job(m, name=name, group=group, priority=priority, queue=queue, code=code, grace_s=grace,
                      max_attempts=max_attempts) for m in members]
    if dry_run:
        for job, _ in jobs:
            click.echo(f"{job.name}  (config hash {job.config_hash}, runs {job.runs_dir})")
            for s in job.stages:
                done = " [done]" if stage_done_on_disk(job, s) else ""
                click.echo(f"  {s.name:20s} key {s.key}  after {', '.join(s.deps) or '-'}{done}")
        click.echo(_profile(config, overrides))
        return
    from workers.celery_app import make_app

    app = make_app(url)
    recorded = record_and_dispatch(jobs, make_sender(app, {j.id: r for j, r in jobs}), force=force)
    if group:
        click.echo(f"group {group}: {len(recorded)} jobs")
    for job in recorded:
        click.echo(f"submitted {job.id}  {job.name}  ({len(job.stages)} stages, priority {job.priority}, queue {job.queue})")
    click.echo(group or recorded[-1].id)
