"""`mkd up` / `mkd down` and a password-protected Redis (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from tests.redis_fixtures import REPO, RedisServer, _require_redis, free_port, wait_for

pytestmark = pytest.mark.integration


def _mkd(env, *args):
    return subprocess.run([sys.executable, "-m", "mkdcore.cli.main", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_up_is_idempotent_and_down_stops_everything(tmp_path):
    _require_redis()
    port = free_port()
    env = dict(os.environ, MKD_STATE_DIR=str(tmp_path / "state"), MKD_RUNS_DIR=str(tmp_path / "runs"), HF_HUB_OFFLINE="1",
               MKD_HEARTBEAT_EVERY="0.5")
    env.pop("MKD_BROKER_URL", None)
    out = _mkd(env, "up", "--cpu", "--port", str(port))
    try:
        assert out.returncode == 0, out.stderr
        assert f"export MKD_BROKER_URL=redis://127.0.0.1:{port}/0" in out.stdout
        state = json.loads((tmp_path / "state" / "state.json").read_text())
        redis_proc = psutil.Process(state["redis_pid"])
        assert any(c.laddr.ip == "127.0.0.1" and c.laddr.port == port for c in redis_proc.net_connections("tcp"))  # loopback only
        wait_for(lambda: list((tmp_path / "runs" / "workers").glob("*.json")), 30, "the worker's heartbeat")
        again = _mkd(env, "up", "--cpu", "--port", str(port))
        assert again.returncode == 0
        assert json.loads((tmp_path / "state" / "state.json").read_text())["worker_pid"] == state["worker_pid"]
        worker_tree = [psutil.Process(state["worker_pid"])] + psutil.Process(state["worker_pid"]).children(recursive=True)
        assert len(worker_tree) >= 3  # mkd worker -> celery worker -> pool process
    finally:
        down = _mkd(env, "down", "--grace", "10")
    assert down.returncode == 0 and "stopped" in down.stdout
    for p in [redis_proc, *worker_tree]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert "nothing was running" in _mkd(env, "down").stdout


def test_password_in_url_works_and_is_never_printed(tmp_path):
    _require_redis()
    server = RedisServer(tmp_path, password="s3cret-pw").start()
    try:
        env = dict(os.environ, MKD_BROKER_URL=server.url, MKD_RUNS_DIR=str(tmp_path / "runs"), HF_HUB_OFFLINE="1")
        out = _mkd(env, "status", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["queue"] == {"mkd": 0}
        from mkdcore.jobs.messages import make_sender
        from mkdcore.jobs.status import queue_depth
        from mkdcore.jobs.submit import build_job, load_members, record_and_dispatch
        from workers.celery_app import make_app

        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"modalities: {{names: [rgb]}}\nruntime: {{runs_dir: {tmp_path / 'runs'}}}\n")
        m = load_members(cfg, [], [], check_plugins=False)[0]
        job = build_job(m, name=None, group=None, priority=5, queue="mkd", code=None, grace_s=1, max_attempts=3)
        record_and_dispatch([job], make_sender(make_app(server.url)))
        assert queue_depth(server.url, ["mkd"]) == {"mkd": 1}  # the first stage waits for a worker
        wrong = server.url.replace("s3cret-pw", "nope")
        bad = _mkd(dict(env, MKD_BROKER_URL=wrong), "status", "--json")
        assert "unreachable at redis://:***@127.0.0.1" in json.loads(bad.stdout)["queue"]
        assert "s3cret" not in out.stdout + out.stderr + bad.stdout + bad.stderr
    finally:
        server.stop()
