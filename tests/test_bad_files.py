"""Every bad file a user can meet is one ``error:`` line naming it and the remedy.

Issue 10 ("one line for every bad file") and 11 ("one atomic_write"): a config or split
file that is not UTF-8, a damaged ``model.pt``/``model.json`` of a finished stage (read
by a later stage of ``mkd run`` and by ``mkd eval``), a damaged ``results.json``,
``job.json`` or ``last.pt``, and a full disk while writing a checkpoint, a job record or
a submitted config. Each test checks the exit code, exactly one ``error:`` line and no
traceback on stderr, the file's name in the message, and that no temp file is left.

Finished-stage files come from one smoke run per module; a test corrupts a copy of it
put in its place (same paths, as manifests may record them), and the pristine run is
put back afterwards, never touched. A full disk is a file-size limit (``RLIMIT_FSIZE``,
SIGXFSZ ignored so writes fail with ``EFBIG``) in a child process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch

from mkdcore.config import TrainingConfig, load_config
from mkdcore.engine import EpisodicTrainer
from mkdcore.jobs.model import JobRecord, StageRecord
from mkdcore.jobs.store import JobStore
from mkdcore.stages.base import StageNode
from mkdcore.testing import run_cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
#: a closed loopback port: `mkd status` reports the queue as unreachable at once
NO_REDIS = "redis://127.0.0.1:9/0"
#: the module's smoke run takes one to four minutes on 2 busy cores; its first user waits for it
slow = pytest.mark.slow
patient = pytest.mark.timeout(900)


@dataclass
class Smoke:
    data: Path
    runs: Path
    nodes: dict[str, StageNode]
    episodes_file: Path


@pytest.fixture(scope="module")
def smoke(smoke_template: Path) -> Smoke:
    """A private copy of the session's finished smoke experiment (tests/conftest.py),
    with its frozen test episodes."""
    from mkdcore.stages.dag import plan
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    nodes = {n.name: n for n in plan(load_config(ws.cfg, []))}
    return Smoke(ws.data, ws.runs, nodes, ws.episodes)


@pytest.fixture
def runs(smoke: Smoke) -> Iterator[Path]:
    """A copy of the finished runs dir at its own path, free to corrupt: the pristine
    one waits beside it and comes back after the test."""
    pristine = smoke.runs.with_name("runs-pristine")
    smoke.runs.rename(pristine)
    try:
        shutil.copytree(pristine, smoke.runs, symlinks=True)
        yield smoke.runs
    finally:
        shutil.rmtree(smoke.runs, ignore_errors=True)
        pristine.rename(smoke.runs)


def stage_dir(smoke: Smoke, stage: str) -> Path:
    return smoke.nodes[stage].stage_dir


def overrides(smoke: Smoke, runs: Path) -> list[str]:
    return ["--set", f"data.root={smoke.data}", "--set", f"runtime.runs_dir={runs}"]


def mkd_disk_full(limit: int, *args: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``mkd ARGS`` in a child whose files cannot grow past ``limit`` bytes (a full disk):
    ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a write past the limit fails with EFBIG.
    The child is forked from a zygote with torch imported (tests/faults/zygote.py)."""
    from tests.faults.zygote import run_mkd

    return run_mkd([str(a) for a in args], ROOT, {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
                   fsize=limit)


def error_line(result: tuple[int, str, str], *names: object, code: int = 2) -> str:
    """The one ``error:`` line of a failed command, checked to name every one of ``names``."""
    got, _, err = result
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert got == code and len(lines) == 1, (got, err)
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def truncate(path: Path) -> None:
    """Cut a file in half (a copy or a write that stopped part way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------ text files
def test_config_not_utf8(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    line = error_line(run_cli("run", bad))
    assert "not UTF-8" in line and "save it as UTF-8" in line


def test_split_file_not_utf8(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "rgb_l8" / "jump" / "v1").mkdir(parents=True)
    (root / "splits" / "mine").mkdir(parents=True)
    split = root / "splits" / "mine" / "testlist03.txt"
    split.write_bytes("jump/v1\nsaut\xe9/v2\n".encode("latin-1"))
    line = error_line(run_cli("data", "episodes", root, "--out", tmp_path / "e.json"), split)
    assert "not UTF-8" in line


# ----------------------------------------------------------- finished stages
@slow
@patient
def test_corrupt_model_weights_read_by_a_later_stage(smoke, runs, capsys):
    fuse = stage_dir(smoke, "fuse")
    truncate(fuse / "model" / "model.safetensors")
    result = run_cli("run", SMOKE, *overrides(smoke, runs), "--stages", "student:lite-mkd", "--force", "student:lite-mkd")
    line = error_line(result, fuse / "model" / "model.safetensors", "--force fuse", fuse)
    assert "corrupt" in line
    assert temp_files(runs) == []


@slow
@patient
def test_corrupt_model_files_read_by_eval(smoke, runs, capsys):
    student = stage_dir(smoke, "student:baseline")
    weights, spec = student / "model" / "model.safetensors", student / "model" / "model.json"
    weights.write_bytes(b"not a checkpoint")
    line = error_line(run_cli("eval", student, "--episodes", smoke.episodes_file, "--device", "cpu"), weights)
    assert "corrupt" in line and "--force student:baseline" in line
    shutil.copy(smoke.runs.with_name("runs-pristine") / weights.relative_to(smoke.runs), weights)
    truncate(spec)
    error_line(run_cli("eval", student, "--episodes", smoke.episodes_file, "--device", "cpu"), spec, "--force student:baseline")


@slow
@patient
def test_corrupt_results_json(smoke, runs, capsys):
    results = runs / "smoke" / "results.json"
    truncate(results)
    line = error_line(run_cli("results", runs), results)
    assert "--force report" in line
    # `mkd run` of a finished experiment prints its table from results.json
    line = error_line(run_cli("run", SMOKE, *overrides(smoke, runs)), results)
    assert "--force report" in line


@slow
@patient
def test_corrupt_last_checkpoint_on_resume(smoke, runs, capsys):
    teacher = stage_dir(smoke, "teacher:rgb")
    (teacher / "manifest.json").unlink()  # as if the run had been killed before it finished
    last = teacher / "checkpoints" / "last.pt"
    truncate(last)
    line = error_line(run_cli("run", SMOKE, *overrides(smoke, runs), "--stages", "teacher:rgb"), last)
    assert f"delete {last} to start the stage over" in line


# ---------------------------------------------------------------- job records
def _job(store: JobStore, job_id: str) -> JobRecord:
    job = JobRecord(id=job_id, name=job_id, config_hash="h", config_file=str(store.job_dir(job_id) / "config.yaml"),
                    cwd=str(store.runs_dir), runs_dir=str(store.runs_dir),
                    stages=[StageRecord(name="data", kind="data", key="k", stage_dir=str(store.runs_dir / "s"))])
    store.save(job)
    return job


def test_corrupt_job_record_in_status(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MKD_BROKER_URL", NO_REDIS)
    store = JobStore(tmp_path / "runs")
    _job(store, "j1-good")
    bad = _job(store, "j2-bad")
    truncate(store.record_path(bad.id))
    code, out, err = run_cli("status", "--runs-dir", store.runs_dir)
    assert code == 0 and "Traceback" not in err and err == "", err
    assert "j1-good" in out
    corrupt = [line for line in out.splitlines() if "j2-bad" in line]
    assert len(corrupt) == 1 and "corrupt" in corrupt[0] and "job.json" in corrupt[0], out
    code, out, _ = run_cli("status", "--runs-dir", store.runs_dir, "--json")
    assert [c["id"] for c in json.loads(out)["corrupt"]] == ["j2-bad"]
    # asking for that job is one line naming its record and how to be rid of it
    line = error_line(run_cli("status", "j2-bad", "--runs-dir", store.runs_dir), store.record_path(bad.id))
    assert f"delete {store.job_dir(bad.id)}" in line


# ------------------------------------------------------------------ disk full
@slow
@patient
def test_disk_full_while_saving_a_checkpoint(smoke, runs):
    teacher = stage_dir(smoke, "teacher:rgb")
    result = mkd_disk_full(1 << 20, "run", SMOKE, *overrides(smoke, runs), "--stages", "teacher:rgb", "--force", "teacher:rgb")
    line = error_line(result, teacher / "checkpoints" / "last.pt")
    assert "no space left" in line
    assert temp_files(runs) == []


def test_disk_full_while_writing_a_job_record(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = _job(store, "j1-full")
    before = store.record_path(job.id).read_bytes()
    result = mkd_disk_full(64, "cancel", job.id, "--no-wait", "--runs-dir", store.runs_dir)
    line = error_line(result, store.record_path(job.id))
    assert "no space left" in line
    assert store.record_path(job.id).read_bytes() == before  # the old record stands whole
    assert temp_files(store.root) == []


@slow
@patient
def test_disk_full_while_submitting(smoke, tmp_path):
    from tests.redis_fixtures import RedisServer, _require_redis

    _require_redis()
    server = RedisServer(tmp_path).start()
    try:
        runs = tmp_path / "runs"
        result = mkd_disk_full(64, "submit", SMOKE, *overrides(smoke, runs), env={"MKD_BROKER_URL": server.url})
    finally:
        server.stop()
    line = error_line(result, "config.yaml")
    assert "no space left" in line and str(runs / "jobs") in line
    assert temp_files(runs) == []


# ------------------------------------------------------------- stale temp files
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stale_temps_are_cleaned_at_stage_start_and_store_open(tmp_path):
    pid = _dead_pid()
    ckpt = tmp_path / "stage" / "checkpoints"
    ckpt.mkdir(parents=True)
    stale = [ckpt / f".last.pt.tmp-{pid}", ckpt / f"last.pt.tmp-{pid}"]  # fileio's and the old writer's names
    mine = ckpt / f".best.pt.tmp-{os.getpid()}"  # a live writer's (this process) stays
    for p in [*stale, mine]:
        p.write_bytes(b"x")
    EpisodicTrainer(torch.nn.Linear(1, 1), TrainingConfig(), tmp_path / "stage", torch.device("cpu"), step_fn=lambda t, m: None)
    assert not any(p.exists() for p in stale) and mine.exists()

    store = JobStore(tmp_path / "runs")
    job = _job(store, "j1-stale")
    left = [store.job_dir(job.id) / f".job.json.tmp-{pid}", store.job_dir(job.id) / f".config.yaml.tmp-{pid}"]
    for p in left:
        p.write_bytes(b"x")
    with JobStore(store.runs_dir).transaction():
        pass
    assert not any(p.exists() for p in left)
