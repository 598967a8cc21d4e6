"""The queue against a real redis-server and real `mkd worker` processes.

Stages are run by ``tests.queue_fake_stage`` (same CLI contract as `mkd run`, cheap);
every fault from docs/queue.md's trap list is provoked here for real.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.redis_fixtures import queue, redis_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


def _stage(q, job_id, name):
    return q.store().load(job_id).stage(name)


def test_job_runs_to_success_and_is_visible(queue):
    q = queue
    q.start_worker("w1")
    job = q.submit(q.config())[0]
    done = q.wait_state(job.id, ("succeeded", "failed"), timeout=60)
    assert done.state == "succeeded", [(s.name, s.state, s.message) for s in done.stages]
    starts = [ln.split()[0] for ln in q.runs_log() if " start " in ln]
    assert sorted(starts) == sorted(s.name for s in done.stages)  # every stage once, no duplicate
    order = [ln.split()[0] for ln in q.runs_log() if " start " in ln]
    for s in done.stages:  # DAG order: each stage started after its dependencies
        assert all(order.index(d) < order.index(s.name) for d in s.deps)
    out = q.mkd("status", job.id, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["state"] == "succeeded" and data["val_acc"] == 0.5
    listing = json.loads(q.mkd("status", "--json").stdout)
    assert [w["node"].split("-")[0] for w in listing["workers"]] == ["w1"] and listing["queue"] == {"mkd": 0}
    logs = q.mkd("logs", job.id)
    assert "[teacher:rgb] teacher:rgb: steps 0..6" in logs.stdout


def test_killed_worker_stage_resumes_elsewhere_without_duplicate(queue):
    q = queue
    q.env["MKD_FAKE_HOLD"] = "teacher:rgb@5"  # the teacher waits after its first checkpoint (tests/queue_fake_stage.py)
    machines = q.start_workers("a", "b")
    cfg = q.config(teacher={"training": {"tasks": 10, "checkpoint_every": 5}})
    job = q.submit(cfg)[0]
    ckpt_dir = lambda: _stage(q, job.id, "teacher:rgb").stage_dir  # noqa: E731
    wait_for(lambda: os.path.isfile(os.path.join(ckpt_dir(), "checkpoints", "last.json")), 60, "a teacher checkpoint")
    rec = _stage(q, job.id, "teacher:rgb")
    assert rec.state == "running"
    victim = rec.worker.split("-")[0]  # whichever of the two took it
    survivor = ({"a", "b"} - {victim}).pop()
    stage_proc = psutil.Process(rec.pid)
    # the machine running it dies mid-stage: `mkd worker` and its Celery worker (a lone Celery
    # worker killed would be restarted by `mkd worker`: tests/test_queue_robust.py)
    os.killpg(machines[victim].pid, signal.SIGKILL)
    wait_for(lambda: not _alive(stage_proc), 10, "the orphaned stage to die with its worker")
    done = q.wait_state(job.id, ("succeeded", "failed"), timeout=90)
    assert done.state == "succeeded", [(s.name, s.state, s.message) for s in done.stages]
    teacher = done.stage("teacher:rgb")
    assert teacher.attempts == 2 and teacher.worker.startswith(f"{survivor}-")
    lines = [ln for ln in q.runs_log() if ln.startswith("teacher:rgb ")]
    starts = [ln for ln in lines if " start " in ln]
    assert len(starts) == 2 and "from=0" in starts[0] and "from=0" not in starts[1]  # resumed from its checkpoint
    assert sum(" done " in ln for ln in lines) == 1  # ran to the end once


def test_cancel_running_job_ends_its_process_group_then_retry_resumes(queue):
    q = queue
    q.env["MKD_FAKE_HOLD"] = "teacher:rgb@5"  # running, with a checkpoint, until it is signalled
    q.start_worker("w1")
    job = q.submit(q.config(teacher={"training": {"tasks": 10, "checkpoint_every": 5}}))[0]
    wait_for(lambda: _stage(q, job.id, "teacher:rgb").pid, 60, "the teacher stage to start")
    pid = _stage(q, job.id, "teacher:rgb").pid
    first = Path(_stage(q, job.id, "teacher:rgb").stage_dir) / "checkpoints" / "last.json"
    wait_for(first.exists, 60, "the stage's first checkpoint")  # so the retry has something to resume
    group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pid]
    assert group, "the stage runs in its own process group"
    # cancel returns once the group is gone; exit code 143 below shows SIGTERM ended the stage
    # (it checkpointed), not the SIGKILL after the grace: no wall-clock bound needed
    out = q.mkd("cancel", job.id, "--grace", "5")
    assert out.returncode == 0, out.stderr
    assert not [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pid and _alive(p)]
    rec = q.store().load(job.id)
    assert rec.state == "cancelled" and rec.stage("teacher:rgb").exit_code == 143  # checkpointed on SIGTERM
    assert all(s.state in ("succeeded", "cancelled") for s in rec.stages)
    out = q.mkd("retry", job.id)
    assert out.returncode == 0, out.stderr
    done = q.wait_state(job.id, ("succeeded", "failed"), timeout=60)
    assert done.state == "succeeded"
    starts = [ln for ln in q.runs_log() if ln.startswith("teacher:rgb ") and " start " in ln]
    assert len(starts) == 2 and "from=0" not in starts[1]


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie; False when it exits while we look (no NoSuchProcess race)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_redis_restart_loses_no_job_and_queue_keeps_working(queue):
    q = queue
    q.start_worker("w1")
    first = q.submit(q.config())[0]
    q.wait_state(first.id, ("succeeded",), timeout=60)
    q.server.restart()
    listing = json.loads(q.mkd("status", "--json").stdout)
    assert [(j["id"], j["state"]) for j in listing["jobs"]] == [(first.id, "succeeded")]
    second = q.submit(q.config("cfg2", training={"seed": 1}))[0]
    done = q.wait_state(second.id, ("succeeded", "failed"), timeout=60)
    assert done.state == "succeeded"
    assert sum(1 for ln in q.runs_log() if ln.startswith("student:lite-mkd ") and " start " in ln) == 2


def test_sweep_runs_shared_stages_once(queue):
    q = queue
    q.start_workers("a", "b")
    jobs = q.submit(q.config(), sweeps=["training.seed=0,1,2"])
    assert len(jobs) == 3 and len({j.group for j in jobs}) == 1 and jobs[0].group
    for j in jobs:
        assert q.wait_state(j.id, ("succeeded", "failed"), timeout=90).state == "succeeded"
    starts = [ln.split()[0] for ln in q.runs_log() if " start " in ln]
    assert starts.count("teacher:rgb") == 1 and starts.count("fuse") == 1  # shared by the grid: run once
    assert starts.count("student:lite-mkd") == 3  # one per seed


def test_invalid_messages_are_rejected_not_run(queue):
    from workers.celery_app import make_app

    q = queue
    q.start_worker("w1")
    app = make_app(q.server.url)
    app.send_task("mkd.run_stage", kwargs={"job_id": "x", "stage": "fuse", "token": "t", "runs_dir": str(q.runs),
                                           "config_hash": "h", "config": {"training": {"lr": -1}}}, queue="mkd")
    app.send_task("mkd.run_stage", kwargs={"stage": "fuse"}, queue="mkd")
    app.send_task("mkd.run_stage", kwargs={"job_id": "x"}, queue="mkd", serializer="pickle")
    wait_for(lambda: q.worker_log("w1").count("rejected stage message") >= 2, 20, "two rejections in the worker log")
    wait_for(lambda: "ContentDisallowed" in q.worker_log("w1") or "pickle" in q.worker_log("w1"), 20, "the pickle refusal")
    log = q.worker_log("w1")
    assert "invalid config" in log and "invalid message fields" in log
    assert q.runs_log() == []  # nothing ran
    job = q.submit(q.config())[0]  # and the worker is still healthy
    assert q.wait_state(job.id, ("succeeded", "failed"), timeout=60).state == "succeeded"


def test_submit_with_redis_down_is_one_line(queue):
    q = queue
    cfg = q.config()
    q.env["MKD_BROKER_URL"] = "redis://:s3cret@127.0.0.1:1/0"
    out = q.mkd("submit", str(cfg))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "mkd up" in lines[0] and "MKD_BROKER_URL" in lines[0]
    assert "s3cret" not in out.stderr and "mkd run" in lines[0]
    assert q.store().ids() == []  # nothing recorded


def test_unknown_job_is_one_line_not_pending(queue):
    out = queue.mkd("status", "nope", "--json")
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"error: no job 'nope' in {queue.runs / 'jobs'} (see `mkd status`; set --runs-dir or MKD_RUNS_DIR)"]


def test_status_answers_fast_with_a_dead_worker(queue, monkeypatch):
    """A killed worker turns ``unknown`` once its heartbeat is stale, and status never waits on a
    worker: no Celery broadcast (inspect/ping) at all, so no timeout to sit through."""
    from celery.app.control import Control

    from mkdcore.jobs.status import collect

    q = queue
    q.env["MKD_STALE_AFTER"] = "1"  # the threshold is not the point: stale sooner, same rule
    proc = q.start_worker("w1")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)

    def no_broadcast(*args, **kwargs):
        raise AssertionError("mkd status must not wait on workers (Celery broadcast/inspect)")

    monkeypatch.setattr(Control, "broadcast", no_broadcast)
    stale_after = float(q.env["MKD_STALE_AFTER"])
    # waited on in-process (the code `mkd status` runs), then the CLI itself is asked once
    wait_for(lambda: [w["state"] for w in collect(q.store(), q.server.url, stale_after=stale_after)["workers"]]
             == ["unknown"], 60, "the killed worker to show as unknown")
    out = q.mkd("status", "--json")
    assert out.returncode == 0, out.stderr
    assert [w["state"] for w in json.loads(out.stdout)["workers"]] == ["unknown"]


@pytest.mark.slow
def test_smoke_experiment_through_the_queue_end_to_end(queue):
    """The real pipeline: `mkd submit configs/smoke.yaml` (CLI, plugin options checked),
    two CPU workers running `mkd run --stages` for every stage of the DAG."""
    import shutil

    from tests.redis_fixtures import REPO

    q = queue
    smoke = REPO / "configs" / "smoke.yaml"
    if not smoke.is_file():
        pytest.skip("configs/smoke.yaml is not in this checkout")
    cfg = q.root / "smoke.yaml"
    shutil.copy(smoke, cfg)
    del q.env["MKD_STAGE_MODULE"], q.env["MKD_STAGE_PRELOAD"]  # real stages, forked from a zygote with torch
    q.env["MKD_STALE_AFTER"] = "60"  # torch imports on 2 busy cores must not look like a dead worker
    q.start_workers("a", "b")
    out = q.mkd("submit", str(cfg), "--set", f"runtime.runs_dir={q.runs}", timeout=120)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    done = q.wait_state(job_id, ("succeeded", "failed", "cancelled"), timeout=400)
    assert done.state == "succeeded", [(s.name, s.state, s.message) for s in done.stages if s.state != "succeeded"]
    assert {s.worker.split("-")[0] for s in done.stages if not s.cached} == {"a", "b"}  # parallel branches used both
    forked = sum(q.worker_log(w).count("forked from the stage zygote") for w in ("a", "b"))
    assert forked == sum(not s.cached for s in done.stages), "every stage is forked from a zygote with torch imported"
    assert all((q.runs / "stages").glob("report/*/manifest.json"))
    data = json.loads(q.mkd("status", job_id, "--json").stdout)
    assert data["state"] == "succeeded" and all(s["state"] == "succeeded" for s in data["stages"])
    again = q.mkd("submit", str(cfg), "--set", f"runtime.runs_dir={q.runs}")
    assert again.returncode != 0 and f"submitted as job {job_id}" in again.stderr
