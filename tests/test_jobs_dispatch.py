"""Dispatcher, watchdog and dedupe logic on the job store (no broker needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mkdcore.jobs.dispatch import dispatch, recover_stale
from mkdcore.jobs.model import JobRecord, StageRecord
from mkdcore.jobs.store import JobStore
from mkdcore.jobs.submit import DuplicateJob, build_job, load_members, record_and_dispatch, sweep_grid


def _job(tmp: Path, job_id: str, key_prefix: str = "k", max_attempts: int = 3) -> JobRecord:
    stages = [
        StageRecord(name="a", kind="teacher", key="shared", deps=[], stage_dir=str(tmp / "stages/teacher/shared")),
        StageRecord(name="b", kind="fuse", key=f"{key_prefix}b", deps=["a"], stage_dir=str(tmp / f"stages/fuse/{key_prefix}b")),
        StageRecord(name="c", kind="student", key=f"{key_prefix}c", deps=["a"], stage_dir=str(tmp / f"stages/student/{key_prefix}c")),
        StageRecord(name="d", kind="evaluate", key=f"{key_prefix}d", deps=["b", "c"], stage_dir=str(tmp / f"stages/evaluate/{key_prefix}d")),
    ]
    return JobRecord(id=job_id, name=job_id, config_hash=job_id, config_file="-", cwd=str(tmp), runs_dir=str(tmp),
                     max_attempts=max_attempts, stages=stages)


def write_finished(stage_dir: Path, inputs: dict[str, Path] | None = None) -> str:
    """A finished stage's manifest, with provenance, as the runner writes it."""
    import json

    from mkdcore.stages import provenance

    stage_dir.mkdir(parents=True, exist_ok=True)
    mid = provenance.new_id()
    (stage_dir / "manifest.json").write_text(json.dumps({
        "format": provenance.FORMAT, "id": mid, "inputs": provenance.inputs_record(inputs or {}),
        "code": provenance.code_versions({}), "probe": None}))
    return mid


class Sent(list):
    def __call__(self, job, stage):
        self.append((job.id, stage.name, stage.token))


def _finish(store, job_id, name, state="succeeded"):
    with store.transaction() as tx:
        tx.get(job_id).stage(name).state = state
        sent = Sent()
        dispatch(tx, sent)
    return sent


def test_dag_order_parallel_branches_and_shared_stage_once(tmp_path):
    store = JobStore(tmp_path)
    sent = Sent()
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1", "x"))
        tx.add(_job(tmp_path, "j2", "y"))
        dispatch(tx, sent)
    assert [(j, s) for j, s, _ in sent] == [("j1", "a")]  # the shared teacher once; j2 waits for it
    j2 = store.load("j2")
    assert j2.stage("a").state == "waiting" and j2.stage("a").waiting_for == "j1/a"
    (tmp_path / "stages/teacher/shared").mkdir(parents=True)
    write_finished(tmp_path / "stages/teacher/shared")
    sent = _finish(store, "j1", "a")
    assert sorted((j, s) for j, s, _ in sent) == [("j1", "b"), ("j1", "c"), ("j2", "b"), ("j2", "c")]  # parallel branches
    assert store.load("j2").stage("a").cached and store.load("j2").stage("a").state == "succeeded"
    assert _finish(store, "j1", "b") == []  # d needs c too
    assert [(j, s) for j, s, _ in _finish(store, "j1", "c")] == [("j1", "d")]


def test_failed_stage_stops_the_job_and_tokens_are_unique(tmp_path):
    store = JobStore(tmp_path)
    sent = Sent()
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1"))
        dispatch(tx, sent)
    _finish(store, "j1", "a")
    job = store.load("j1")
    assert job.stage("b").token != job.stage("c").token
    assert _finish(store, "j1", "b", "failed") == []
    assert store.load("j1").state == "failed"
    with store.transaction() as tx:
        tx.get("j1").stage("c").state = "succeeded"
        assert dispatch(tx, Sent()) == []  # d is never queued after a failure
    assert store.load("j1").state == "failed" and store.load("j1").finished_at


def _running(store, job_id, name, worker, attempts, started):
    with store.transaction() as tx:
        s = tx.get(job_id).stage(name)
        s.state, s.worker, s.attempts, s.started_at, s.token = "running", worker, attempts, started, "tok"


