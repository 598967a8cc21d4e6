"""Built-in plugin `loggers_mlflow`: one MLflow run per stage run.

Default store: a local file store ``<runs_dir>/mlruns`` (no server; view it with
``mlflow ui --backend-store-uri runs/mlruns``); ``tracking_uri`` takes any MLflow URI
(``http://host:5000``, ``sqlite:///mlflow.db``, ``databricks``). The MLflow experiment is
the mkd experiment's name (``experiment`` overrides); the run is named after the stage
and tagged ``mkd.stage``, ``mkd.key``, ``mkd.stage_dir``; the resolved config is logged
as flattened params and as ``config.yaml``. MLflow 3 refuses its file store unless
``MLFLOW_ALLOW_FILE_STORE`` is set: this logger sets it for file stores it writes.
Needs ``pip install 'lite-mkd[mlflow]'`` (mlflow-skinny suffices).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mkdcore.hookspecs import hookimpl
from mkdcore.tracking.base import (
    Logger,
    RunInfo,
    metric_items,
    missing_module,
    require_module,
    safe_metric_name,
)

#: MLflow's limits: params per batch call, characters of a param value
_PARAMS_PER_CALL = 100
_PARAM_VALUE_MAX = 500


class MlflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tracking_uri: str | None = Field(None, description="any MLflow tracking URI; default: file store <runs_dir>/mlruns")
    experiment: str | None = Field(None, description="MLflow experiment name; default: the mkd experiment's name")

    @model_validator(mode="after")
    def _installed(self) -> "MlflowOptions":
        missing = missing_module("mlflow", "mlflow", "mlflow")
        if missing:
            raise ValueError(missing)
        return self


def default_uri(runs_dir: Path) -> str:
    return (Path(runs_dir).resolve() / "mlruns").as_uri()


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"training.lr": "0.001"}``: nested config as MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[safe_metric_name(name)] = str(value)[:_PARAM_VALUE_MAX]
    return out


class MlflowLogger(Logger):
    """Metrics, params and artefacts of one stage run in MLflow."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        require_module("mlflow", "mlflow", "mlflow")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id = ""

    def start(self, run: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or default_uri(run.runs_dir)
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # our default store; MLflow 3 asks for the opt-in
        self.client = MlflowClient(tracking_uri=uri)
        name = self.experiment or run.experiment or "mkd"
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except Exception:  # another stage process created it meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run.stage, tags=run.tags()).info.run_id
        params = [Param(k, v) for k, v in flatten(run.config).items()]
        for i in range(0, len(params), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + _PARAMS_PER_CALL])
        if run.config:
            self.client.log_dict(self.run_id, run.config, "config.yaml")

    def _metrics(self, task: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(safe_metric_name(k), v, now, task) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def scalars(self, task: int, values: dict[str, float]) -> None:
        self._metrics(task, metric_items("train", values))

    def validation(self, task: int, values: dict[str, float]) -> None:
        self._metrics(task, metric_items("val", values))

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "terminated": "KILLED"}.get(status, "FAILED"))


@hookimpl
def register_loggers(register) -> None:
    register("mlflow", MlflowLogger, options=MlflowOptions,
             description="one MLflow run per stage; default file store <runs_dir>/mlruns (extra: mlflow)")
