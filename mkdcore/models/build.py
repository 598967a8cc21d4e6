"""The one model builder: training, ``mkd profile``, ``mkd eval`` and saved model
folders all build models here, so what is profiled or evaluated is what trains.

A model is described by a *spec*, a JSON-able dict that rebuilds it with no experiment
config (it is what ``model.json`` of a model folder holds)::

    {"type": "fewshot", "backbone": {name, options}, "head": {name, options}, "frames": T}
    {"type": "fusion_teacher", "fusion": {...}, "head": {...}, "modalities": [...], "frames": T, "dim": D}

Widths and sizes are filled in at build time (configs are validated before they are
known) by :func:`with_pipeline_options`: a head's ``in_dim`` is the backbone's ``out_dim`` (or the
fusion's ``dim``), ``seq_len`` is ``data.frames``, a fusion's ``modalities`` are
``modalities.names``, a distiller's ``tasks_per_batch`` the engine's accumulation, each
only if the component's options model declares it and the config does not set it. No
component is special-cased by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mkdcore.config import Component, ExperimentConfig, student_variants
from mkdcore.models.fewshot import FewShotModel
from mkdcore.plugins import get_manager

Spec = dict[str, Any]


def with_pipeline_options(kind: str, component: Component, **known: Any) -> Component:
    """The component with pipeline-known values (widths, frame count, accumulation) filled
    in for the options its plugin accepts; options set in the config win."""
    model = get_manager().registry.get(kind, component.name).options
    fields = model.model_fields if model is not None else {}
    filled = {k: v for k, v in known.items() if k in fields}
    return Component(name=component.name, options={**filled, **component.options})


class FusionTeacher(torch.nn.Module):
    """Fusion module + few-shot head over fused features; ``fuse`` is also what the
    ``mm_features`` stage stores, so training and extraction share one forward."""

    def __init__(self, fusion: torch.nn.Module, head: torch.nn.Module, modalities: list[str], dim: int) -> None:
        super().__init__()
        self.fusion, self.head, self.modalities, self.dim = fusion, head, modalities, dim

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion({m: feats[m] for m in self.modalities})

    def forward(self, support: dict[str, torch.Tensor], labels: torch.Tensor, query: dict[str, torch.Tensor],
                way: int | None = None) -> dict[str, Any]:
        return self.head(self.fuse(support), labels, self.fuse(query), way=way)


# ------------------------------------------------------------------ specs from a config
def fewshot_spec(backbone: Component, head: Component, frames: int) -> Spec:
    """The spec of a frame-level few-shot model; the head's widths are resolved when it
    is built (they depend on the backbone)."""
    return {"type": "fewshot", "backbone": backbone.model_dump(mode="json"), "head": head.model_dump(mode="json"),
            "frames": frames}


def teacher_spec(cfg: ExperimentConfig, modality: str) -> Spec:
    """The per-modality teacher of ``modality`` (before training)."""
    spec = fewshot_spec(cfg.teacher.backbone, cfg.teacher.head, cfg.data.frames)
    spec["modality"] = modality
    return spec


def student_spec(cfg: ExperimentConfig, variant: str) -> Spec:
    """The student of ``variant`` (``lite-mkd``, ``baseline``: see
    :func:`mkdcore.stages.dag.student_variants`)."""
    spec = fewshot_spec(student_variants(cfg)[variant]["backbone"], cfg.student.head, cfg.data.frames)
    spec.update(modality="rgb", variant=variant)
    return spec


def fusion_spec(cfg: ExperimentConfig, dim: int) -> Spec:
    """The MFM teacher over per-modality features of width ``dim``."""
    f = cfg.fusion
    fusion_c = with_pipeline_options("fusion", f.module, dim=dim, seq_len=cfg.data.frames, modalities=list(cfg.modalities.names))
    head_c = with_pipeline_options("head", f.head, in_dim=dim, seq_len=cfg.data.frames)
    return {"type": "fusion_teacher", "fusion": fusion_c.model_dump(mode="json"), "head": head_c.model_dump(mode="json"),
            "modalities": list(cfg.modalities.names), "frames": cfg.data.frames, "dim": dim}


# ------------------------------------------------------------------ building
def build(spec: Spec, pretrained: Path | None = None) -> tuple[torch.nn.Module, Spec]:
    """The model a spec describes (random weights, or a backbone's ``pretrained`` local
    file) and the spec with every width resolved (what rebuilds it exactly)."""
    kind = spec["type"]
    if kind == "fewshot":
        return _build_fewshot(spec, pretrained)
    if kind == "fusion_teacher":
        fusion = get_manager().registry.create("fusion", spec["fusion"]["name"], **spec["fusion"]["options"])
        head = get_manager().registry.create("head", spec["head"]["name"], **spec["head"]["options"])
        return FusionTeacher(fusion, head, spec["modalities"], spec["dim"]), spec
    raise ValueError(f"unknown model type {kind!r}")


def _build_fewshot(spec: Spec, pretrained: Path | None) -> tuple[FewShotModel, Spec]:
    backbone_c = Component(**spec["backbone"])
    bb_opts = dict(backbone_c.options)
    if pretrained is not None:
        bb_opts.setdefault("pretrained", str(pretrained))
    backbone = get_manager().registry.create("backbone", backbone_c.name, **bb_opts)
    head_c = with_pipeline_options("head", Component(**spec["head"]), in_dim=backbone.out_dim, seq_len=spec["frames"])
    head = get_manager().registry.create("head", head_c.name, **head_c.options)
    saved = {**spec, "backbone": {"name": backbone_c.name, "options": {k: v for k, v in bb_opts.items() if k != "pretrained"}},
             "head": head_c.model_dump(mode="json")}
    return FewShotModel(backbone, head), saved
