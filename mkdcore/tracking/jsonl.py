"""The ``jsonl`` logger: a stage's ``metrics.jsonl``, one JSON object per log step.

It lives in core (the ``loggers_jsonl`` plugin registers it) because the engine falls back
to it when nobody passes loggers, resume truncation (``EpisodicTrainer._truncate_metrics``)
and the report's training curves read its file. Lines:
``{"task", "step", "lr", "loss", <terms>, "train_acc", "rate", "time", "elapsed"}`` and
``{"task", "step", "val_acc", "time", "elapsed"}``; ``time`` is the Unix time of the line,
``elapsed`` the seconds since this process started the run, ``rate`` tasks/s. Wall-clock
keys differ between two otherwise identical runs; readers that compare runs drop them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mkdcore.fileio import append_line
from mkdcore.stages.stage_dir import StageDir
from mkdcore.tracking.base import Logger, RunInfo

#: keys that depend on the clock, not on the computation
WALL_CLOCK_KEYS = frozenset({"time", "elapsed", "rate"})


class JsonlLogger(Logger):
    """Append every record to ``<stage_dir>/metrics.jsonl`` with wall time and a timestamp."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._t0 = time.perf_counter()

    def start(self, run: RunInfo) -> None:
        self.path = StageDir(run.stage_dir).metrics
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.perf_counter()

    def _write(self, task: int, values: dict[str, float]) -> None:
        assert self.path is not None, "start() first"
        record = {"task": task, **values, "time": round(time.time(), 3),
                  "elapsed": round(time.perf_counter() - self._t0, 3)}
        append_line(self.path, json.dumps(record), "metrics")

    def scalars(self, task: int, values: dict[str, float]) -> None:
        self._write(task, values)

    def validation(self, task: int, values: dict[str, float]) -> None:
        self._write(task, values)
