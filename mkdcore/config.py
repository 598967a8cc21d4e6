"""The experiment config: one pydantic v2 model per section, loaded from YAML.

Unknown keys are errors naming the key's full path; ``--set a.b=c`` overrides are
applied (YAML-parsed values) before validation; plugin options are validated by the
plugin's own model once plugins are loaded (:func:`validate_plugin_options`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mkdcore.config_files import Resolved, read_yaml, resolve_file  # noqa: F401 (read_yaml: re-exported)
from mkdcore.errors import ConfigError
from mkdcore.names import UnsafeNameError, experiment_name
from mkdcore.registry import format_validation_error


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Component(Section):
    """A plugin by name plus its options (validated later by the plugin's own model)."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- data
class SynthConfig(Section):
    """Render the synthetic dataset into ``data.root`` when it is missing."""

    classes: int = Field(20, description="20 gives 10/5/5 train/val/test classes; 5-way val/test needs >= 15")
    videos_per_class: int = 10
    size: int = 112
    seed: int = 0


class DataConfig(Section):
    root: Path = Path("data/synth")
    split: str = Field("synth", description="folder under <root>/splits/ with {train,val,test}list<split_id>.txt")
    split_id: str = "03"
    frames: int = Field(8, ge=1, description="frames per video (T)")
    resize: int = Field(256, ge=8, description="shorter side before cropping (px)")
    crop: int = Field(224, ge=8, description="square crop size (px)")
    normalize: Literal["none", "imagenet"] = Field("none", description="'none' is the original Lite-MKD (no mean/std)")
    num_workers: int = Field(0, ge=0)
    synth: SynthConfig | None = None

    @model_validator(mode="after")
    def _crop_fits(self) -> "DataConfig":
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self


# ----------------------------------------------------------------------- episodes
class EpisodeConfig(Section):
    way: int = Field(5, ge=2)
    shot: int = Field(5, ge=1)
    query_train: int = Field(5, ge=1, description="queries per class in training episodes")
    query_test: int = Field(1, ge=1, description="queries per class in val/test episodes")


# --------------------------------------------------------------------- modalities
class ModalitiesConfig(Section):
    names: list[str] = Field(default_factory=lambda: ["rgb", "depth", "flow"], description="rgb first")
    derive: dict[str, Component] = Field(default_factory=dict, description="how to derive each non-rgb modality")

    @field_validator("names")
    @classmethod
    def _rgb_first(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "rgb":
            raise ValueError("the first modality must be 'rgb'")
        if len(set(v)) != len(v):
            raise ValueError("modalities are listed twice")
        return v


# ----------------------------------------------------------------------- training
class ScheduleConfig(Section):
    kind: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = 0.1
    unit: Literal["tasks", "steps"] = Field("tasks", description="what milestones count: tasks (episodes) or optimiser steps")
    warmup: int = 0


class TrainingConfig(Section):
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(1e-4, gt=0)
    momentum: float = 0.0
    weight_decay: float = 0.0
    tasks: int = Field(1000, ge=1, description="training episodes (tasks)")
    tasks_per_batch: int = Field(16, ge=1, description="episodes accumulated per optimiser step")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    amp: Literal["auto", "none", "bf16", "fp16"] = Field("auto", description="autocast on CUDA (auto: bf16 on CUDA, fp32 on CPU); fp16 uses a GradScaler")
    grad_clip: float | None = Field(None, gt=0)
    checkpoint_every: int = Field(500, ge=1, description="tasks between checkpoints")
    val_every: int = Field(500, ge=1, description="tasks between validations (val split)")
    val_episodes: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0


class TeacherConfig(Section):
    """One few-shot model per modality (backbone + head), trained on that modality."""

    backbone: Component = Field(default_factory=lambda: Component(name="resnet50", options={"pooling": "avg", "projection": "none"}))
    head: Component = Field(default_factory=lambda: Component(name="mean_distance"))
    pretrained: dict[str, Path] = Field(default_factory=dict, description="modality -> local weights file")
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(lr=3e-4, tasks=70020))
    query_train: int | None = Field(4, description="queries per class in teacher training (original: 4)")
    features: Path | None = Field(None, description="released teacher features, <class>/<video> .npy of (T, D) or (1, T, D) "
                                  "(the authors' feature/mm_features or rgb_features; relative: under data.root): students distil "
                                  "from them and no derive, teacher or fuse stage runs (docs/reproducing-the-paper.md)")
    checkpoint: Path | None = Field(None, description="with features: the teacher whose frozen head scores them: a model folder "
                                    "(mkd convert), the original checkpoint<N>.pt, or a folder holding one (relative: under data.root)")

    @model_validator(mode="after")
    def _features_need_their_head(self) -> "TeacherConfig":
        """Stored features without the head that scores them would distil from a random head
        (the original's bug, spec 8); a checkpoint alone has nothing to score."""
        if (self.features is None) != (self.checkpoint is None):
            given, other = ("features", "checkpoint") if self.checkpoint is None else ("checkpoint", "features")
            raise ValueError(f"teacher.{given} needs teacher.{other} too (the released features and the teacher whose head scores them)")
        return self


class FusionConfig(Section):
    module: Component = Field(default_factory=lambda: Component(name="mfm"))
    head: Component = Field(default_factory=lambda: Component(name="trx", options={"temporal_set": [2]}))
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(lr=2e-5, tasks=50015))
    query_train: int | None = 4


