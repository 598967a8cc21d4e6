"""The episodic training loop shared by every training stage.

One *task* is one episode; gradients are accumulated over ``tasks_per_batch`` tasks
before one optimiser step (the Lite-MKD recipe). Everything needed to continue a run
exactly (model, optimiser, GradScaler, RNG states, task counter, best validation; the
learning rate is a pure function of the task counter, see :func:`lr_factor`) is checkpointed at optimiser-step boundaries, so a resumed run performs
the same steps and logs the same metrics as an uninterrupted one with the same seed:
episode ``i`` depends only on ``(seed, i)`` (see :func:`task_seed`), never on how many
tasks ran in this process.

Randomness inside the model (dropout) is reseeded per task from ``(seed, task)`` too,
so a task computes the same whichever process runs it: on N ranks
(:mod:`mkdcore.distributed`) each rank runs its contiguous share of a step's tasks, the
gradients are summed over the ranks once per step (the same sum one process
accumulates), BatchNorm running statistics are combined in task order, and rank 0 alone
writes checkpoints, metrics and progress.

Safety: a non-finite loss stops training with :class:`TrainingError` and leaves the
last good checkpoint in place; SIGTERM (e.g. ``mkd cancel``) writes a checkpoint at
the next optimiser-step boundary and the command exits with
:data:`mkdcore.errors.TERMINATED_EXIT_CODE` (143).
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from mkdcore import distributed, speed
from mkdcore.config import TrainingConfig
from mkdcore.errors import Terminated, TrainingError
from mkdcore.fileio import (
    CorruptFileError,
    atomic_torch_save,
    clean_stale_temps,
    read_torch,
)
from mkdcore.progress import ProgressReporter
from mkdcore.stages.stage_dir import StageDir
from mkdcore.tracking import Loggers, default_loggers


def task_seed(seed: int, task: int, stream: int = 0) -> int:
    """A seed for task ``task`` that does not depend on process history."""
    return int(np.random.SeedSequence([seed, stream, task]).generate_state(1)[0])


#: ``task_seed`` stream of the torch generator reseeded before each task's forward
MODEL_RNG_STREAM = 7


def build_optimizer(params, cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainingConfig, task: int, step: int) -> float:
    """Learning-rate multiplier after ``task`` tasks / ``step`` optimiser steps.

    The schedule's unit is explicit (``schedule.unit``): the original Lite-MKD code
    steps its MultiStepLR every task, so milestones [20000, 40000] count tasks.
    """
    s = cfg.schedule
    t = task if s.unit == "tasks" else step
    total = cfg.tasks if s.unit == "tasks" else math.ceil(cfg.tasks / cfg.tasks_per_batch)
    factor = 1.0
    if s.warmup and t < s.warmup:
        factor = (t + 1) / s.warmup
    if s.kind == "multistep":
        factor *= s.gamma ** sum(1 for m in s.milestones if t >= m)
    elif s.kind == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(t, total) / max(total, 1)))
    return factor


@dataclass
class StepOutput:
    """What a task's forward returns to the engine."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    total: int = 0


