"""Stage ``fuse``: train the multi-modal teacher (MFM + TRX head) on the frozen
per-modality teacher features. No images are read here: episodes are built from the
stored features, so this stage is fast even on CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mkdcore import distributed
from mkdcore.data.episodes import Episode, EpisodeSampler
from mkdcore.engine import EpisodicTrainer, StepOutput, seed_everything
from mkdcore.models.build import build, fusion_spec
from mkdcore.models.folder import save_model, selected_weights
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import all_keys, split_of, val_episodes
from mkdcore.stages.scoring import feature_caches_for, score_episodes, stack_features
from mkdcore.tracking import stage_loggers


def stack_modalities(caches: dict[str, dict], keys, device) -> dict[str, torch.Tensor]:
    """``{modality: (N, T, D)}`` for the videos ``keys``."""
    return {m: stack_features(c, keys, device) for m, c in caches.items()}


def mfm_task_loss(logits: torch.Tensor, labels: torch.Tensor, tasks_per_batch: int) -> tuple[torch.Tensor, float]:
    """The MFM teacher's loss for ONE task and the "ce" term it logs.

    Spec section 4.3 (the original ``multi_fusion.py``): the cross-entropy is *summed*
    over the task's queries (TRX style), then divided by ``tasks_per_batch`` because the
    engine accumulates that many tasks per optimiser step without dividing again. This
    differs from the per-modality teachers, which average over queries (section 1.3);
    averaging here would scale MFM's gradients by 1/(way * query_train).

    Returns ``(loss, ce)`` where ``ce`` is the per-task summed CE (``loss * tasks_per_batch``,
    undivided), the number logged as the "ce" metric.
    """
    ce = F.cross_entropy(logits, labels, reduction="sum")
    return ce / tasks_per_batch, float(ce.detach())


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    f = cfg.fusion
    mods = list(cfg.modalities.names)
    stores = {m: ctx.nodes[f"features:{m}"].files.features for m in mods}
    caches = feature_caches_for(stores, all_keys(cfg), cfg.data.frames)
    dim = next(iter(next(iter(caches.values())).values())).shape[1]
    seed_everything(f.training.seed)  # initial weights depend on the seed only, not on what ran before
    model, spec = build(fusion_spec(cfg, dim))
    model.to(ctx.device)
    ep = cfg.episodes
    sampler = EpisodeSampler(split_of(cfg, "train"), ep.way, ep.shot, f.query_train or ep.query_train, seed=f.training.seed)
    device = ctx.device

    def logits_of(m: torch.nn.Module, e: Episode) -> torch.Tensor:
        labels = torch.tensor(e.support_labels, device=device)
        return m(stack_modalities(caches, e.support, device), labels, stack_modalities(caches, e.query, device))["logits"]

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        e = sampler.episode(task)
        logits = logits_of(m, e)
        labels = torch.tensor(e.query_labels, device=device)
        loss, ce = mfm_task_loss(logits, labels, f.training.tasks_per_batch)
        return StepOutput(loss, {"ce": ce}, int((logits.argmax(1) == labels).sum()), len(e.query))

    val_eps = distributed.shard(val_episodes(cfg, f.training.val_episodes, which="val", seed=f.training.seed))

    def validate(m: torch.nn.Module) -> float:
        m.eval()  # on N ranks: each scores its share, every rank gets the mean of all
        return float(np.mean(distributed.gather_lists(score_episodes(val_eps, lambda e: logits_of(m, e)).accuracies)))

    with stage_loggers(ctx) as loggers:
        result = EpisodicTrainer(model, f.training, ctx.dir, device, step, validate, progress=ctx.progress(f.training.tasks) if distributed.is_main() else None,
                                 stage_name=ctx.node.name, loggers=loggers).train()
    if distributed.is_main():  # rank 0 alone writes
        save_model(ctx.files.model, model, spec, selected_weights(ctx.files))
    return {"tasks": result.tasks, "best_val_acc": result.best_val, "best_task": result.best_task, "dim": dim,
            "params": sum(p.numel() for p in model.parameters())}