class StudentConfig(Section):
    backbone: Component = Field(default_factory=lambda: Component(name="resnet18", options={"projection": "2fc"}))
    head: Component = Field(default_factory=lambda: Component(name="trx", options={"temporal_set": [2]}))
    pretrained: Path | None = Field(None, description="local timm/torchvision state dict for the backbone")


class DistillationConfig(Section):
    distiller: Component = Field(default_factory=lambda: Component(name="d2m"))
    baseline: Component | None = Field(
        default_factory=lambda: Component(name="ce"),
        description="also train a no-distillation student with this distiller (single-branch); null to skip",
    )
    baseline_projection: str = Field("1fc", description="backbone projection of the baseline student")


class EvaluationConfig(Section):
    episodes: int = Field(10000, ge=1)
    seed: int = 0
    episodes_file: Path | None = Field(None, description="frozen test episodes (mkd data episodes)")
    split: Literal["test", "val"] = "test"
    batch_frames: int = Field(256, ge=1, description="frames per backbone forward during evaluation")


class RuntimeConfig(Section):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    runs_dir: Path = Path("runs")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's; per rank with devices > 1: cores / devices)")
    channels_last: bool | Literal["auto"] = Field("auto", description="NHWC images for CNN trunks (auto: on; mkdcore/speed.py)")
    malloc: Literal["default", "tuned"] = Field("tuned", description="glibc allocator: tuned reuses large blocks (mkdcore/speed.py)")
    compile: bool = Field(False, description="torch.compile the trained model (pays off over long stages)")
    devices: int = Field(1, ge=1, description="ranks a training or evaluate stage runs on (torch.distributed; docs/distributed.md)")
    decode: Literal["auto", "cpu", "cuda"] = Field("auto", description="where JPEG frames are decoded (auto: on the GPU for CUDA stages when it works; mkdcore/data/device_decode.py)")


class LoggingConfig(Section):
    """Where a stage's metrics go: logger plugins (docs/tracking.md). ``metrics.jsonl``
    (``jsonl``) feeds the report's training curves and ``mkd results``: keep it listed."""

    loggers: list[str] = Field(default_factory=lambda: ["jsonl"], description="jsonl, tensorboard, mlflow, wandb or a plugin's")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="logger name -> its options")

    @model_validator(mode="after")
    def _options_of_listed(self) -> "LoggingConfig":
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError("a logger is listed twice")
        unlisted = sorted(set(self.options) - set(self.loggers))
        if unlisted:
            raise ValueError(f"options for {unlisted[0]!r}, which is not in logging.loggers")
        return self


