"""examples/slurm/mkd-workers.sbatch: parses, starts one real worker per task, stops them
gracefully on the pre-time-limit SIGTERM (the running stage is handed back, not lost).

``srun`` is ``tests/fakes/srun`` on PATH (one process per task on this machine, SIGTERM
forwarded); everything it starts is real: ``mkd worker``, Celery, Redis on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.redis_fixtures import REPO, queue, redis_server, wait_for  # noqa: F401

SCRIPT = REPO / "examples" / "slurm" / "mkd-workers.sbatch"
FAKES = REPO / "tests" / "fakes"


def test_sbatch_script_and_fake_srun_parse():
    for path in (SCRIPT, FAKES / "srun"):
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    text = SCRIPT.read_text()
    assert "#SBATCH --signal=B:TERM@" in text and "#SBATCH --requeue" in text


@pytest.mark.integration
def test_script_starts_one_worker_per_task_and_sigterm_hands_the_running_stage_back(queue):
    q = queue
    env = {**q.env, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "77",
           "MKD": str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "mkd"),
           "MKD_FAKE_HOLD": "teacher:rgb@5"}  # the teacher holds after its first checkpoint until signalled
    if not Path(env["MKD"]).is_file():
        env["MKD"] = f"{os.sys.executable} -m mkdcore.cli.main"
    log = open(q.root / "sbatch.out", "ab")
    batch = subprocess.Popen(["bash", str(SCRIPT)], cwd=q.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    q.workers.append(batch)  # the fixture kills its process group whatever happens
    host = socket.gethostname()
    nodes = [f"mkd-77-{i}-gpu{i}@{host}" for i in range(2)]  # task i got GPU i from srun
    for node in nodes:
        wait_for(lambda node=node: (q.runs / "workers" / f"{node}.json").is_file(), 60, f"worker {node} heartbeat")
    job = q.submit(q.config(teacher={"training": {"tasks": 10, "checkpoint_every": 5}}))[0]
    teacher = lambda: q.store().load(job.id).stage("teacher:rgb")  # noqa: E731
    wait_for(lambda: (Path(teacher().stage_dir) / "checkpoints" / "last.json").is_file(), 90, "a teacher checkpoint")
    assert teacher().worker in nodes
    batch.send_signal(signal.SIGTERM)  # what --signal=B:TERM@300 does before the time limit
    assert batch.wait(90) == 0
    beats = {n: json.loads((q.runs / "workers" / f"{n}.json").read_text()) for n in nodes}
    assert all(b["stopped"] for b in beats.values())  # both workers stopped cleanly
    assert all(b["gpus"][0]["gpu"] == i for i, b in enumerate(beats.values()))  # each owns its task's GPU
    stage = teacher()
    assert stage.state == "queued" and stage.preempted == 1 and stage.attempts == 0, stage  # back in line, free
    out = (q.root / "sbatch.out").read_text()
    assert "fake srun: 2 task(s)" in out and "the workers hand back their stages" in out
    assert "teacher:rgb: SIGTERM, checkpoint at" in q.store().log_path(job.id, "teacher:rgb").read_text()
