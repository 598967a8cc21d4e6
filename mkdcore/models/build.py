"""Build the models an :class:`~mkdcore.config.ExperimentConfig` describes.

Widths are filled here, at build time (configs are validated before they are known): a
head's ``in_dim`` is the backbone's ``out_dim`` (or the fusion's ``dim``), its ``seq_len``
is ``data.frames``, a fusion's ``modalities`` are ``modalities.names``, unless the config
sets them explicitly.
"""

from __future__ import annotations

from typing import Any

from mkdcore import api
from mkdcore.config import Component, ExperimentConfig
from mkdcore.models.fewshot import FeatureHeadModel, FewShotModel


def _head(comp: Component, in_dim: int, frames: int) -> Any:
    opts = {"in_dim": in_dim, **({"seq_len": frames} if comp.name == "trx" else {}), **comp.options}
    return api.create("head", comp.name, **opts)


def build_backbone(comp: Component, pretrained: str | None = None, channels_last: bool = False, projection: str | None = None) -> Any:
    opts = dict(comp.options)
    if pretrained is not None and "pretrained" not in opts:
        opts["pretrained"] = str(pretrained)
    if channels_last and "channels_last" not in opts:
        opts["channels_last"] = True
    if projection is not None:
        opts["projection"] = projection
    return api.create("backbone", comp.name, **opts)


def build_student(cfg: ExperimentConfig, projection: str | None = None, chunk_frames: int | None = None) -> FewShotModel:
    """The student (``projection`` overrides it, e.g. ``distillation.baseline_projection``)."""
    backbone = build_backbone(cfg.student.backbone, cfg.student.pretrained, cfg.runtime.channels_last, projection)
    head = _head(cfg.student.head, backbone.out_dim, cfg.data.frames)
    return FewShotModel(backbone, head, chunk_frames=chunk_frames)


def build_teacher(cfg: ExperimentConfig, modality: str, chunk_frames: int | None = None) -> FewShotModel:
    """The single-modality teacher of ``modality`` (pretrained file from ``teacher.pretrained``)."""
    pretrained = cfg.teacher.pretrained.get(modality)
    backbone = build_backbone(cfg.teacher.backbone, pretrained, cfg.runtime.channels_last)
    head = _head(cfg.teacher.head, backbone.out_dim, cfg.data.frames)
    return FewShotModel(backbone, head, chunk_frames=chunk_frames)


def build_fusion(cfg: ExperimentConfig, dim: int | None = None) -> tuple[Any, FeatureHeadModel]:
    """The fusion module and the MFM head on its output (``dim``: teacher feature width)."""
    opts = dict(cfg.fusion.module.options)
    opts.setdefault("modalities", list(cfg.modalities.names))
    if dim is not None:
        opts.setdefault("dim", dim)
    if cfg.fusion.module.name == "mfm":
        opts.setdefault("seq_len", cfg.data.frames)
    fusion = api.create("fusion", cfg.fusion.module.name, **opts)
    head = _head(cfg.fusion.head, fusion.dim, cfg.data.frames)
    return fusion, FeatureHeadModel(head)
