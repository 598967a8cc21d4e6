"""``mkd retry JOB``: re-queue a job's failed or cancelled stages (they resume)."""

from __future__ import annotations

import click


@click.command()
@click.argument("job")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None, help="Default MKD_RUNS_DIR or ./runs.")
def retry(job: str, runs_dir: str | None) -> None:
    """Re-queue failed/cancelled stages; each resumes from its last checkpoint."""
    from mkdcore.jobs.broker import broker_url, ping_redis
    from mkdcore.jobs.control import retry as retry_job
    from mkdcore.jobs.messages import make_sender
    from mkdcore.jobs.store import JobStore, default_runs_dir
    from workers.celery_app import make_app

    store = JobStore(runs_dir or default_runs_dir())
    job_id = store.resolve(job)  # a bad or unknown id is the error to show, even without Redis
    url = broker_url()
    ping_redis(url)
    record, again = retry_job(store, job_id, make_sender(make_app(url)))
    click.echo(f"{record.id}: re-queued {', '.join(again)} ({record.state})")