@dataclass
class TrainResult:
    tasks: int
    steps: int
    best_val: float | None
    best_task: int | None
    resumed_from: int
    seconds: float


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_atomic(obj: Any, path: Path) -> None:
    """Readers (a resume, ``selected_weights``) see the old checkpoint or the new one; a full
    disk is one line naming the file and leaves no temp file behind."""
    atomic_torch_save(path, obj, "checkpoint")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Checkpoints hold tensors, numbers, strings and RNG states only; one that cannot
    be read (truncated, overwritten) is one line saying how to start the stage over."""
    remedy = f"delete {path} to start the stage over"
    state = read_torch(path, "checkpoint", remedy)
    if not isinstance(state, dict) or "model" not in state:
        raise CorruptFileError(f"checkpoint {path} is not an mkd checkpoint (no model state); {remedy}")
    return state


class _Terminator:
    """Turns SIGTERM, and a first Ctrl-C (SIGINT), into a flag checked at task boundaries:
    the run stops at the end of its step with a checkpoint, so no finished work is lost.
    A second Ctrl-C stops at once (Python's usual KeyboardInterrupt), for a step that
    takes too long to wait for."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the first stop signal
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Terminator":
        if distributed.term_pending():  # a rank cancelled while it started
            self.requested, self.signum = True, signal.SIGTERM
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. tests driving the engine in a thread)
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C aborts
            print("\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C again: stop now, losing the step)",
                  file=sys.stderr, flush=True)
        self.requested = True
        self.signum = self.signum or signum

    @property
    def how(self) -> str:
        return "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else "stopped by SIGTERM"

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGTERM)

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class SilentProgress(ProgressReporter):
    """The progress of a rank other than 0: nothing shown, printed or written."""

    def start(self, done: int = 0) -> None:
        pass

    def update(self, step: int, **fields: Any) -> None:
        pass

    def event(self, name: str, step: int | None = None, **fields: Any) -> None:
        pass

    def finish(self, step: int) -> None:
        pass


@dataclass
class _LogWindow:
    """The tasks since the last metrics record; checkpointed, so a record whose window
    spans a checkpoint is the same after a resume."""

    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0
    correct: int = 0
    total: int = 0


@dataclass
class _TaskRecord:
    """What the loop keeps of one task for logging (gathered from every rank)."""

    task: int
    loss: float
    terms: dict[str, float]
    correct: int
    total: int


