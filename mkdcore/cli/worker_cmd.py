"""``mkd worker``: one Celery worker process per GPU, per group of GPUs, or per CPU worker.

This parent process only counts GPUs (NVML / nvidia-smi, never torch, so CUDA is never
initialised before a fork) and supervises the Celery workers it starts, each owning one
GPU (or ``--devices-per-worker`` GPUs) with ``CUDA_VISIBLE_DEVICES`` pinned, concurrency
1, a unique node name and its queues: the shared ones of every device count it can serve
(:mod:`mkdcore.jobs.capacity`) and its own (``<queue>.<host>.gpu<i>``). Stage children get
this machine's cores split over the workers (``OMP_NUM_THREADS``), not all of them each.

SIGTERM/SIGINT to this parent is forwarded to every Celery worker: a worker then stops
taking stages, checkpoints the running one and hands it back to the queue
(:mod:`workers.drain`); a second signal is Celery's cold shutdown.

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


def _gpu_indices(gpus: str | None) -> list[int]:
    """The GPUs to use: ``--gpus 0,1`` or every GPU NVML sees (an empty list: none)."""
    from workers.gpu import count_gpus

    if not gpus:
        return list(range(count_gpus()))
    try:
        indices = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise MkdError(f"--gpus {gpus!r}: expected comma-separated GPU indices, e.g. 0,1") from None
    if len(set(indices)) != len(indices) or any(i < 0 for i in indices):
        raise MkdError(f"--gpus {gpus!r}: each GPU index once, none negative")
    return indices


def cpu_cores() -> int:
    """Cores this process may use (its affinity: a SLURM task's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_specs(gpus: str | None, cpu: bool, queue: str, name: str | None, *, devices_per_worker: int = 1,
                 cpu_workers: int = 1, threads: int | None = None) -> list[dict]:
    """One dict per Celery worker to start: node name, queues, environment.

    GPUs are grouped ``devices_per_worker`` at a time (``--gpus 0,1 --devices-per-worker 2``:
    one worker owning both, its stage children see ``CUDA_VISIBLE_DEVICES=0,1``); a CPU
    worker with ``devices_per_worker`` N takes stages of up to N (gloo) ranks. Each worker
    consumes the shared queues of every device count it can serve
    (:func:`mkdcore.jobs.capacity.queues_of_worker`) and its own queue. Stage threads:
    ``threads``, else this process's cores split evenly over the workers it starts
    (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of the stage children; an
    ``OMP_NUM_THREADS`` already set is kept, and a config's ``runtime.threads`` wins).
    """
    from mkdcore.jobs.capacity import queues_of_worker

    if devices_per_worker < 1:
        raise MkdError(f"--devices-per-worker {devices_per_worker}: must be at least 1")
    host = socket.gethostname()
    base = name or "mkd"
    indices = [] if cpu else _gpu_indices(gpus)
    groups: list[list[int]]
    if indices:
        if len(indices) % devices_per_worker:
            raise MkdError(f"{len(indices)} GPUs ({','.join(map(str, indices))}) do not split into workers of "
                           f"{devices_per_worker} (--devices-per-worker)")
        groups = [indices[i:i + devices_per_worker] for i in range(0, len(indices), devices_per_worker)]
        tags = ["gpu" + "-".join(map(str, g)) for g in groups]
    else:
        if cpu_workers < 1:
            raise MkdError(f"--workers {cpu_workers}: must be at least 1")
        groups = [[] for _ in range(cpu_workers)]
        tags = ["cpu"] if cpu_workers == 1 else [f"cpu{i}" for i in range(cpu_workers)]
    per_worker = threads or max(1, cpu_cores() // len(groups))
    specs = []
    for group, tag in zip(groups, tags):
        devices = len(group) or devices_per_worker
        visible = ",".join(map(str, group))
        env = {"CUDA_VISIBLE_DEVICES": visible, "MKD_WORKER_GPU": visible, "MKD_WORKER_DEVICES": str(devices)}
        if threads or not os.environ.get("OMP_NUM_THREADS"):
            env.update(OMP_NUM_THREADS=str(per_worker), MKL_NUM_THREADS=str(per_worker))
        specs.append({
            "node": f"{base}-{tag}@{host}",
            "queues": ",".join([*queues_of_worker(queue, devices), f"{queue}.{host}.{tag}"]),
            "devices": devices,
            "threads": env.get("OMP_NUM_THREADS") or os.environ["OMP_NUM_THREADS"],
            "env": env,
        })
    return specs


def celery_argv(spec: dict, loglevel: str, events: bool = False) -> list[str]:
    """``events``: Celery task events (``-E``) for Flower and other event consumers."""
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
            "-n", spec["node"], "-Q", spec["queues"], "-c", "1", "--pool", "prefork",
            "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "-l", loglevel,
            *(["-E"] if events else [])]


