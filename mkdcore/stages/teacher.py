"""Stage ``teacher:<modality>``: a few-shot model trained on one modality's frames
(the original: ImageNet ResNet-50 + the mean-distance "Baseline" head, CE loss)."""

from __future__ import annotations

from typing import Any

from mkdcore import distributed
from mkdcore.engine import seed_everything
from mkdcore.models.build import build, teacher_spec
from mkdcore.models.folder import save_model, selected_weights
from mkdcore.stages.base import StageContext
from mkdcore.stages.dataset import data_spec
from mkdcore.stages.fewshot_training import train_on_frames


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    m = ctx.node.params["modality"]
    t = cfg.teacher
    seed_everything(t.training.seed)  # initial weights depend on the seed only, not on what ran before
    model, spec = build(teacher_spec(cfg, m), t.pretrained.get(m))
    spec["data"] = data_spec(cfg)
    result = train_on_frames(ctx, model, m, t.training, t.query_train or cfg.episodes.query_train)
    if distributed.is_main():  # rank 0 alone writes
        save_model(ctx.files.model, model, spec, selected_weights(ctx.files))
    return {"modality": m, "tasks": result.tasks, "steps": result.steps, "best_val_acc": result.best_val,
            "best_task": result.best_task, "params": sum(p.numel() for p in model.parameters())}
