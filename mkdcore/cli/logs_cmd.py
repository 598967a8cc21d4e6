"""``mkd logs JOB [--stage S] [--follow]``: the stage logs of a job, in DAG order."""

from __future__ import annotations

import sys
import time

import click


@click.command()
@click.argument("job")
@click.option("--stage", default=None, help="Only this stage (e.g. teacher:rgb).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None, help="Default MKD_RUNS_DIR or ./runs.")
def logs(job: str, stage: str | None, follow: bool, runs_dir: str | None) -> None:
    """Print a job's stage logs (stdout and stderr of each stage run)."""
    from mkdcore.errors import MkdError
    from mkdcore.jobs.store import JobStore, default_runs_dir

    store = JobStore(runs_dir or default_runs_dir())
    job_id = store.resolve(job)
    record = store.load(job_id)
    names = [s.name for s in record.stages]
    if stage is not None and stage not in names:
        raise MkdError(f"job {job_id} has no stage {stage!r}; stages: {', '.join(names)}")
    offsets: dict[str, int] = {}
    while True:
        record = store.load(job_id)
        for s in record.stages:
            if stage is not None and s.name != stage:
                continue
            path = store.log_path(job_id, s.name)
            if not path.is_file():
                continue
            with open(path, "rb") as fh:
                fh.seek(offsets.get(s.name, 0))
                chunk = fh.read()
                offsets[s.name] = fh.tell()
            if chunk:
                for line in chunk.decode(errors="replace").splitlines():
                    click.echo(f"[{s.name}] {line}")
        if not follow or record.state in ("succeeded", "failed", "cancelled"):
            return
        sys.stdout.flush()
        time.sleep(0.5)
