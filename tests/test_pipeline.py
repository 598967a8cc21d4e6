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


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "smoke"


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory) -> Path:
    """One runs dir for the module, so teachers trained by one test serve the next."""
    return tmp_path_factory.mktemp("runs")


def smoke_cfg(data: Path, runs: Path, *extra: str):
    return load_config(SMOKE, [f"data.root={data}", f"runtime.runs_dir={runs}", *extra])


@pytest.mark.slow
def test_smoke_dag_end_to_end_then_skip_then_share(smoke_data, shared_runs):
    runs = shared_runs
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
def test_killed_student_resumes_exactly(smoke_data, shared_runs, tmp_path):
    overrides = ["training.tasks=24", "training.checkpoint_every=2", "training.log_every=1", "training.val_every=6"]
    # reference: uninterrupted (teachers are trained once and shared by both runs)
    ref_cfg = smoke_cfg(smoke_data, shared_runs, *overrides)
    run_experiment(ref_cfg, stages=["student:lite-mkd"], echo=lambda m: None)
    node = next(n for n in plan(ref_cfg) if n.name == "student:lite-mkd")
    reference = (node.stage_dir / "metrics.jsonl").read_text()
    # same experiment in a second runs dir, sharing the finished teacher stages by copy
    runs2 = tmp_path / "runs2"
    import shutil

    shutil.copytree(shared_runs, runs2)
    shutil.rmtree(runs2 / "stages" / "student" / node.key)
    progress = tmp_path / "progress.jsonl"
    cmd = [sys.executable, "-m", "mkdcore.cli.main", "run", str(SMOKE), "--stages", "student:lite-mkd",
           "--set", f"data.root={smoke_data}", "--set", f"runtime.runs_dir={runs2}", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "MKD_PROGRESS_FILE": str(progress), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        # metrics.jsonl gets a line per task at once (progress events are rate-limited to 1/s,
        # which let a fast run finish before the kill landed)
        metrics = runs2 / "stages" / "student" / node.key / "metrics.jsonl"
        tasks = [json.loads(x).get("task", 0) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
        if tasks and max(tasks) >= 7:
            break
        if proc.poll() is not None:
            pytest.fail("mkd run finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt_dir = runs2 / "stages" / "student" / node.key / "checkpoints"
    import torch

    killed_at = torch.load(ckpt_dir / "last.pt", weights_only=True)["task"]
    assert 2 <= killed_at < 24
    result = subprocess.run(cmd, env={**env, "MKD_PROGRESS_FILE": str(tmp_path / "p2.jsonl")}, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "[run ] teacher" not in result.stderr and "[skip] teacher:rgb" in result.stderr
    resumed = [e for e in _progress(tmp_path / "p2.jsonl") if e["event"] == "start" and e["stage"] == "student:lite-mkd"]
    assert resumed and resumed[0]["step"] == killed_at
    got = [json.loads(x) for x in (runs2 / "stages" / "student" / node.key / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in reference.splitlines()]
    assert [r["task"] for r in got] == [r["task"] for r in want]
    for a, b in zip(got, want):
        for k in set(b) - WALL_CLOCK_KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (k, a, b)
