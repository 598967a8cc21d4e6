"""``mkd worker``: one Celery worker process per GPU (or one CPU worker).

This parent process only counts GPUs (NVML / nvidia-smi, never torch, so CUDA is never
initialised before a fork) and supervises the Celery workers it starts, one per GPU with
``CUDA_VISIBLE_DEVICES`` pinned, concurrency 1, a unique node name and two queues: the
shared one and its own (``<queue>.<host>.gpu<i>``).

A Celery worker that exits on its own (a crash, OOM, ``kill -9``) is started again under
the same node name, after a backoff that doubles on quick repeated deaths; the new one
re-queues the stage the dead one was running (:mod:`workers.heartbeat`). A clean stop is
not restarted: SIGTERM/SIGINT to this parent (forwarded to every worker), or a worker that
exits with code 0 (Celery's warm shutdown, e.g. ``celery control shutdown``).
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

#: First and longest wait before restarting a worker that died (doubling in between).
RESTART_BACKOFF_S = (1.0, 60.0)
#: A worker that ran this long before dying is restarted after the first backoff again.
HEALTHY_AFTER_S = 120.0


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
    envs = [dict(os.environ, MKD_RUNS_DIR=runs, MKD_NODE=spec["node"], MKD_WORKER_QUEUES=spec["queues"],
                 MKD_BROKER_URL=url, **spec["env"]) for spec in specs]
    for spec in specs:
        click.echo(f"worker {spec['node']}: queues {spec['queues']}, broker {redact(url)}, runs {runs}", err=True)
    sup = Supervisor([celery_argv(spec, loglevel) for spec in specs], envs, [spec["node"] for spec in specs])
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    raise SystemExit(sup.run())


class Supervisor:
    """Keeps one process per argv running until stopped; see the module docstring."""

    def __init__(self, argvs: list[list[str]], envs: list[dict[str, str]], names: list[str],
                 backoff: tuple[float, float] = RESTART_BACKOFF_S, healthy_after: float = HEALTHY_AFTER_S) -> None:
        self.argvs, self.envs, self.names = argvs, envs, names
        self.backoff, self.healthy_after = backoff, healthy_after
        self.procs: list[subprocess.Popen | None] = [None] * len(argvs)
        self.started = [0.0] * len(argvs)
        self.delay = [backoff[0]] * len(argvs)
        self.restart_at: list[float | None] = [None] * len(argvs)
        self.codes: list[int | None] = [None] * len(argvs)
        self.stopping = False

    def stop(self, signum: int, _frame=None) -> None:
        """Signal handler: forward the signal; nothing is restarted from now on."""
        self.stopping = True
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signum)

    def _start(self, i: int) -> None:
        self.procs[i] = subprocess.Popen(self.argvs[i], env=self.envs[i])
        self.started[i], self.restart_at[i] = time.monotonic(), None
        if self.stopping:  # the stop signal came while it was being started
            self.procs[i].send_signal(signal.SIGTERM)

    def _reaped(self, i: int, code: int) -> None:
        """Worker ``i`` exited with ``code``: done for good, or restart after a backoff."""
        self.procs[i] = None
        if self.stopping or code == 0:
            self.codes[i] = code
            if not self.stopping:
                _log(f"worker {self.names[i]} stopped cleanly (exit code 0); not restarted")
            return
        ran = time.monotonic() - self.started[i]
        if ran >= self.healthy_after:
            self.delay[i] = self.backoff[0]
        wait = self.delay[i]
        self.delay[i] = min(self.backoff[1], wait * 2)
        self.restart_at[i] = time.monotonic() + wait
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        _log(f"worker {self.names[i]} died ({how}) after {ran:.0f} s; restarting in {wait:.0f} s")

    def run(self) -> int:
        """Start every worker and supervise until all have stopped; the exit code."""
        for i in range(len(self.argvs)):
            self._start(i)
        while True:
            pending = False
            for i, p in enumerate(self.procs):
                if p is not None:
                    code = p.poll()
                    if code is None:
                        pending = True
                    else:
                        self._reaped(i, code)
                        pending = pending or self.restart_at[i] is not None
                elif self.restart_at[i] is not None:
                    if self.stopping:
                        self.restart_at[i], self.codes[i] = None, 0
                    elif time.monotonic() >= self.restart_at[i]:
                        _log(f"worker {self.names[i]}: restarting")
                        self._start(i)
                        pending = True
                    else:
                        pending = True
            if not pending:
                return max((abs(c) for c in self.codes if c is not None), default=0)
            time.sleep(0.5)


def _log(line: str) -> None:
    click.echo(f"[mkd worker {time.strftime('%Y-%m-%d %H:%M:%S')}] {line}", err=True)
