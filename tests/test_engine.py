"""The training engine: accumulation, schedule, NaN guard, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from mkdcore.config import ScheduleConfig, TrainingConfig
from mkdcore.engine import EpisodicTrainer, StepOutput, Terminated, lr_factor, task_seed
from mkdcore.errors import TrainingError
from mkdcore.tracking.jsonl import WALL_CLOCK_KEYS


def make_problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))

    def step_fn(task: int, m: torch.nn.Module) -> StepOutput:
        g = torch.Generator().manual_seed(task_seed(0, task))
        x = torch.randn(6, 4, generator=g)
        y = torch.randint(0, 3, (6,), generator=g)
        logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return StepOutput(loss, correct=int((logits.argmax(1) == y).sum()), total=6)

    return model, step_fn


def cfg(**kw):
    base = dict(optimizer="sgd", lr=0.1, tasks=20, tasks_per_batch=4, checkpoint_every=8, val_every=8, log_every=2, seed=3)
    base.update(kw)
    return TrainingConfig(**base)


def read_metrics(path):
    """The records without their wall-clock keys (time, elapsed, rate: they differ between runs)."""
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK_KEYS} for line in path.read_text().splitlines()]


def test_resume_gives_identical_weights_and_metrics(tmp_path):
    model, step_fn = make_problem()
    val = lambda m: float(m[0].weight.detach().sum())  # noqa: E731 - deterministic "accuracy"
    full = EpisodicTrainer(model, cfg(), tmp_path / "a", torch.device("cpu"), step_fn, val)
    full.train()
    ref_weights = {k: v.clone() for k, v in model.state_dict().items()}
    ref_metrics = read_metrics(tmp_path / "a" / "metrics.jsonl")

    model2, _ = make_problem()

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def interrupted(task, m):
        calls["n"] += 1
        if task == 13:  # die mid-way, after the checkpoint at task 8
            raise Stop
        return step_fn(task, m)

    with pytest.raises(Stop):
        EpisodicTrainer(model2, cfg(), tmp_path / "b", torch.device("cpu"), interrupted, val).train()
    model3, _ = make_problem()
    result = EpisodicTrainer(model3, cfg(), tmp_path / "b", torch.device("cpu"), step_fn, val).train()
    assert result.resumed_from == 8
    for k, v in model3.state_dict().items():
        assert torch.allclose(v, ref_weights[k]), k
    assert read_metrics(tmp_path / "b" / "metrics.jsonl") == ref_metrics


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    model, step_fn = make_problem()

    def bad(task, m):
        out = step_fn(task, m)
        if task == 10:
            out.loss = out.loss * float("nan")
        return out

    with pytest.raises(TrainingError, match="loss is nan at task 11"):
        EpisodicTrainer(model, cfg(), tmp_path, torch.device("cpu"), bad).train()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["task"] == 8


def test_accumulation_steps_once_per_batch(tmp_path):
    model, step_fn = make_problem()
    result = EpisodicTrainer(model, cfg(tasks=10, tasks_per_batch=4), tmp_path, torch.device("cpu"), step_fn).train()
    assert (result.tasks, result.steps) == (10, 3)  # 4 + 4 + the final partial batch


def test_sigterm_checkpoints_and_raises(tmp_path):
    import os
    import signal

    model, step_fn = make_problem()

    def killer(task, m):
        if task == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(task, m)

    with pytest.raises(Terminated):
        EpisodicTrainer(model, cfg(), tmp_path, torch.device("cpu"), killer).train()
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["task"] == 8


def test_multistep_schedule_counts_tasks():
    c = TrainingConfig(lr=1.0, tasks=100, schedule=ScheduleConfig(kind="multistep", milestones=[10, 20], unit="tasks"))
    assert [lr_factor(c, t, 0) for t in (9, 10, 25)] == pytest.approx([1.0, 0.1, 0.01])
    c2 = TrainingConfig(lr=1.0, tasks=100, tasks_per_batch=4, schedule=ScheduleConfig(kind="multistep", milestones=[2], unit="steps"))
    assert lr_factor(c2, 50, 1) == 1.0 and lr_factor(c2, 50, 2) == pytest.approx(0.1)
