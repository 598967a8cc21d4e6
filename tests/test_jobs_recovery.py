"""Lost stages, restarted workers, recorded PIDs and broker URLs, without a broker.

The real-process versions (junk on the queue, kill -9 + restart, TLS + password) are in
``tests/test_queue_robust.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkdcore import procinfo
from mkdcore.jobs.broker import redact, scrub, tls_options
from mkdcore.jobs.control import cancel, retry
from mkdcore.jobs.model import JobRecord, StageRecord
from mkdcore.jobs.store import JobStore

NODE = "w-cpu@host"


class FakeApp:
    """Enough of a Celery app for ``make_sender``: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_task(self, name, kwargs, **options):
        self.sent.append({"name": name, **kwargs})


def _running_job(tmp: Path, attempts: int = 1, max_attempts: int = 3) -> JobRecord:
    """One job whose single stage is ``running`` on NODE with token ``tok``."""
    config = tmp / "config.yaml"
    config.write_text("{}\n")
    stage = StageRecord(name="teacher:rgb", kind="teacher", key="k1", deps=[], stage_dir=str(tmp / "stages/teacher/k1"),
                        state="running", token="tok", attempts=attempts, worker=NODE, host=socket.gethostname(),
                        started_at=time.time() - 60)
    return JobRecord(id="j1", name="j1", config_hash="h", config_file=str(config), cwd=str(tmp), runs_dir=str(tmp),
                     max_attempts=max_attempts, stages=[stage])


def _store(tmp: Path, **kw) -> JobStore:
    store = JobStore(tmp)
    with store.transaction() as tx:
        tx.add(_running_job(tmp, **kw))
    return store


def _beat(tmp: Path, task: dict | None) -> None:
    """A fresh heartbeat of NODE (alive) reporting ``task``."""
    folder = tmp / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{NODE}.json").write_text(json.dumps({"node": NODE, "pid": 1, "time": time.time(), "task": task}))


