"""Stage ``student:<variant>``: an RGB-only student trained with a distiller.

``lite-mkd`` uses the configured distiller (D2M by default) with the MFM teacher:
the teacher is the *trained* MFM TRX head, loaded and in eval mode, applied under
``no_grad`` to the stored fused features of the same videos, matched by (class, video)
(spec section 8, bugs 1 and 4). ``baseline`` is the no-distillation student.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mkdcore import api, distributed
from mkdcore.config import student_variants
from mkdcore.engine import seed_everything
from mkdcore.models.build import build, student_spec, with_pipeline_options
from mkdcore.models.folder import load_model, save_model, selected_weights
from mkdcore.stages.base import StageContext
from mkdcore.stages.dag import needs_teacher
from mkdcore.stages.dataset import data_spec
from mkdcore.stages.fewshot_training import train_on_frames


def load_teacher_head(ctx: StageContext) -> torch.nn.Module:
    """The trained MFM head as a frozen few-shot model over stored fused features."""
    from mkdcore.models.fewshot import FeatureHeadModel

    fusion_teacher, _ = load_model(ctx.nodes["fuse"].files.model, ctx.device)
    teacher = FeatureHeadModel(fusion_teacher.head).to(ctx.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def teacher_source(ctx: StageContext) -> tuple[torch.nn.Module, Path]:
    """The frozen teacher head and the folder of the features it scores: the pipeline's
    ``fuse``/``mm_features`` stages, or the released files of ``teacher.features`` (their
    head from ``teacher.checkpoint``), checked for every train video before training."""
    if ctx.cfg.teacher.features is None:
        return load_teacher_head(ctx), ctx.nodes["mm_features"].files.features
    from mkdcore.convert.released import check_features, checkpoint_file, teacher_files, teacher_head
    from mkdcore.stages.dataset import split_of

    features, checkpoint = teacher_files(ctx.cfg)
    checkpoint = checkpoint_file(checkpoint)
    teacher = teacher_head(checkpoint, ctx.cfg.data.frames, ctx.device)
    # the width a head with weights was built for (heads are plugins: ``in_dim`` is their documented option)
    dim = getattr(teacher.head, "in_dim", None) if any(True for _ in teacher.head.parameters()) else None
    checked = check_features(features, split_of(ctx.cfg, "train").keys(), ctx.cfg.data.frames, dim)
    ctx.log(f"teacher: {checkpoint} on {checked} released train features in {features}")
    return teacher, features


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    variant = ctx.node.params["variant"]
    spec = student_variants(cfg)[variant]
    seed_everything(cfg.training.seed)  # initial weights depend on the seed only, not on what ran before
    model, mspec = build(student_spec(cfg, variant), cfg.student.pretrained)
    mspec["data"] = data_spec(cfg)
    # the distiller scales its terms by the accumulation the engine really uses
    dist_c = with_pipeline_options("distiller", spec["distiller"], tasks_per_batch=cfg.training.tasks_per_batch)
    distiller = api.create("distiller", dist_c.name, **dist_c.options)
    teacher, store = teacher_source(ctx) if needs_teacher(dist_c) else (None, None)

    def loss_fn(batch: dict[str, Any], out: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        t_out = None
        if teacher is not None:
            feats = batch["features"]["teacher"]
            with torch.no_grad():
                t_out = teacher(feats["support"], batch["support_labels"], feats["query"])
        terms = distiller(out, t_out, batch["query_labels"])
        return terms["total"], {k: float(v.detach()) for k, v in terms.items() if k != "total"}

    result = train_on_frames(ctx, model, "rgb", cfg.training, cfg.episodes.query_train, loss_fn, store)
    if distributed.is_main():  # rank 0 alone writes
        save_model(ctx.files.model, model, mspec, selected_weights(ctx.files))
    return {"variant": variant, "distiller": dist_c.name, "tasks": result.tasks, "steps": result.steps,
            "best_val_acc": result.best_val, "best_task": result.best_task,
            "params": sum(p.numel() for p in model.parameters())}
