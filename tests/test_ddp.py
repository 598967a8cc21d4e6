"""Data-parallel training (issue 16): 2 gloo ranks on CPU train like 1 process.

The toy problem has what makes data parallelism go wrong: BatchNorm (running statistics
move on every task's forward), dropout (model randomness), SGD momentum, a final
partial step (10 tasks, 4 per step: the last step has 2, one per rank), logging in the
middle of a step (log_every=3) and a validation that each rank computes on its share.
Everything runs in float64 so "the same" means within 1e-10 of round-off, checked at 1e-5.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from mkdcore import distributed
from mkdcore.config import TrainingConfig
from mkdcore.engine import EpisodicTrainer, StepOutput, Terminated, task_seed
from mkdcore.errors import TrainingError

CFG = dict(optimizer="sgd", lr=0.1, momentum=0.9, tasks=10, tasks_per_batch=4, checkpoint_every=4, val_every=4,
           log_every=3, val_episodes=5, seed=3)


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                               torch.nn.Linear(8, 3)).double()


def toy_batch(task: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(task_seed(0, task))
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def term_reaches_me_via(launcher: int) -> None:
    """SIGTERM the launcher and wait until its forwarded SIGTERM has reached this rank's
    handler: the request is then in this step's stop vote whatever the machine's load
    (without the wait, a late signal made the ranks stop one step later)."""
    arrived = threading.Event()
    engine_handler = signal.getsignal(signal.SIGTERM)

    def note(signum, frame) -> None:
        arrived.set()
        engine_handler(signum, frame)

    signal.signal(signal.SIGTERM, note)
    os.kill(launcher, signal.SIGTERM)
    assert arrived.wait(60), "the launcher did not forward SIGTERM"
    signal.signal(signal.SIGTERM, engine_handler)


def train_toy(stage_dir: str, kill: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """One rank's body (module level: spawned ranks import it). ``kill``: {"rank", "task",
    "how"} to interrupt at a task; "term" SIGTERMs the launcher, "kill" SIGKILLs the rank."""
    cfg = TrainingConfig(**CFG)
    model = toy_model()
    me = distributed.current().rank

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        if kill and kill["rank"] == me and kill["task"] == task:
            if kill["how"] == "term":
                term_reaches_me_via(os.getppid())  # the launcher forwards it to every rank
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        x, y = toy_batch(task)
        logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits, y) / cfg.tasks_per_batch
        return StepOutput(loss, {"ce": float(loss.detach()) * cfg.tasks_per_batch},
                          int((logits.argmax(1) == y).sum()), len(y))

    episodes = distributed.shard(list(range(100, 100 + cfg.val_episodes)))

    def validate(m: torch.nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            accs = [float((m(x).argmax(1) == y).double().mean()) for x, y in map(toy_batch, episodes)]
        return sum(distributed.gather_lists(accs)) / cfg.val_episodes

    EpisodicTrainer(model, cfg, Path(stage_dir), torch.device("cpu"), step, validate).train()
    return {k: v.clone() for k, v in model.state_dict().items()}


def metrics(stage_dir: Path) -> list[dict]:
    """The engine's records without wall-clock fields."""
    keep = ("task", "step", "lr", "loss", "ce", "train_acc", "val_acc")
    return [{k: v for k, v in json.loads(line).items() if k in keep}
            for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=1e-5), (k, (a[k] - b[k]).abs().max())


def assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for ra, rb in zip(a, b):
        assert ra == pytest.approx(rb, abs=1e-9), (ra, rb)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> tuple[dict[str, torch.Tensor], list[dict]]:
    d = tmp_path_factory.mktemp("one")
    weights = train_toy(str(d))
    return weights, metrics(d)


def two_ranks(d: Path, kill: dict | None = None) -> dict[str, torch.Tensor]:
    return distributed.launch(train_toy, (str(d), kill), 2, torch.device("cpu"), threads=1)


def test_rank_task_split_covers_each_step_in_order():
    assert [list(distributed.split_range(8, 10, r, 2)) for r in (0, 1)] == [[8], [9]]
    assert distributed.rank_tasks(10, 4, distributed.Ranks(1, 2)) == [2, 3, 6, 7, 9]
    assert sorted(distributed.rank_tasks(10, 4, distributed.Ranks(0, 2)) + [2, 3, 6, 7, 9]) == list(range(10))


def test_two_ranks_give_the_weights_and_metrics_of_one(tmp_path, one_rank):
    weights, records = one_rank
    assert any(r["step"] == 2 and r["task"] == 9 for r in records)  # a record in the middle of a step
    assert_same(two_ranks(tmp_path), weights)  # BatchNorm running statistics included
    assert_same_metrics(metrics(tmp_path), records)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["task"] == 10 and saved["step"] == 3
    assert_same(saved["model"], weights)


def test_a_killed_then_a_cancelled_two_rank_run_resumes_exactly(tmp_path, one_rank):
    weights, records = one_rank
    # SIGKILL of one rank: the group stops with one error, the last checkpoint stays
    with pytest.raises(TrainingError, match=r"rank 1 of 2 died \(signal 9\)"):
        two_ranks(tmp_path, {"rank": 1, "task": 6, "how": "kill"})
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["task"] == 4
    # SIGTERM to the launcher (as `mkd cancel` or SLURM): every rank stops at the step's end, rank 0 saves
    with pytest.raises(Terminated):
        two_ranks(tmp_path, {"rank": 1, "task": 6, "how": "term"})  # rank 1 runs 6, 7 of step 4..7
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["task"] == 8
    assert_same(two_ranks(tmp_path), weights)
    assert_same_metrics(metrics(tmp_path), records)  # the record at task 9 spans the checkpoint at 8


def test_devices_must_divide_tasks_per_batch(tmp_path):
    from mkdcore.testing import run_cli

    cfg = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    code, out, err = run_cli("config", "show", cfg, "--set", "runtime.devices=4")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert "devices = 4 does not divide teacher.training.tasks_per_batch = 2" in err