def test_watchdog_requeues_stale_worker_with_a_capped_attempt_count(tmp_path):
    store = JobStore(tmp_path)
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1", max_attempts=2))
    now = time.time()
    _running(store, "j1", "a", "w1", 1, now - 100)
    fresh = {"w1": {"time": now, "age_s": 0.5, "task": {"token": "tok"}}}
    with store.transaction() as tx:
        assert recover_stale(tx, fresh, stale_after=30, now=now) == []  # alive and running it
    stale = {"w1": {"time": now - 60, "age_s": 60, "task": {"token": "tok"}}}
    with store.transaction() as tx:
        assert recover_stale(tx, stale, stale_after=30, now=now) == [("j1", "a", "requeued")]
    rec = store.load("j1").stage("a")
    assert rec.state == "pending" and rec.token is None and "attempt 2 of 2" in rec.message
    _running(store, "j1", "a", "w1", 2, now - 100)
    with store.transaction() as tx:
        assert recover_stale(tx, {}, stale_after=30, now=now) == [("j1", "a", "failed")]  # no endless re-queue
    assert "gave up after 2 attempts" in store.load("j1").stage("a").message


def test_watchdog_sees_a_live_worker_that_lost_its_task(tmp_path):
    store = JobStore(tmp_path)
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1"))
    now = time.time()
    _running(store, "j1", "a", "w1", 1, now - 100)
    beats = {"w1": {"time": now, "age_s": 0.1, "task": None}}  # alive, but its task process died
    with store.transaction() as tx:
        assert recover_stale(tx, beats, stale_after=30, beat_every=2, now=now) == [("j1", "a", "requeued")]


def test_same_config_twice_is_refused_unless_forced(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"modalities: {{names: [rgb]}}\nruntime: {{runs_dir: {tmp_path / 'runs'}}}\n")

    def jobs():
        m = load_members(cfg, [], [], check_plugins=False)[0]
        return [build_job(m, name=None, group=None, priority=5, queue="mkd", code="abc", grace_s=1, max_attempts=3)]

    record_and_dispatch(jobs(), Sent())
    with pytest.raises(DuplicateJob, match="submitted as job j"):
        record_and_dispatch(jobs(), Sent())
    assert len(record_and_dispatch(jobs(), Sent(), force=True)) == 1
    assert len(JobStore(tmp_path / "runs").ids()) == 2


def test_sweep_grid_is_the_cartesian_product():
    grid = sweep_grid(["training.seed=0,1", "episodes.shot=1,5"])
    assert grid == [["training.seed=0", "episodes.shot=1"], ["training.seed=0", "episodes.shot=5"],
                    ["training.seed=1", "episodes.shot=1"], ["training.seed=1", "episodes.shot=5"]]


def test_sweep_members_report_into_their_own_folders_with_the_group(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: exp\nmodalities: {{names: [rgb]}}\nruntime: {{runs_dir: {tmp_path / 'runs'}}}\n")
    members = load_members(cfg, [], ["training.seed=0,1"], check_plugins=False)
    built = [build_job(m, name=None, group="g1", priority=5, queue="mkd", code="abc", grace_s=1, max_attempts=3) for m in members]
    names = [resolved["name"] for _, resolved in built]
    assert names == ["exp-seed_0", "exp-seed_1"]
    assert all(resolved["group"] == "g1" for _, resolved in built)
    # the members differ only in the student: their report stages differ, their teachers do not
    reports = {next(s.key for s in job.stages if s.name == "report") for job, _ in built}
    teachers = {next(s.key for s in job.stages if s.name == "teacher:rgb") for job, _ in built}
    assert len(reports) == 2 and len(teachers) == 1


def test_retry_resends_a_stranded_queued_stage_with_a_new_token(tmp_path):
    from mkdcore.jobs.control import retry

    store = JobStore(tmp_path)
    first = Sent()
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1"))
        dispatch(tx, first)
    assert [(j, s) for j, s, _ in first] == [("j1", "a")] and store.load("j1").stage("a").state == "queued"
    again = Sent()
    _, names = retry(store, "j1", again)  # e.g. the worker that reserved the message died
    assert names == ["a"] and [(j, s) for j, s, _ in again] == [("j1", "a")]
    assert again[0][2] != first[0][2]  # the old message's token no longer matches: dropped if it arrives
    assert store.load("j1").stage("a").token == again[0][2]


def test_a_finished_stage_whose_upstream_was_redone_is_not_cached(tmp_path):
    """The dispatcher reuses a stage only under the same provenance rule as `mkd run`."""
    store = JobStore(tmp_path)
    a_dir = tmp_path / "stages/teacher/shared"
    write_finished(a_dir)
    write_finished(tmp_path / "stages/fuse/kb", {"a": a_dir})
    write_finished(tmp_path / "stages/student/kc", {"a": a_dir})
    write_finished(a_dir)  # the teacher was redone after b and c read it: a new result id
    with store.transaction() as tx:
        tx.add(_job(tmp_path, "j1"))
        dispatch(tx, Sent())
    job = store.load("j1")
    assert job.stage("a").cached and job.stage("a").state == "succeeded"
    assert job.stage("b").state == "queued" and not job.stage("b").cached
    assert job.stage("c").state == "queued" and not job.stage("c").cached
