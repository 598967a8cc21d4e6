"""What a logger is: the calls it receives during one run of one stage.

A *run* is one process working on one stage (``teacher:rgb``, ``student:lite-mkd``,
``evaluate``...). Loggers are plugins (kind ``logger``, hook ``register_loggers``); the
engine and the stages never call one directly but through :class:`mkdcore.tracking.fanout.Loggers`,
which drops a logger that raises, so a full disk or a lost network never stops training.

Subclass :class:`Logger` and override what you need; every method is a no-op by default,
so a logger that only wants final results implements :meth:`Logger.validation` alone.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkdcore.errors import PluginError


@dataclass(frozen=True)
class RunInfo:
    """Who is logging: the experiment, the stage and where its files live."""

    experiment: str  # cfg.name
    stage: str  # "teacher:rgb"
    kind: str  # "teacher"
    key: str  # the stage's content key (its folder name)
    stage_dir: Path
    runs_dir: Path
    group: str | None = None  # the sweep group, if any
    config: dict[str, Any] = field(default_factory=dict)  # the resolved experiment config (JSON types)
    resumed_from: int = 0  # the task a resumed training run continues from (0: a fresh run)

    def tags(self) -> dict[str, str]:
        """Labels every tracker can attach to a run, to find a stage's folder from its run."""
        tags = {"mkd.experiment": self.experiment, "mkd.stage": self.stage, "mkd.kind": self.kind,
                "mkd.key": self.key, "mkd.stage_dir": str(self.stage_dir), "mkd.resumed_from": str(self.resumed_from)}
        if self.group:
            tags["mkd.group"] = self.group
        return tags


class Logger:
    """One destination of metrics. ``task`` counts training episodes (the engine's x axis).

    ``scalars`` values: the averages over the log window of every loss term (``loss``,
    ``ce``, ``kd``...), ``lr``, ``train_acc`` (fraction), ``step`` (optimiser steps so
    far) and ``rate`` (tasks/s). ``validation`` values: ``val_acc`` (fraction) and
    ``step`` during training; named test accuracies (percent) from ``evaluate``.
    """

    def start(self, run: RunInfo) -> None:
        """Called once before anything is logged (the resolved config is ``run.config``)."""

    def scalars(self, task: int, values: dict[str, float]) -> None:
        """Training scalars every ``training.log_every`` tasks."""

    def validation(self, task: int, values: dict[str, float]) -> None:
        """Validation (or final test) results."""

    def artifact(self, path: Path) -> None:
        """A file worth keeping with the run (plots, the report)."""

    def finish(self, status: str) -> None:
        """The run ended: ``finished``, ``failed`` or ``terminated``."""


#: keys of a scalar record that are counters, not metrics
COUNTERS = frozenset({"step"})


def metric_items(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """``{"train/loss": ..}``: the metrics of a record under a tracker-friendly name
    (counters dropped; ``val_acc`` becomes ``val/acc``)."""
    out = {}
    for key, value in values.items():
        if key in COUNTERS or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        name = key.removeprefix(f"{prefix}_") if prefix == "val" else key
        out[f"{prefix}/{name}"] = float(value)
    return out


def safe_metric_name(name: str) -> str:
    """Trackers accept letters, digits, ``_ - . / `` and space in names (``student:lite-mkd``
    is not one)."""
    return re.sub(r"[^\w\-./ ]", "_", name)


def missing_module(module: str, logger: str, extra: str) -> str | None:
    """The one line naming the extra to install when ``logger``'s library is missing
    (options models call it, so a config naming the logger fails when it is loaded)."""
    if importlib.util.find_spec(module) is None:
        return f"logger {logger!r} needs the {module} package: pip install 'lite-mkd[{extra}]'"
    return None


def require_module(module: str, logger: str, extra: str) -> None:
    """:func:`missing_module` as a :class:`PluginError` (for factories)."""
    message = missing_module(module, logger, extra)
    if message:
        raise PluginError(message)
