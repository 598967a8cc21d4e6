"""Train a frame-level few-shot model (a per-modality teacher or a student) on episodes.

The model is a :class:`mkdcore.models.fewshot.FewShotModel`; the loss is either plain
cross-entropy (teachers) or a distiller fed with a frozen teacher's outputs on the same
videos (students). Model selection uses the val split only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mkdcore import distributed, speed
from mkdcore.config import TrainingConfig
from mkdcore.data.device_decode import resolve_decode
from mkdcore.data.episodes import EpisodeSampler
from mkdcore.data.features import FeatureStore
from mkdcore.data.loader import EpisodeDataset, OrderedEpisodes, to_device
from mkdcore.engine import EpisodicTrainer, StepOutput, TrainResult
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import layout_of, split_of, transform_of, val_episodes
from mkdcore.stages.scoring import score_on_frames
from mkdcore.tracking import stage_loggers


def validation_fn(ctx: StageContext, modality: str, training: TrainingConfig) -> Callable[[torch.nn.Module], float]:
    """Mean accuracy on ``training.val_episodes`` val-split episodes (cached features);
    on N ranks each scores its share and every rank gets the mean of all."""
    cfg = ctx.cfg
    episodes = distributed.shard(val_episodes(cfg, training.val_episodes, which="val", seed=training.seed))
    layout, transform = layout_of(cfg), transform_of(cfg, train=False)

    def validate(model: torch.nn.Module) -> float:
        scores = score_on_frames(model, episodes, layout, modality, transform, cfg.data.frames, ctx.device,
                                 cfg.evaluation.batch_frames, amp=training.amp, decode=cfg.runtime.decode)
        return float(np.mean(distributed.gather_lists(scores.accuracies)))

    return validate


class RankTasks(torch.utils.data.Dataset):
    """Item ``p`` is training task ``tasks[p]``: the episodes this rank runs, in order, so
    the prefetching loader reads ahead only what this rank needs (all tasks on one rank)."""

    def __init__(self, dataset: EpisodeDataset, tasks: list[int]) -> None:
        self.dataset, self.tasks, self.seed = dataset, tasks, dataset.seed
        self.position = {t: p for p, t in enumerate(tasks)}

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, p: int) -> dict[str, Any]:
        return self.dataset[self.tasks[p]]


def train_on_frames(
    ctx: StageContext,
    model: torch.nn.Module,
    modality: str,
    training: TrainingConfig,
    query: int,
    loss_fn: Callable[[dict[str, Any], dict[str, Any]], tuple[torch.Tensor, dict[str, float]]] | None = None,
    teacher_store: Path | None = None,
) -> TrainResult:
    """Episodic training of ``model`` on frames of ``modality``; returns the engine result."""
    cfg = ctx.cfg
    ep = cfg.episodes
    sampler = EpisodeSampler(split_of(cfg, "train"), ep.way, ep.shot, query, seed=training.seed)
    stores = {"teacher": FeatureStore(teacher_store)} if teacher_store is not None else None
    dataset = EpisodeDataset(
        layout_of(cfg), None, sampler, modalities=[modality], transform=transform_of(cfg, train=True),
        feature_stores=stores, frames=cfg.data.frames, num_episodes=training.tasks, seed=training.seed,
        decode=resolve_decode(cfg.runtime.decode, ctx.device),
    )
    mine = RankTasks(dataset, distributed.rank_tasks(training.tasks, training.tasks_per_batch, distributed.current()))
    batches = OrderedEpisodes(mine, cfg.data.num_workers, ctx.device)  # type: ignore[arg-type]
    model.to(ctx.device)
    speed.prepare_model(model, speed.wants_channels_last(cfg.runtime.channels_last, ctx.device), cfg.runtime.compile)

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        batch = to_device(batches.get(mine.position[task]), ctx.device)
        frames = batch["frames"][modality]
        out = m(frames["support"], batch["support_labels"], frames["query"])
        labels = batch["query_labels"]
        if loss_fn is None:
            # Teachers: mean CE over queries, averaged over the tasks of one optimiser step.
            loss = F.cross_entropy(out["logits"], labels) / training.tasks_per_batch
            terms = {"ce": float(loss.detach()) * training.tasks_per_batch}
        else:
            loss, terms = loss_fn(batch, out)
        correct = int((out["logits"].argmax(1) == labels).sum())
        return StepOutput(loss, terms, correct, int(labels.numel()))

    with stage_loggers(ctx) as loggers:
        trainer = EpisodicTrainer(model, training, ctx.dir, ctx.device, step, validation_fn(ctx, modality, training),
                                  progress=ctx.progress(training.tasks) if distributed.is_main() else None,
                                  stage_name=ctx.node.name, loggers=loggers)
        return trainer.train()
