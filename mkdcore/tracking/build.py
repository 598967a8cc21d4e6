"""Build the loggers of one stage run from the config's ``logging`` section."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mkdcore.tracking.base import RunInfo
from mkdcore.tracking.fanout import Loggers
from mkdcore.tracking.jsonl import JsonlLogger

if TYPE_CHECKING:
    from mkdcore.config import LoggingConfig
    from mkdcore.stages.base import StageContext


def stage_run(ctx: "StageContext") -> RunInfo:
    """What a logger is told about the stage ``ctx`` runs."""
    cfg = ctx.cfg
    return RunInfo(experiment=cfg.name, group=cfg.group, stage=ctx.node.name, kind=ctx.node.kind, key=ctx.node.key,
                   stage_dir=ctx.dir, runs_dir=Path(cfg.runtime.runs_dir), config=cfg.model_dump(mode="json"))


def create_loggers(logging: "LoggingConfig", run: RunInfo) -> Loggers:
    """Every configured logger, created with its validated options (a missing library or
    an unknown name is a one-line :class:`~mkdcore.errors.PluginError`)."""
    from mkdcore.plugins import get_manager

    registry = get_manager().registry
    made = [(name, registry.create("logger", name, **logging.options.get(name, {}))) for name in logging.loggers]
    return Loggers(run, made)


def stage_loggers(ctx: "StageContext") -> Loggers:
    """The loggers of one stage run; use as a context manager so the run is finished
    with the status the stage ended in."""
    return create_loggers(ctx.cfg.logging, stage_run(ctx))


def default_loggers(stage: str, stage_dir: Path) -> Loggers:
    """``metrics.jsonl`` alone: what the engine uses when the caller passes no loggers
    (tests and scripts driving :class:`~mkdcore.engine.EpisodicTrainer` directly)."""
    run = RunInfo(experiment="", stage=stage, kind="", key=Path(stage_dir).name, stage_dir=Path(stage_dir),
                  runs_dir=Path(stage_dir).parent)
    return Loggers(run, [("jsonl", JsonlLogger())])
