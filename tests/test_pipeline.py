"""End to end: the smoke DAG runs in-process, skips finished stages, shares teachers
between experiments, and resumes a killed student exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkdcore.config import load_config
from mkdcore.stages.dag import plan
from mkdcore.stages.runner import run_experiment
from mkdcore.tracking.jsonl import WALL_CLOCK_KEYS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def smoke_cfg(data: Path, runs: Path, *extra: str):
    return load_config(SMOKE, [f"data.root={data}", f"runtime.runs_dir={runs}", *extra])


@pytest.mark.slow
def test_smoke_dag_end_to_end_then_skip_then_share(tmp_path):
    smoke_data, runs = tmp_path / "data" / "smoke", tmp_path / "runs"
    cfg = smoke_cfg(smoke_data, runs)
    nodes, ran = run_experiment(cfg, echo=lambda m: None)
    assert ran == [n.name for n in plan(cfg)]
    exp = runs / "smoke"
    results = json.loads((exp / "results.json").read_text())
    assert set(results["models"]) == {"teacher:rgb", "teacher:depth", "teacher:flow", "teacher:mfm", "student:lite-mkd", "student:baseline"}
    for name, m in results["models"].items():
        assert 0 <= m["accuracy"] <= 100 and m["ci95"] >= 0 and m["episodes"] == 20, name
        assert m["params"] > 0 and m["gmacs"] > 0, name
    assert results["models"]["student:lite-mkd"]["distiller"] == "d2m"
    for png in ("training_curves.png", "accuracy.png", "accuracy_vs_gmacs.png"):
        assert (exp / png).stat().st_size > 1000
    assert "student:lite-mkd" in (exp / "report.md").read_text()

    # a rerun redoes nothing
    _, ran = run_experiment(cfg, echo=lambda m: None)
    assert ran == []

    # --force retrains from scratch and redoes what depends on it
    baseline = next(n for n in plan(cfg) if n.name == "student:baseline")
    before = _metrics(baseline.stage_dir / "metrics.jsonl")
    _, ran = run_experiment(cfg, force=["student:baseline"], echo=lambda m: None)
    assert ran == ["student:baseline", "evaluate", "report"]
    assert _metrics(baseline.stage_dir / "metrics.jsonl") == before  # same seed: same run, from task 1

    # another experiment with a different student shares every teacher stage
    other = smoke_cfg(smoke_data, runs, "name=smoke-lr", "training.lr=0.002")
    _, ran = run_experiment(other, echo=lambda m: None)
    assert sorted(ran) == ["evaluate", "report", "student:baseline", "student:lite-mkd"]


def _metrics(path: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock keys (time, elapsed, rate)."""
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK_KEYS} for line in path.read_text().splitlines()]


def _progress(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_killed_student_resumes_exactly(smoke_template, tmp_path, monkeypatch):
    """A real ``mkd run`` killed with SIGKILL mid-training, then resumed: the resumed run
    starts at the last checkpoint and ends with the metrics of an uninterrupted run. The
    teachers and the MFM come from the session's finished smoke experiment (a private
    copy); the resume runs in this process (the kill is what needs a process)."""
    import shutil

    import torch

    from mkdcore.testing import run_cli
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    overrides = ["training.tasks=24", "training.checkpoint_every=2", "training.log_every=1", "training.val_every=6"]
    # reference: uninterrupted, on the shared teachers
    ref_cfg = load_config(ws.cfg, overrides)
    _, ran = run_experiment(ref_cfg, stages=["student:lite-mkd"], echo=lambda m: None)
    assert ran == ["student:lite-mkd"]  # the overrides make a new student; teachers, MFM shared
    node = next(n for n in plan(ref_cfg) if n.name == "student:lite-mkd")
    reference = (node.stage_dir / "metrics.jsonl").read_text()
    shutil.rmtree(node.stage_dir)  # the same experiment again, from nothing but the teachers
    args = ["run", str(ws.cfg), "--stages", "student:lite-mkd", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "MKD_PROGRESS_FILE": str(tmp_path / "progress.jsonl"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mkdcore.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = node.stage_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        # metrics.jsonl gets a line per task at once (progress events are rate-limited to 1/s,
        # which let a fast run finish before the kill landed)
        tasks = [json.loads(x).get("task", 0) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
        if tasks and max(tasks) >= 7:
            break
        if proc.poll() is not None:
            pytest.fail("mkd run finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(node.stage_dir / "checkpoints" / "last.pt", weights_only=True)["task"]
    assert 2 <= killed_at < 24
    assert not node.manifest_path.exists()
    monkeypatch.setenv("MKD_PROGRESS_FILE", str(tmp_path / "p2.jsonl"))
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "[run ] teacher" not in err and "[skip] teacher:rgb" in err
    resumed = [e for e in _progress(tmp_path / "p2.jsonl") if e["event"] == "start" and e["stage"] == "student:lite-mkd"]
    assert resumed and resumed[0]["step"] == killed_at
    got = [json.loads(x) for x in metrics.read_text().splitlines()]
    want = [json.loads(x) for x in reference.splitlines()]
    assert [r["task"] for r in got] == [r["task"] for r in want]
    for a, b in zip(got, want):
        for k in set(b) - WALL_CLOCK_KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (k, a, b)
