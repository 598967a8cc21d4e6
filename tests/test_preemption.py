"""Preemption: a SIGTERM'd stage checkpoints, exits 143, and resumes elsewhere at no cost.

Real redis-server, real ``mkd worker`` processes, the queue's fake stage (same contract as
``mkd run``: checkpoint on SIGTERM, exit 143). Waits are on events (files, records,
process exits), never on a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_fixtures import queue, redis_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


def test_stage_sigtermed_while_importing_exits_143_not_minus_15(tmp_path):
    """The stage child's first code turns SIGTERM into exit 143 before anything is imported
    (a bare ``python -m`` of the same slow import dies with -15)."""
    ready = tmp_path / "ready"
    (tmp_path / "slow_import.py").write_text(
        f"import pathlib, time\npathlib.Path({str(ready)!r}).write_text('x')\ntime.sleep(120)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])]))
    codes = {}
    for how, argv in {"bare": ["-m", "slow_import"], "stage child": ["-m", "workers.stage_child", "slow_import"]}.items():
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, *argv], env=env)
        wait_for(ready.exists, 30, f"{how}: the module to start importing")
        proc.send_signal(signal.SIGTERM)
        codes[how] = proc.wait(30)
    assert codes == {"bare": -signal.SIGTERM, "stage child": 143}


def test_sigterm_to_a_training_stage_group_with_loader_workers_checkpoints_and_exits_143(smoke_template):
    """What the queue does on cancel or preemption (``killpg`` of the stage's group, which
    holds its DataLoader worker processes too): the stage checkpoints and exits 143. A
    worker killed by that SIGTERM made the loader raise instead (a crash, charged)."""
    import torch

    from tests.faults.workspace import signal_training_teacher

    got, stage = signal_training_teacher(smoke_template, signal.SIGTERM)
    assert got.code == 143, got.err[-3000:]
    assert "Traceback" not in got.err
    assert 4 <= torch.load(stage / "checkpoints" / "last.pt", weights_only=True)["task"] < 2000
    assert not (stage / "manifest.json").exists()


def _teacher(q, job_id):
    return q.store().load(job_id).stage("teacher:rgb")


def _finished(q, job_id):
    """The teacher stage once it has ended (the rest of the job is not this test's business)."""
    return wait_for(lambda: (s := _teacher(q, job_id)).state in ("succeeded", "failed", "cancelled") and s, 120,
                    "the teacher stage to end")


def test_worker_stopped_gracefully_hands_its_stage_back_and_it_resumes_elsewhere_at_no_cost(queue):
    q = queue
    # on a, the teacher holds after its first checkpoint: still running when a is stopped
    machine_a = q.start_worker("a", MKD_FAKE_HOLD="teacher:rgb@5")
    job = q.submit(q.config(teacher={"training": {"tasks": 10, "checkpoint_every": 5}}))[0]
    ckpt = lambda: Path(_teacher(q, job.id).stage_dir) / "checkpoints" / "last.json"  # noqa: E731
    wait_for(lambda: ckpt().is_file(), 60, "the teacher's first checkpoint on worker a")
    assert _teacher(q, job.id).worker.startswith("a-")
    q.start_worker("b")
    machine_a.send_signal(signal.SIGTERM)  # SLURM --signal / scancel / a spot notice: stop gracefully
    assert machine_a.wait(60) == 0  # stopped; not restarted, no stage left behind
    handed = _teacher(q, job.id)
    assert handed.preempted == 1 and handed.attempts in (0, 1)  # refunded (1 if b already took it)
    assert "handed back (no attempt charged)" in (handed.message or "") or handed.worker.startswith("b-")
    teacher = _finished(q, job.id)
    assert teacher.state == "succeeded" and teacher.worker.startswith("b-") and teacher.preempted == 1, teacher
    assert teacher.attempts == 1 and q.store().load(job.id).retries == 0  # the preempted start was not charged
    lines = [ln for ln in q.runs_log() if ln.startswith("teacher:rgb ")]
    starts = [ln for ln in lines if " start " in ln]
    assert len(starts) == 2 and "from=0" in starts[0] and "from=0" not in starts[1]  # resumed from its checkpoint
    assert sum(" done " in ln for ln in lines) == 1  # exactly one finish
    log = (Path(q.store().log_path(job.id, "teacher:rgb"))).read_text()
    assert "teacher:rgb: SIGTERM, checkpoint at" in log  # it checkpointed (exit 143), was not killed
    assert "hand it back" in q.worker_log("a")


def test_stage_sigtermed_directly_is_handed_back_without_charging_an_attempt(queue):
    """SLURM signals every process of a step: the stage may get SIGTERM before its worker."""
    q = queue
    q.env["MKD_FAKE_HOLD"] = "teacher:rgb@2"  # running, with a checkpoint, until it is signalled
    q.start_worker("w")
    job = q.submit(q.config(teacher={"training": {"tasks": 6, "checkpoint_every": 2}}), max_attempts=1)[0]
    ckpt = lambda: Path(_teacher(q, job.id).stage_dir) / "checkpoints" / "last.json"  # noqa: E731
    wait_for(lambda: ckpt().is_file(), 60, "the teacher's first checkpoint")
    os.kill(_teacher(q, job.id).pid, signal.SIGTERM)
    teacher = _finished(q, job.id)
    # max_attempts=1: a charged attempt would have failed the stage instead
    assert teacher.state == "succeeded" and teacher.attempts == 1 and teacher.preempted == 1, teacher
    starts = [ln for ln in q.runs_log() if ln.startswith("teacher:rgb ") and " start " in ln]
    assert len(starts) == 2 and "from=0" not in starts[1]
