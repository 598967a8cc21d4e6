"""Real redis-server and real ``mkd worker`` processes for the queue tests.

Import the fixtures into a test module (``from tests.redis_fixtures import redis_server``).
Tests skip (with the reason) only when redis-server is absent and ``MKD_REQUIRE_REDIS``
is unset; CI sets it, so there a missing Redis fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """A redis-server on a free loopback port; appendonly so a restart keeps data.

    ``password``: started with ``--requirepass``. ``tls``: a folder with ``ca.crt``,
    ``server.crt`` and ``server.key`` (:func:`make_tls_certs`): TLS only (no plain port),
    and the URL is ``rediss://...?ssl_cert_reqs=required&ssl_ca_certs=<ca.crt>``.
    """

    def __init__(self, folder: Path, password: str | None = None, tls: Path | None = None) -> None:
        self.folder, self.port, self.password, self.tls = folder, free_port(), password, tls
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.tls / 'ca.crt'}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        argv = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", str(self.folder)]
        if self.tls:
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls / "server.crt"),
                     "--tls-key-file", str(self.tls / "server.key"), "--tls-ca-cert-file", str(self.tls / "ca.crt"),
                     "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        import redis

        def pong():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-500:]}")
            try:
                return redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
            except redis.RedisError:
                return False

        wait_for(pong, 10, "redis-server to answer PING", every=0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def make_tls_certs(folder: Path) -> Path | None:
    """A test CA and a server certificate for 127.0.0.1 (openssl CLI), or None if this
    redis-server was built without TLS or openssl is missing."""
    if shutil.which("openssl") is None:
        return None
    probe = subprocess.run(["redis-server", "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
                           capture_output=True, text=True, timeout=10)
    if "tls-key-file" not in probe.stdout + probe.stderr:  # a TLS build complains about the key
        return None
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=mkd-test-ca"],
        ["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.crt", "-days", "2", "-extfile", "san.ext"],
    ):
        subprocess.run(argv, cwd=folder, check=True, capture_output=True, timeout=30)
    return folder


def _require_redis() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("MKD_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed but MKD_REQUIRE_REDIS is set (apt-get install -y redis-server)")
        pytest.skip("redis-server not installed (apt-get install -y redis-server); set MKD_REQUIRE_REDIS to fail instead")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real Redis for the module's tests (flushed by :func:`queue`)."""
    _require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


TINY = {
    "name": "tiny",
    "modalities": {"names": ["rgb"]},
    "distillation": {"baseline": None},
    "teacher": {"training": {"tasks": 6, "checkpoint_every": 2}},
    "fusion": {"training": {"tasks": 4, "checkpoint_every": 2}},
    "training": {"tasks": 6, "checkpoint_every": 2},
}


class Queue:
    """One test's queue: env, run dir, workers it started, submit/wait helpers."""

    def __init__(self, server: RedisServer, root: Path) -> None:
        self.server, self.root = server, root
        self.runs = root / "runs"
        self.runs.mkdir()
        self.data = root / "data"  # an empty dataset: the fake stages read no frames
        (self.data / "rgb_l8").mkdir(parents=True)
        self.env = dict(os.environ, MKD_BROKER_URL=server.url, MKD_RUNS_DIR=str(self.runs), PYTHONPATH=str(REPO),
                        MKD_STAGE_MODULE="tests.queue_fake_stage", MKD_HEARTBEAT_EVERY="0.5", MKD_STALE_AFTER="3",
                        MKD_FAKE_STEP_S="0.01", HF_HUB_OFFLINE="1",
                        MKD_STAGE_PRELOAD="")  # the fake stage imports no torch: a zygote without it
        self.workers: list[subprocess.Popen] = []

    # -------------------------------------------------------------- config
    def config(self, name: str = "cfg", **sections) -> Path:
        data = json.loads(json.dumps(TINY))
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        data["runtime"] = {"runs_dir": str(self.runs)}
        data["data"] = {**data.get("data", {}), "root": str(self.data)}
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    # ------------------------------------------------------------- workers
    def start_worker(self, name: str, **env) -> subprocess.Popen:
        return self.start_workers(name, **env)[name]

    def start_workers(self, *names: str, **env) -> dict[str, subprocess.Popen]:
        """Start ``mkd worker --cpu --name N`` for every name at once, then wait for each
        one's first heartbeat (started together: their start-ups overlap)."""
        procs = {}
        for name in names:
            log = open(self.root / f"worker-{name}.log", "ab")
            procs[name] = subprocess.Popen([PY, "-m", "mkdcore.cli.main", "worker", "--cpu", "--name", name], cwd=REPO,
                                           env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            self.workers.append(procs[name])
        for name in names:
            node = f"{name}-cpu@{socket.gethostname()}"
            wait_for(lambda: (self.runs / "workers" / f"{node}.json").is_file(), 60, f"worker {node} heartbeat")
        return procs

    def worker_log(self, name: str) -> str:
        return (self.root / f"worker-{name}.log").read_text(errors="replace")

    def stop_workers(self) -> None:
        for p in self.workers:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)

    # ------------------------------------------------------------ commands
    def mkd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "mkdcore.cli.main", *args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def submit(self, config: Path, sweeps: list[str] | None = None, force: bool = False, **kw):
        """Submit in-process (plugin options are not checked: the stages are fakes)."""
        from mkdcore.jobs.messages import make_sender
        from mkdcore.jobs.submit import build_job, load_members, new_group_id, record_and_dispatch
        from workers.celery_app import make_app

        members = load_members(config, [], sweeps or [], check_plugins=False)
        group = new_group_id() if len(members) > 1 else None
        jobs = [build_job(m, name=None, group=group, priority=kw.get("priority", 5), queue="mkd", code=None,
                          grace_s=kw.get("grace_s", 10.0), max_attempts=kw.get("max_attempts", 3)) for m in members]
        return record_and_dispatch(jobs, make_sender(make_app(self.server.url)), force=force)

    def store(self):
        from mkdcore.jobs.store import JobStore

        return JobStore(self.runs)

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 60):
        store = self.store()
        return wait_for(lambda: (j := store.load(job_id)).state in states and j, timeout, f"job {job_id} to be {states}")

    def runs_log(self) -> list[str]:
        path = self.runs / "fake_runs.log"
        return path.read_text().splitlines() if path.is_file() else []


@pytest.fixture
def queue(redis_server, tmp_path):
    """A clean queue (Redis flushed) with a fresh run directory; workers are killed after."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    q = Queue(redis_server, tmp_path)
    yield q
    q.stop_workers()