class EpisodicTrainer:
    """Train ``model`` on episodes with the recipe in ``cfg``.

    ``step_fn(task_index, model) -> StepOutput`` runs one episode forward (the caller
    builds the episode from ``task_seed(cfg.seed, task_index)``); ``validate_fn(model)
    -> float`` returns validation accuracy on the *val* split (model selection never
    looks at the test split). Inside a process group (:mod:`mkdcore.distributed`) every
    rank calls ``train()``; ``step_fn`` is then called for this rank's tasks only
    (:func:`mkdcore.distributed.rank_tasks`) and ``validate_fn`` on every rank (it shards
    and gathers itself and returns the same number everywhere).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainingConfig,
        stage_dir: Path,
        device: torch.device,
        step_fn: Callable[[int, torch.nn.Module], StepOutput],
        validate_fn: Callable[[torch.nn.Module], float] | None = None,
        progress: ProgressReporter | None = None,
        stage_name: str = "train",
        parameters: Iterator[torch.nn.Parameter] | None = None,
        loggers: Loggers | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.ranks = distributed.current()
        distributed.check_divisible(cfg.tasks_per_batch, self.ranks.world, "tasks_per_batch")
        self.files = StageDir(Path(stage_dir))
        if self.ranks.main:
            self.files.checkpoints.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(self.files.checkpoints)  # left by a run killed mid-save
        self.metrics_path = self.files.metrics
        self.device = device
        self.step_fn = step_fn
        self.validate_fn = validate_fn
        if not self.ranks.main:  # rank 0 alone reports
            progress = SilentProgress(stage_name, total=cfg.tasks)
        self.progress = progress or ProgressReporter(stage_name, total=cfg.tasks)
        self.stage_name = stage_name
        self.loggers = loggers or default_loggers(stage_name, self.files.path)  # metrics.jsonl, TensorBoard...
        params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.amp_dtype = speed.amp_dtype(cfg.amp, device, model)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None
        self.window = _LogWindow()

    # ---------------------------------------------------------------- checkpoints
    def _state(self, task: int, step: int, best: tuple[float | None, int | None]) -> dict[str, Any]:
        return {
            "format": "mkd-train-v1",
            "task": task,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": _rng_to_tensors(rng_state()),
            "best_val": best[0],
            "best_task": best[1],
            "log_window": {"sums": dict(self.window.sums), "n": self.window.n, "correct": self.window.correct,
                           "total": self.window.total},
        }

    def save(self, task: int, step: int, best: tuple[float | None, int | None]) -> None:
        save_atomic(self._state(task, step, best), self.files.last_checkpoint)

    def _resume(self) -> tuple[int, int, tuple[float | None, int | None]]:
        path = self.files.last_checkpoint
        if not path.exists():
            # killed before the first checkpoint: whatever was logged or selected belongs
            # to a run that will be redone from task 0
            if self.ranks.main:
                self.metrics_path.unlink(missing_ok=True)
                self.files.best_checkpoint.unlink(missing_ok=True)
            return 0, 0, (None, None)
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(f"checkpoint {path} does not fit this stage's model ({reason}); "
                                f"delete {path} to start the stage over") from None
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(_rng_from_tensors(state["rng"]))
        if "log_window" in state:  # checkpoints before issue 16 have none (their window restarts)
            self.window = _LogWindow(**state["log_window"])
        if self.ranks.main:
            self._truncate_metrics(state["task"])
            self._drop_newer_best(state["best_task"])
        return state["task"], state["step"], (state["best_val"], state["best_task"])

    def _drop_newer_best(self, best_task: int | None) -> None:
        """A best.pt selected after the checkpoint was taken is from tasks that will run
        again: drop it, the resumed run selects again (identically, same episodes)."""
        path = self.files.best_checkpoint
        if path.exists() and (best_task is None or load_checkpoint(path)["task"] != best_task):
            path.unlink()

    def _truncate_metrics(self, task: int) -> None:
        """Drop metric lines logged after the checkpoint (they will be logged again)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("task", 0) <= task:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        self.metrics_path.write_text("".join(k + "\n" for k in kept))

    def _log(self, record: dict[str, Any]) -> None:
        self.loggers.log(record)

    # ---------------------------------------------------------------- loop
    def _set_lr(self, task: int, step: int) -> float:
        f = lr_factor(self.cfg, task, step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f
        return self.optimizer.param_groups[0]["lr"]

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip
            )
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _run_tasks(self, tasks: range, step: int) -> tuple[list[_TaskRecord], tuple[int, float] | None]:
        """Forward and backward of ``tasks`` (this rank's share of one step); stops at a
        non-finite loss and returns it as ``(task, loss)`` instead of backpropagating it."""
        records = []
        for t in tasks:
            self._set_lr(t, step)
            torch.manual_seed(task_seed(self.cfg.seed, t, MODEL_RNG_STREAM))  # dropout: a pure function of the task
            autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
            with autocast:
                out = self.step_fn(t, self.model)
            loss = out.loss
            if not torch.isfinite(loss.detach()).all():
                return records, (t, loss.item())
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            records.append(_TaskRecord(t, float(loss.detach()), {k: float(v) for k, v in out.terms.items()},
                                       out.correct, out.total))
        return records, None

    def _gather(self, records: list[_TaskRecord], bad: tuple[int, float] | None,
                stop: bool) -> tuple[list[_TaskRecord], tuple[int, float] | None, bool]:
        """Every rank's task records (task order), the first non-finite loss, and whether
        any rank was asked to stop: the same decisions on every rank."""
        if self.ranks.world == 1:
            return records, bad, stop
        parts = distributed.gather_objects((records, bad, stop))
        all_records = sorted((r for part in parts for r in part[0]), key=lambda r: r.task)
        bads = [part[1] for part in parts if part[1] is not None]
        return all_records, min(bads) if bads else None, any(part[2] for part in parts)

    def train(self) -> TrainResult:
        cfg = self.cfg
        seed_everything(cfg.seed)
        task, step, best = self._resume()
        distributed.broadcast_module(self.model)
        resumed_from = task
        if task >= cfg.tasks:
            return TrainResult(task, step, best[0], best[1], resumed_from, 0.0)
        main = self.ranks.main
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        self.progress.start(done=task)
        if main:
            self.loggers.start(resumed_from=task)
        with _Terminator() as term:
            while task < cfg.tasks:
                tasks = distributed.step_tasks(task, cfg.tasks, cfg.tasks_per_batch)
                mine = distributed.split_range(tasks.start, tasks.stop, self.ranks.rank, self.ranks.world)
                bn_before = distributed.snapshot_batchnorm(self.model) if self.ranks.world > 1 else []
                records, bad, stop = self._gather(*self._run_tasks(mine, step), term.requested)
                if bad is not None:
                    raise TrainingError(
                        f"{self.stage_name}: loss is {bad[1]} at task {bad[0] + 1}; stopped, the last good "
                        f"checkpoint is {self.files.last_checkpoint} (lower training.lr or set training.grad_clip)"
                    )
                distributed.all_reduce_grads(p for g in self.optimizer.param_groups for p in g["params"])
                distributed.sync_batchnorm(self.model, bn_before)
                lr_of = {r.task: self.base_lrs[0] * lr_factor(cfg, r.task, step) for r in records}
                self._set_lr(tasks[-1], step)  # the step uses the rate of its last task, as one process does
                self._optimizer_step()
                step_before, step = step, step + 1
                w = self.window
                for r in records:
                    done = r.task + 1
                    for k, v in {"loss": r.loss, **r.terms}.items():
                        w.sums[k] = w.sums.get(k, 0.0) + v
                    w.n += 1
                    w.correct += r.correct
                    w.total += r.total
                    if done % cfg.log_every == 0 or done == cfg.tasks:
                        record = {"task": done, "step": step if done == tasks.stop else step_before, "lr": lr_of[r.task],
                                  **{k: v / w.n for k, v in w.sums.items()}}
                        if w.total:
                            record["train_acc"] = w.correct / w.total
                        if main:
                            self._log(record)
                            self.progress.update(done, loss=record["loss"])
                        w = self.window = _LogWindow()
                task = tasks.stop
                if self.validate_fn and _crossed(task, cfg.val_every, cfg.tasks_per_batch, cfg.tasks):
                    acc = self.validate_fn(self.model)
                    self.model.train()
                    if main:
                        self._log({"task": task, "step": step, "val_acc": acc})
                        self.progress.update(task, val_acc=acc)
                    if best[0] is None or acc > best[0]:
                        best = (acc, task)
                        if main:
                            save_atomic({"task": task, "model": self.model.state_dict(), "val_acc": acc},
                                        self.files.best_checkpoint)
                if _crossed(task, cfg.checkpoint_every, cfg.tasks_per_batch, cfg.tasks) or stop:
                    if main:
                        self.save(task, step, best)
                    if stop:
                        self.progress.event("terminated", task)
                        self.loggers.finish("terminated")
                        raise Terminated(f"{self.stage_name}: {term.how} at task {task}, checkpoint saved",
                                         exit_code=term.exit_code)
        if main:
            self.save(task, step, best)
        self.progress.finish(task)
        return TrainResult(task, step, best[0], best[1], resumed_from, time.perf_counter() - start)


def _crossed(task: int, every: int, per_batch: int, last: int) -> bool:
    """True at the first optimiser-step boundary at or after a multiple of ``every``."""
    if task == last:
        return True
    return (task // every) > ((task - per_batch) // every) if task >= per_batch else task >= every


def _rng_to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors and plain lists, so ``weights_only=True`` can load them."""
    py = state["python"]
    np_state = state["numpy"]
    out = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": state["torch"],
    }
    if "cuda" in state:
        out["cuda"] = state["cuda"]
    return out


def _rng_from_tensors(state: dict[str, Any]) -> dict[str, Any]:
    py = state["python"]
    npst = state["numpy"]
    out = {
        "python": (py[0], tuple(py[1]), py[2]),
        "numpy": (npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]),
        "torch": state["torch"],
    }
    if "cuda" in state:
        out["cuda"] = state["cuda"]
    return out
