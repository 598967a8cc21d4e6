"""Progress of a stage: a rich bar for people, JSON lines for the job queue.

When ``MKD_PROGRESS_FILE`` is set (the queue sets it for the stage's child process),
every update is appended to that file as one JSON object:
``{"time", "stage", "event", "step", "total", "loss", "val_acc", "eta_s", "rate"}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from mkdcore import settings


class ProgressReporter:
    """Reports ``step`` of ``total`` for one stage (tasks, videos, episodes...)."""

    def __init__(self, stage: str, total: int, unit: str = "tasks", show: bool | None = None) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.show = sys.stderr.isatty() if show is None else show
        self.path = settings.PROGRESS_FILE.get()
        self._t0 = time.perf_counter()
        self._start_step = 0
        self._last_emit = 0.0
        self._last: dict[str, Any] = {}
        self._bar = None
        self._task = None

    def start(self, done: int = 0) -> None:
        self._t0 = time.perf_counter()
        self._start_step = done
        if self.show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total, completed=done, info="")
        self.event("start", done)

    def rate(self, step: int) -> float:
        elapsed = time.perf_counter() - self._t0
        return (step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, **fields: Any) -> None:
        self._last.update({k: v for k, v in fields.items() if v is not None})
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else None
        if self._bar is not None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._last.items())
            info += f" {rate:.2f} {self.unit}/s"
            self._bar.update(self._task, completed=step, info=info)
        now = time.perf_counter()
        if now - self._last_emit >= 1.0 or step >= self.total or "val_acc" in fields:
            self._last_emit = now
            self._write({"event": "progress", "step": step, "rate": rate, "eta_s": eta, **self._last})

    def event(self, name: str, step: int | None = None, **fields: Any) -> None:
        self._write({"event": name, "step": step, **fields})

    def finish(self, step: int) -> None:
        self.update(step)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.event("finish", step)

    def _write(self, record: dict[str, Any]) -> None:
        if not self.path:
            return
        record = {"time": time.time(), "stage": self.stage, "total": self.total, "unit": self.unit, **record}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