# ------------------------------------------------------------- restarted worker
def _dead_pid() -> dict:
    """The identity of a process that has exited (pid + start time, no longer matching)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = procinfo.identity(proc.pid)
    proc.wait()
    return ident


def test_restarted_worker_requeues_its_dead_predecessors_stage_counting_an_attempt(tmp_path):
    from workers.heartbeat import beat_payload, recover_predecessor

    store = _store(tmp_path)
    dead = _dead_pid()
    task = {"job": "j1", "stage": "teacher:rgb", "token": "tok", "runs_dir": str(tmp_path), "since": time.time(),
            "worker_pid": dead["pid"], "worker_start": dead["start"]}
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / f"{NODE}.task.json").write_text(json.dumps(task))
    assert beat_payload(NODE, tmp_path)["task"] is None  # not reported as what this worker runs
    app = FakeApp()
    what = recover_predecessor(NODE, tmp_path, app)
    assert what == f"j1/teacher:rgb requeued (worker {NODE} died (pid {dead['pid']}) and was restarted)"
    stage = store.load("j1").stage("teacher:rgb")
    assert stage.state == "queued" and stage.token != "tok" and stage.attempts == 1  # next start is attempt 2
    assert [m["stage"] for m in app.sent] == ["teacher:rgb"]
    assert not (tmp_path / "workers" / f"{NODE}.task.json").exists()


def test_a_live_worker_of_the_same_name_is_left_alone(tmp_path):
    from workers.heartbeat import recover_predecessor

    store = _store(tmp_path)
    live = procinfo.identity(os.getppid())  # a process that outlives the test
    task = {"job": "j1", "stage": "teacher:rgb", "token": "tok", "runs_dir": str(tmp_path),
            "worker_pid": live["pid"], "worker_start": live["start"]}
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / f"{NODE}.task.json").write_text(json.dumps(task))
    assert recover_predecessor(NODE, tmp_path, FakeApp()) is None
    assert store.load("j1").stage("teacher:rgb").state == "running"


def test_predecessor_at_its_last_attempt_fails_with_a_message(tmp_path):
    from workers.heartbeat import recover_predecessor

    store = _store(tmp_path, attempts=3, max_attempts=3)
    dead = _dead_pid()
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / f"{NODE}.task.json").write_text(json.dumps(
        {"job": "j1", "stage": "teacher:rgb", "token": "tok", "runs_dir": str(tmp_path),
         "worker_pid": dead["pid"], "worker_start": dead["start"]}))
    recover_predecessor(NODE, tmp_path, FakeApp())
    stage = store.load("j1").stage("teacher:rgb")
    assert stage.state == "failed" and "gave up after 3 attempts" in stage.message


# ------------------------------------------------- cancel / retry of a lost stage
def test_cancel_of_a_stage_its_live_worker_no_longer_runs_is_immediate(tmp_path):
    store = _store(tmp_path)
    _beat(tmp_path, None)  # alive, runs nothing (restarted under the same name)
    job = cancel(store, "j1", grace_s=1)
    stage = job.stage("teacher:rgb")
    assert stage.state == "cancelled" and "no longer running it" in stage.message
    assert job.state == "cancelled"


def test_retry_requeues_a_lost_running_stage_but_refuses_a_live_one(tmp_path):
    from mkdcore.jobs.control import NothingToDo

    store = _store(tmp_path)
    sent = []
    _beat(tmp_path, {"token": "tok"})  # its worker still runs it
    with pytest.raises(NothingToDo, match="cancel it first"):
        retry(store, "j1", lambda job, stage: sent.append(stage.name))
    _beat(tmp_path, {"token": "other"})  # the worker now runs something else: the stage is lost
    job, again = retry(store, "j1", lambda job, stage: sent.append(stage.name))
    assert again == ["teacher:rgb"] and sent == ["teacher:rgb"] and job.stage("teacher:rgb").state == "queued"


# ------------------------------------------------------------------ broker URLs
@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:s3c@ret@h/0", "redis://user:***@h/0"),
    ("rediss://:s3cret@[::1]:6380/0?ssl_cert_reqs=required", "rediss://:***@[::1]:6380/0?ssl_cert_reqs=required"),
    ("redis://:s3cret@h:notaport/0", "redis://:***@h:notaport/0"),
])
def test_redact_masks_the_password_of_any_url(url, shown):
    assert redact(url) == shown


def test_scrub_masks_the_password_in_free_text_encoded_or_not():
    assert scrub("auth p@ss failed (p%40ss)", "redis://:p%40ss@h/0") == "auth *** failed (***)"


def test_tls_options_come_from_a_rediss_url():
    import ssl

    from mkdcore.errors import ServiceError

    assert tls_options("redis://h/0") is None
    assert tls_options("rediss://h/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # verify unless told otherwise
    opts = tls_options("rediss://:pw@h/0?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=/ca.pem")
    assert opts == {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/ca.pem"}
    with pytest.raises(ServiceError, match=r"rediss://:\*\*\*@h/0.*ssl_cert_reqs='maybe'") as err:
        tls_options("rediss://:pw@h/0?ssl_cert_reqs=maybe")
    assert "pw" not in str(err.value)


# ----------------------------------------------------------- mkd down and PIDs
def _mkd_down(state_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MKD_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "mkdcore.cli.main", "down", "--grace", "2"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_down_leaves_a_reused_pid_alone_and_removes_the_stale_state(tmp_path):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)  # unrelated, but in its own group
    try:
        state = tmp_path / "state"
        state.mkdir()
        # what `mkd up` recorded for its worker, whose pid has since been reused by `sleep`
        (state / "state.json").write_text(json.dumps({
            "worker_pid": victim.pid, "worker_start": (procinfo.start_time(victim.pid) or 0) - 1,
            "worker_cmdline": [sys.executable, "-m", "mkdcore.cli.main", "worker"], "url": "redis://127.0.0.1:1/0"}))
        out = _mkd_down(state)
        assert out.returncode == 0, out.stderr
        assert victim.poll() is None  # not killed
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: pid") and "sleep 60" in lines[0] and "left alone" in lines[0]
        assert "nothing was running" in out.stdout and not (state / "state.json").exists()
    finally:
        victim.kill()
        victim.wait()


def test_down_stops_a_process_whose_recorded_identity_matches(tmp_path):
    mine = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = tmp_path / "state"
        state.mkdir()
        ident = procinfo.identity(mine.pid)
        (state / "state.json").write_text(json.dumps({"worker_pid": mine.pid, "worker_start": ident["start"],
                                                      "worker_cmdline": ident["cmdline"]}))
        out = _mkd_down(state)
        assert out.returncode == 0 and f"stopped worker (pid {mine.pid})" in out.stdout, out.stderr
        assert mine.wait(10) is not None
    finally:
        if mine.poll() is None:
            mine.kill()
            mine.wait()
