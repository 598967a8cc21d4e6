"""Built-in plugin `loggers_tensorboard`: TensorBoard event files in each stage folder.

Scalars go to ``<stage_dir>/tensorboard/`` (``train/loss``, ``train/lr``, ``val/acc``...,
x axis = tasks); view every stage of a runs dir with ``tensorboard --logdir runs/stages``.
A resumed run purges the events logged after its checkpoint (``purge_step``), so the
curves do not double back. Needs ``pip install 'lite-mkd[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mkdcore.hookspecs import hookimpl
from mkdcore.tracking.base import (
    Logger,
    RunInfo,
    metric_items,
    missing_module,
    require_module,
)


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subdir: str = Field("tensorboard", description="folder inside the stage folder")
    flush_secs: float = Field(10, gt=0, description="seconds between flushes to disk")

    @model_validator(mode="after")
    def _installed(self) -> "TensorBoardOptions":
        missing = missing_module("tensorboard", "tensorboard", "tensorboard")
        if missing:
            raise ValueError(missing)
        return self


class TensorBoardLogger(Logger):
    """Scalars and the resolved config as TensorBoard event files."""

    def __init__(self, subdir: str = "tensorboard", flush_secs: float = 10) -> None:
        require_module("tensorboard", "tensorboard", "tensorboard")
        self.subdir = subdir
        self.flush_secs = flush_secs
        self.writer: Any = None

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run.stage_dir) / self.subdir), flush_secs=int(self.flush_secs),
                                    purge_step=run.resumed_from or None)
        if run.config:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(run.config, sort_keys=False) + "```",
                                 global_step=run.resumed_from)

    def scalars(self, task: int, values: dict[str, float]) -> None:
        for name, value in metric_items("train", values).items():
            self.writer.add_scalar(name, value, global_step=task)

    def validation(self, task: int, values: dict[str, float]) -> None:
        for name, value in metric_items("val", values).items():
            self.writer.add_scalar(name, value, global_step=task)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


@hookimpl
def register_loggers(register) -> None:
    register("tensorboard", TensorBoardLogger, options=TensorBoardOptions,
             description="TensorBoard event files in <stage_dir>/tensorboard (extra: tensorboard)")