class ExperimentConfig(Section):
    """A whole Lite-MKD experiment: data -> teachers -> MFM -> student -> evaluation."""

    name: str = "experiment"
    group: str | None = Field(None, description="sweep group (set by `mkd submit --sweep`); `mkd results` shows groups together")
    data: DataConfig = Field(default_factory=DataConfig)
    episodes: EpisodeConfig = Field(default_factory=EpisodeConfig)
    modalities: ModalitiesConfig = Field(default_factory=ModalitiesConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig(lr=1e-4, tasks=70010, schedule=ScheduleConfig(kind="multistep", milestones=[20000, 40000])))
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("name", "group")
    @classmethod
    def _plain_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        """``name`` and ``group`` become ``runs/<name>/``: never a path (``../../x``)."""
        if v is None:
            return v
        try:
            return experiment_name(v, info.field_name or "name")
        except UnsafeNameError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("runtime")
    @classmethod
    def _steps_split_over_devices(cls, v: RuntimeConfig, info: ValidationInfo) -> RuntimeConfig:
        """The tasks of one optimiser step are split evenly over ``runtime.devices`` ranks."""
        d = info.data  # the sections declared before runtime that validated
        sections = {"teacher.training": d["teacher"].training if "teacher" in d else None,
                    "fusion.training": d["fusion"].training if "fusion" in d else None,
                    "training": d.get("training")}
        for name, t in sections.items():
            if t is not None and t.tasks_per_batch % v.devices:
                raise ValueError(f"devices = {v.devices} does not divide {name}.tasks_per_batch = {t.tasks_per_batch} "
                                 f"(each rank runs an equal share of an optimiser step's tasks)")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(_dump(self), sort_keys=False)


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def stable_hash(payload: Any, length: int = 12) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# ------------------------------------------------------------------------ loading
def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. training.lr=0.001)")
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], source: str = "<config>", check_plugins: bool = True) -> ExperimentConfig:
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None
    if check_plugins:
        validate_plugin_options(cfg, source)
    return cfg


def resolve_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Resolved:
    """The config file with its ``base:`` files merged in and ``--set`` overrides applied
    (not yet validated), with the file (or ``--set``) that set each value."""
    resolved = resolve_file(path) if path is not None else Resolved(data={})
    for item in overrides:
        resolved.data = apply_overrides(resolved.data, [item])
        key = tuple(parse_override(item)[0])
        for leaf in [p for p in resolved.origins if p[: len(key)] == key]:
            del resolved.origins[leaf]
        resolved.origins[key] = "--set"
    return resolved


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), check_plugins: bool = True) -> ExperimentConfig:
    """Read (bases merged), override and validate a config; every error is one line naming file and key."""
    data = resolve_config(path, overrides).data
    source = str(path) if path is not None else "<defaults>"
    # relative paths in a config stay relative to the working directory, as users type them
    return config_from_dict(data, source, check_plugins=check_plugins)


def plugin_fields(cfg: ExperimentConfig) -> list[tuple[str, str, Component]]:
    """(kind, dotted path, component) of every plugin named in the config."""
    out: list[tuple[str, str, Component]] = [
        ("backbone", "teacher.backbone", cfg.teacher.backbone),
        ("head", "teacher.head", cfg.teacher.head),
        ("fusion", "fusion.module", cfg.fusion.module),
        ("head", "fusion.head", cfg.fusion.head),
        ("backbone", "student.backbone", cfg.student.backbone),
        ("head", "student.head", cfg.student.head),
        ("distiller", "distillation.distiller", cfg.distillation.distiller),
    ]
    if cfg.distillation.baseline is not None:
        out.append(("distiller", "distillation.baseline", cfg.distillation.baseline))
    for name, comp in cfg.modalities.derive.items():
        out.append(("modality", f"modalities.derive.{name}", comp))
    for name in cfg.logging.loggers:
        out.append(("logger", f"logging.loggers[{name}]", Component(name=name, options=cfg.logging.options.get(name, {}))))
    return out


def validate_plugin_options(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Check that every named plugin exists and accepts its options."""
    from mkdcore.errors import PluginError
    from mkdcore.plugins import get_manager

    registry = get_manager().registry
    for kind, path, comp in plugin_fields(cfg):
        try:
            registry.validate_options(kind, comp.name, dict(comp.options), where=f"{source}: {path}.options")
        except PluginError as exc:
            msg = str(exc)
            if msg.startswith(f"unknown {kind}"):
                msg = f"{source}: {path}.name: {msg}"
            raise ConfigError(msg) from None
    for name in cfg.modalities.names:
        try:
            registry.get("modality", name)
        except PluginError as exc:
            raise ConfigError(f"{source}: modalities.names: {exc}") from None


def student_variants(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``{variant: {"distiller": Component, "backbone": Component}}``: the students the
    config trains (``lite-mkd`` with the configured distiller; ``baseline``, the
    no-distillation student with its own projection, unless ``distillation.baseline``
    is null)."""
    variants = {"lite-mkd": {"distiller": cfg.distillation.distiller, "backbone": cfg.student.backbone}}
    if cfg.distillation.baseline is not None:
        backbone = Component(
            name=cfg.student.backbone.name,
            options={**cfg.student.backbone.options, "projection": cfg.distillation.baseline_projection},
        )
        variants["baseline"] = {"distiller": cfg.distillation.baseline, "backbone": backbone}
    return variants
