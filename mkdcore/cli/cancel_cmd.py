"""``mkd cancel JOB``: stop a job from any machine (through its job record)."""

from __future__ import annotations

import click


@click.command()
@click.argument("job")
@click.option("--grace", default=None, type=float, help="Seconds a running stage gets to checkpoint before SIGKILL (default: the job's, 30).")
@click.option("--no-wait", is_flag=True, help="Return once the request is recorded.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None, help="Default MKD_RUNS_DIR or ./runs.")
def cancel(job: str, grace: float | None, no_wait: bool, runs_dir: str | None) -> None:
    """Cancel a job: queued stages are dropped, running ones checkpoint and stop."""
    from mkdcore.jobs.broker import broker_url
    from mkdcore.jobs.control import cancel as cancel_job
    from mkdcore.jobs.control import revoker, wait_until_stopped
    from mkdcore.jobs.store import JobStore, default_runs_dir
    from workers.celery_app import make_app

    store = JobStore(runs_dir or default_runs_dir())
    job_id = store.resolve(job)  # a bad id fails before anything is locked or written
    record = cancel_job(store, job_id, grace_s=grace, revoke=revoker(make_app(broker_url())))
    running = [s.name for s in record.stages if s.state == "running"]
    if running and not no_wait:
        click.echo(f"{record.id}: stopping {', '.join(running)} (SIGTERM, up to {record.cancel_grace_s:.0f} s to checkpoint)")
        record = wait_until_stopped(store, record.id, record.cancel_grace_s + 15)
    still = [s.name for s in record.stages if s.state == "running"]
    click.echo(f"{record.id}: {'cancel requested; still stopping ' + ', '.join(still) if still else record.state}")
