"""``mkd worker``: one Celery worker process per GPU (or one CPU worker).

This parent process only counts GPUs (NVML / nvidia-smi, never torch, so CUDA is never
initialised before a fork) and supervises the Celery workers it starts, one per GPU with
``CUDA_VISIBLE_DEVICES`` pinned, concurrency 1, a unique node name and two queues: the
shared one and its own (``<queue>.<host>.gpu<i>``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import click

from mkdcore.errors import MkdError, ServiceError


def worker_specs(gpus: str | None, cpu: bool, queue: str, name: str | None) -> list[dict]:
    """One dict per Celery worker to start: node name, queues, environment."""
    from workers.gpu import count_gpus

    host = socket.gethostname()
    base = name or "mkd"
    if cpu:
        indices: list[int | None] = [None]
    elif gpus:
        try:
            indices = [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise MkdError(f"--gpus {gpus!r}: expected comma-separated GPU indices, e.g. 0,1") from None
    else:
        n = count_gpus()
        indices = list(range(n)) if n else [None]
    specs = []
    for idx in indices:
        tag = "cpu" if idx is None else f"gpu{idx}"
        own = f"{queue}.{host}.{tag}"
        specs.append({
            "node": f"{base}-{tag}@{host}",
            "queues": f"{queue},{own}",
            "env": {"CUDA_VISIBLE_DEVICES": "" if idx is None else str(idx), "MKD_WORKER_GPU": "" if idx is None else str(idx)},
        })
    return specs


def celery_argv(spec: dict, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
            "-n", spec["node"], "-Q", spec["queues"], "-c", "1", "--pool", "prefork",
            "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "-l", loglevel]


def _already_running(runs_dir: str, node: str) -> int | None:
    from mkdcore.jobs.heartbeats import is_stale, read_heartbeats
    from mkdcore.parallel import pid_alive

    beat = read_heartbeats(runs_dir).get(node)
    if beat and not is_stale(beat) and beat.get("host") == socket.gethostname() and pid_alive(beat.get("pid")):
        return int(beat["pid"])
    return None


@click.command()
@click.option("--gpus", default=None, help="GPU indices, e.g. 0,1 (default: every GPU NVML sees).")
@click.option("--cpu", is_flag=True, help="Run one CPU worker (no GPU).")
@click.option("--queue", default="mkd", show_default=True, help="Shared queue to consume.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (job records, heartbeats); default MKD_RUNS_DIR or ./runs. Shared storage for several machines.")
@click.option("--name", default=None, help="Node name prefix (unique per machine; default 'mkd').")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(gpus: str | None, cpu: bool, queue: str, runs_dir: str | None, name: str | None, loglevel: str) -> None:
    """Start queue workers here: one per GPU (concurrency 1), or one CPU worker."""
    from mkdcore.jobs.broker import broker_url, ping_redis, redact
    from mkdcore.jobs.store import default_runs_dir

    url = broker_url()
    ping_redis(url)
    runs = os.path.abspath(runs_dir) if runs_dir else str(default_runs_dir())
    specs = worker_specs(gpus, cpu, queue, name)
    for spec in specs:
        pid = _already_running(runs, spec["node"])
        if pid:
            raise ServiceError(f"worker {spec['node']} already runs (pid {pid}); stop it or pass --name")
    procs = []
    for spec in specs:
        env = dict(os.environ, MKD_RUNS_DIR=runs, MKD_NODE=spec["node"], MKD_WORKER_QUEUES=spec["queues"], MKD_BROKER_URL=url,
                   **spec["env"])
        click.echo(f"worker {spec['node']}: queues {spec['queues']}, broker {redact(url)}, runs {runs}", err=True)
        procs.append(subprocess.Popen(celery_argv(spec, loglevel), env=env))

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for p in procs:
        while True:
            try:
                codes.append(p.wait())
                break
            except KeyboardInterrupt:
                time.sleep(0.1)
    raise SystemExit(max((abs(c) for c in codes), default=0))