def _already_running(runs_dir: str, node: str) -> int | None:
    from mkdcore.jobs.heartbeats import is_stale, read_heartbeats
    from mkdcore.parallel import pid_alive

    beat = read_heartbeats(runs_dir).get(node)
    if beat and not is_stale(beat) and beat.get("host") == socket.gethostname() and pid_alive(beat.get("pid")):
        return int(beat["pid"])
    return None


@click.command()
@click.option("--gpus", default=None, help="GPU indices, e.g. 0,1 (default: every GPU NVML sees).")
@click.option("--devices-per-worker", default=1, show_default=True, type=int,
              help="GPUs each worker owns (stages with runtime.devices up to this go to it); for --cpu: the ranks it may run.")
@click.option("--cpu", is_flag=True, help="Run CPU workers (no GPU).")
@click.option("--workers", "cpu_workers", default=1, show_default=True, type=int, help="With --cpu: how many CPU workers.")
@click.option("--threads", default=None, type=int,
              help="CPU threads per worker's stage (default: this process's cores / workers started; runtime.threads wins).")
@click.option("--events", is_flag=True, help="Send Celery task events (for Flower: see docs/queue.md).")
@click.option("--queue", default="mkd", show_default=True, help="Shared queue to consume.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (job records, heartbeats); default MKD_RUNS_DIR or ./runs. Shared storage for several machines.")
@click.option("--name", default=None, help="Node name prefix (unique per machine; default 'mkd').")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(gpus: str | None, devices_per_worker: int, cpu: bool, cpu_workers: int, threads: int | None, events: bool,
           queue: str, runs_dir: str | None, name: str | None, loglevel: str) -> None:
    """Start queue workers here: one per GPU (or per --devices-per-worker GPUs), or CPU
    workers. SIGTERM/Ctrl-C: each worker stops taking stages, checkpoints the one it runs
    and hands it back to the queue (it resumes on the next worker)."""
    from mkdcore.jobs.broker import broker_url, ping_redis, redact
    from mkdcore.jobs.store import default_runs_dir

    url = broker_url()
    ping_redis(url)
    runs = os.path.abspath(runs_dir) if runs_dir else str(default_runs_dir())
    if threads is not None and threads < 1:
        raise MkdError(f"--threads {threads}: must be at least 1")
    specs = worker_specs(gpus, cpu, queue, name, devices_per_worker=devices_per_worker, cpu_workers=cpu_workers,
                         threads=threads)
    for spec in specs:
        pid = _already_running(runs, spec["node"])
        if pid:
            raise ServiceError(f"worker {spec['node']} already runs (pid {pid}); stop it or pass --name")
    envs = [dict(os.environ, MKD_RUNS_DIR=runs, MKD_NODE=spec["node"], MKD_WORKER_QUEUES=spec["queues"],
                 MKD_BROKER_URL=url, **spec["env"]) for spec in specs]
    for spec in specs:
        click.echo(f"worker {spec['node']}: {spec['devices']} device(s), {spec['threads']} threads, "
                   f"queues {spec['queues']}, broker {redact(url)}, runs {runs}" + (", task events on" if events else ""), err=True)
    sup = Supervisor([celery_argv(spec, loglevel, events) for spec in specs], envs, [spec["node"] for spec in specs])
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
