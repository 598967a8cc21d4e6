"""Built-in plugin `loggers_wandb`: Weights & Biases, offline by default.

``mode: offline`` (the default) writes the run under ``<stage_dir>/wandb/offline-run-*``
and never touches the network; upload later with ``wandb sync <that folder>``.
``mode: online`` logs live (run ``wandb login`` first, or set ``WANDB_API_KEY``). The
W&B project is the mkd experiment's name (``project`` overrides), the group its sweep
group, the run name the stage. Needs ``pip install 'lite-mkd[wandb]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mkdcore.hookspecs import hookimpl
from mkdcore.tracking.base import (
    Logger,
    RunInfo,
    metric_items,
    missing_module,
    require_module,
)


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["offline", "online"] = Field("offline", description="offline: no network, `wandb sync` later")
    project: str | None = Field(None, description="default: the mkd experiment's name")
    entity: str | None = None
    dir: Path | None = Field(None, description="where W&B writes its run folder; default: the stage folder")

    @model_validator(mode="after")
    def _installed(self) -> "WandbOptions":
        missing = missing_module("wandb", "wandb", "wandb")
        if missing:
            raise ValueError(missing)
        return self


class WandbLogger(Logger):
    """Scalars, validation, the config and artefacts of one stage run in W&B."""

    def __init__(self, mode: str = "offline", project: str | None = None, entity: str | None = None,
                 dir: Path | None = None) -> None:
        require_module("wandb", "wandb", "wandb")
        self.mode, self.project, self.entity, self.dir = mode, project, entity, dir
        self.run: Any = None

    def start(self, run: RunInfo) -> None:
        import wandb

        folder = Path(self.dir or run.stage_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode=self.mode, project=self.project or run.experiment or "mkd", entity=self.entity, group=run.group,
            name=run.stage, dir=str(folder), config=run.config, tags=[run.kind] if run.kind else None,
            notes=f"mkd stage {run.stage} ({run.stage_dir})", reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def scalars(self, task: int, values: dict[str, float]) -> None:
        self.run.log(metric_items("train", values), step=task)

    def validation(self, task: int, values: dict[str, float]) -> None:
        items = metric_items("val", values)
        self.run.log(items, step=task)
        self.run.summary.update(items)

    def artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


@hookimpl
def register_loggers(register) -> None:
    register("wandb", WandbLogger, options=WandbOptions,
             description="Weights & Biases, offline run folder in the stage folder by default (extra: wandb)")
