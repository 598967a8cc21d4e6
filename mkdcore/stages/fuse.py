"""Stage ``fuse``: train the multi-modal teacher (MFM + TRX head) on the frozen
per-modality teacher features. No images are read here: episodes are built from the
stored features, so this stage is fast even on CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mkdcore import api
from mkdcore.data.episodes import Episode, EpisodeSampler
from mkdcore.engine import EpisodicTrainer, StepOutput, seed_everything
from mkdcore.stages.base import StageContext
from mkdcore.stages.common import (
    all_keys,
    best_state,
    feature_caches_for,
    resolved,
    save_model,
    score_episodes,
    split_of,
    stack_features,
    val_episodes,
)


class FusionTeacher(torch.nn.Module):
    """Fusion module + few-shot head over fused features; ``fuse`` is also what
    ``mm_features`` stores, so training and extraction share one forward."""

    def __init__(self, fusion: torch.nn.Module, head: torch.nn.Module, modalities: list[str], dim: int) -> None:
        super().__init__()
        self.fusion, self.head, self.modalities, self.dim = fusion, head, modalities, dim

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion({m: feats[m] for m in self.modalities})

    def forward(self, support: dict[str, torch.Tensor], labels: torch.Tensor, query: dict[str, torch.Tensor], way: int | None = None) -> dict[str, Any]:
        return self.head(self.fuse(support), labels, self.fuse(query), way=way)


def build_fusion_teacher(spec: dict[str, Any]) -> tuple[FusionTeacher, dict[str, Any]]:
    fusion = api.create("fusion", spec["fusion"]["name"], **spec["fusion"]["options"])
    head = api.create("head", spec["head"]["name"], **spec["head"]["options"])
    return FusionTeacher(fusion, head, spec["modalities"], spec["dim"]), spec


def fusion_spec(ctx: StageContext, dim: int) -> dict[str, Any]:
    cfg = ctx.cfg
    f = cfg.fusion
    fusion_c = resolved("fusion", f.module, dim=dim, seq_len=cfg.data.frames, modalities=list(cfg.modalities.names))
    head_c = resolved("head", f.head, in_dim=dim, seq_len=cfg.data.frames)
    return {"type": "fusion_teacher", "fusion": fusion_c.model_dump(mode="json"), "head": head_c.model_dump(mode="json"),
            "modalities": list(cfg.modalities.names), "frames": cfg.data.frames, "dim": dim}


def stack(caches: dict[str, dict], keys, device) -> dict[str, torch.Tensor]:
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
    stores = {m: ctx.dep(f"features:{m}").stage_dir / "features" for m in mods}
    caches = feature_caches_for(stores, all_keys(cfg), cfg.data.frames)
    dim = next(iter(next(iter(caches.values())).values())).shape[1]
    spec = fusion_spec(ctx, dim)
    seed_everything(f.training.seed)  # initial weights depend on the seed only, not on what ran before
    model, _ = build_fusion_teacher(spec)
    model.to(ctx.device)
    ep = cfg.episodes
    sampler = EpisodeSampler(split_of(cfg, "train"), ep.way, ep.shot, f.query_train or ep.query_train, seed=f.training.seed)
    device = ctx.device

    def logits_of(m: torch.nn.Module, e: Episode) -> torch.Tensor:
        labels = torch.tensor(e.support_labels, device=device)
        return m(stack(caches, e.support, device), labels, stack(caches, e.query, device))["logits"]

    def step(task: int, m: torch.nn.Module) -> StepOutput:
        e = sampler.episode(task)
        logits = logits_of(m, e)
        labels = torch.tensor(e.query_labels, device=device)
        loss, ce = mfm_task_loss(logits, labels, f.training.tasks_per_batch)
        return StepOutput(loss, {"ce": ce}, int((logits.argmax(1) == labels).sum()), len(e.query))

    val_eps = val_episodes(cfg, f.training.val_episodes, which="val", seed=f.training.seed)

    def validate(m: torch.nn.Module) -> float:
        m.eval()
        return float(np.mean(score_episodes(val_eps, lambda e: logits_of(m, e)).accuracies))

    result = EpisodicTrainer(model, f.training, ctx.dir, device, step, validate, progress=ctx.progress(f.training.tasks), stage_name=ctx.node.name).train()
    save_model(ctx.dir / "model", model, spec, best_state(ctx.dir))
    return {"tasks": result.tasks, "best_val_acc": result.best_val, "best_task": result.best_task, "dim": dim,
            "params": sum(p.numel() for p in model.parameters())}
