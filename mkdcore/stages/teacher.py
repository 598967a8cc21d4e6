"""Stage ``teacher:<modality>``: a few-shot model trained on one modality's frames
(the original: ImageNet ResNet-50 + the mean-distance "Baseline" head, CE loss)."""

from __future__ import annotations

from typing import Any

from mkdcore.engine import seed_everything
from mkdcore.stages.base import StageContext
from mkdcore.stages.common import best_state, build_fewshot, data_spec, save_model
from mkdcore.stages.fewshot_training import train_on_frames


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    m = ctx.node.params["modality"]
    t = cfg.teacher
    seed_everything(t.training.seed)  # initial weights depend on the seed only, not on what ran before
    model, spec = build_fewshot(t.backbone, t.head, cfg.data.frames, t.pretrained.get(m))
    spec["modality"] = m
    spec["data"] = data_spec(cfg)
    result = train_on_frames(ctx, model, m, t.training, t.query_train or cfg.episodes.query_train)
    save_model(ctx.dir / "model", model, spec, best_state(ctx.dir))
    return {"modality": m, "tasks": result.tasks, "steps": result.steps, "best_val_acc": result.best_val,
            "best_task": result.best_task, "params": sum(p.numel() for p in model.parameters())}
