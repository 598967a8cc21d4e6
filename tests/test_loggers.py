"""Loggers are plugins: each built-in tracker writes what its own reader reads back, and a
logger that fails never stops training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mkdcore import testing
from mkdcore.config import TrainingConfig, config_from_dict
from mkdcore.engine import EpisodicTrainer, StepOutput, task_seed
from mkdcore.errors import ConfigError
from mkdcore.stages.stage_dir import StageDir
from mkdcore.tracking import Logger, Loggers, RunInfo
from mkdcore.tracking.jsonl import JsonlLogger

LOGGERS = ["jsonl", "tensorboard", "mlflow", "wandb"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> testing.TrainCheck:
    """One tiny teacher stage (2 tasks, validated once) logged to every built-in tracker."""
    work = tmp_path_factory.mktemp("loggers")
    return testing.derive_and_train("rgb", work, tasks=2, logging={"loggers": LOGGERS})


def read_tensorboard(stage_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(stage_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def read_mlflow(runs_dir: Path, stage: str, metric: str) -> tuple[dict[str, str], list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(runs_dir.resolve() / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mkd.stage` = '{stage}'")
    history = client.get_metric_history(run.info.run_id, metric)
    return run.data.tags | {"status": run.info.status}, [(m.step, m.value) for m in history]


def read_wandb(stage_dir: Path, key: str) -> list[tuple[int, float]]:
    """``key``'s history from the offline run file (LevelDB-log framing of W&B's protobuf
    records, the format ``wandb sync`` uploads)."""
    from wandb.proto import wandb_internal_pb2

    (run_file,) = (stage_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                if key in items:
                    out.append((items["_step"], items[key]))
    return out


def same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """Same tasks, same values (TensorBoard stores float32)."""
    return [t for t, _ in got] == [t for t, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def test_every_tracker_reads_back_the_final_accuracy_of_the_jsonl(teacher: testing.TrainCheck) -> None:
    stage_dir = teacher.stage_dir
    runs_dir = stage_dir.parents[2]
    val = [(r["task"], r["val_acc"]) for r in teacher.metrics if "val_acc" in r]
    loss = [(r["task"], r["loss"]) for r in teacher.metrics if "loss" in r]
    assert val and loss and all("time" in r and "elapsed" in r for r in teacher.metrics)
    assert same(read_tensorboard(stage_dir, "val/acc"), val)
    assert same(read_tensorboard(stage_dir, "train/loss"), loss)
    tags, history = read_mlflow(runs_dir, "teacher:rgb", "val/acc")
    assert same(history, val)
    assert tags["status"] == "FINISHED" and tags["mkd.stage_dir"] == str(stage_dir)
    assert same(read_wandb(stage_dir, "val/acc"), val)
    assert same(read_wandb(stage_dir, "train/loss"), loss)


# ------------------------------------------------------------------ failure isolation
class Exploding(Logger):
    """Fails on its second scalar record, as a tracker does when the disk fills."""

    def __init__(self) -> None:
        self.calls = 0

    def scalars(self, task: int, values: dict[str, float]) -> None:
        self.calls += 1
        if self.calls == 2:
            raise OSError(28, "No space left on device")


def test_a_logger_that_raises_is_dropped_with_one_warning_and_training_finishes(tmp_path: Path, capfd) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        g = torch.Generator().manual_seed(task_seed(0, task))
        x, y = torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
        return StepOutput(torch.nn.functional.cross_entropy(m(x), y))

    run = RunInfo(experiment="x", stage="teacher:rgb", kind="teacher", key="k", stage_dir=tmp_path, runs_dir=tmp_path)
    boom = Exploding()
    loggers = Loggers(run, [("boom", boom), ("jsonl", JsonlLogger())])
    cfg = TrainingConfig(lr=0.1, tasks=8, tasks_per_batch=2, log_every=2, checkpoint_every=4, val_every=4)
    result = EpisodicTrainer(model, cfg, tmp_path, torch.device("cpu"), step, lambda m: 0.5, loggers=loggers).train()
    assert result.tasks == 8
    assert boom.calls == 2 and loggers.dropped == ["boom"]  # never called again
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "logger 'boom'" in warnings[0] and "No space left" in warnings[0]
    tasks = [json.loads(line)["task"] for line in StageDir(tmp_path).metrics.read_text().splitlines()]
    assert tasks == [2, 4, 4, 6, 8, 8]  # the other loggers lost nothing


# ------------------------------------------------------------------ configuration
def config(logging: dict) -> dict:
    return {"logging": logging}


def test_a_configured_logger_whose_library_is_missing_is_one_line_naming_the_extra(monkeypatch, plugin_manager) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        config_from_dict(config({"loggers": ["jsonl", "mlflow"]}), source="exp.yaml")
    message = str(err.value)
    assert "\n" not in message and "exp.yaml" in message and "pip install 'lite-mkd[mlflow]'" in message


@pytest.mark.parametrize("logging, expected", [
    ({"loggers": ["jsonl", "nope"]}, "registered loggers: jsonl, mlflow, tensorboard, wandb"),
    ({"loggers": ["jsonl"], "options": {"mlflow": {}}}, "'mlflow', which is not in logging.loggers"),
    ({"loggers": ["jsonl", "jsonl"]}, "listed twice"),
    ({"loggers": ["tensorboard"], "options": {"tensorboard": {"flush_sec": 1}}}, "flush_sec: unknown key"),
])
def test_bad_logging_sections_are_one_line(logging: dict, expected: str, plugin_manager) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(config(logging), source="exp.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ the test accuracies
@pytest.mark.slow
def test_the_evaluate_stage_logs_each_models_test_accuracy_to_every_tracker(smoke_template) -> None:
    """The finished smoke experiment, evaluated again with ``logging.loggers: [jsonl,
    tensorboard, mlflow]``: each tracker's own reader gives back every model's test
    accuracy as ``results.json`` has it (the number a run page should show)."""
    from mkdcore.testing import run_cli
    from tests.faults.workspace import fresh

    ws = fresh(smoke_template)
    code, _, err = run_cli("run", ws.cfg, "--stages", "evaluate", "--force", "evaluate",
                           "--set", "logging.loggers=[jsonl, tensorboard, mlflow]")
    assert code == 0, err
    (stage_dir,) = (ws.runs / "stages" / "evaluate").iterdir()
    results = json.loads((stage_dir / "results.json").read_text())["models"]
    assert {"student:lite-mkd", "student:baseline", "teacher:mfm"} <= set(results)
    (record,) = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    for name, r in results.items():
        key = "test_acc_" + name.replace(":", "_")
        assert record[key] == pytest.approx(r["accuracy"])
        assert read_tensorboard(stage_dir, f"val/{key}") == [(0, pytest.approx(r["accuracy"], rel=1e-6))]
        _, history = read_mlflow(ws.runs, "evaluate", f"val/{key}")
        assert history == [(0, pytest.approx(r["accuracy"]))]
