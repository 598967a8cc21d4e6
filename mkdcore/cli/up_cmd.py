"""``mkd up`` / ``mkd down``: Redis on loopback plus local workers, in the background."""

from __future__ import annotations

import os

import click


@click.command()
@click.option("--gpus", default=None, help="GPU indices for the worker (default: all GPUs, else CPU).")
@click.option("--cpu", is_flag=True, help="Start a CPU worker.")
@click.option("--port", default=6379, show_default=True, help="Redis port (bound to --bind).")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Redis address (loopback unless you need other machines).")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None, help="Default MKD_RUNS_DIR or ./runs.")
def up(gpus: str | None, cpu: bool, port: int, bind: str, runs_dir: str | None) -> None:
    """Start a local Redis and workers (idempotent); state in MKD_STATE_DIR or ~/.mkd."""
    from mkdcore.jobs.local import state_dir
    from mkdcore.jobs.local import up as start
    from mkdcore.jobs.store import default_runs_dir

    st = start(port, bind, gpus, cpu, os.path.abspath(runs_dir) if runs_dir else str(default_runs_dir()))
    click.echo(f"redis pid {st['redis_pid']} at {st['url']}; worker pid {st['worker_pid']} (runs {st['runs_dir']})")
    click.echo(f"logs: {state_dir()}; stop with `mkd down`")
    if st["url"] != "redis://127.0.0.1:6379/0":
        click.echo(f"export MKD_BROKER_URL={st['url']}")


@click.command()
@click.option("--grace", default=30.0, show_default=True, type=float, help="Seconds for a running stage to checkpoint.")
def down(grace: float) -> None:
    """Stop what `mkd up` started (process groups: worker first, then Redis).

    A recorded PID is signalled only if its start time and command line still match what
    `mkd up` recorded: a reused PID belongs to someone else and is left alone."""
    from mkdcore.jobs.local import down as stop

    stopped, warnings = stop(grace)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo("stopped " + ", ".join(stopped) if stopped else "nothing was running")
