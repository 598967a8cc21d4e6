"""The one object the engine and the stages log through: it calls every configured
logger and drops one that raises.

Why a fan-out: a tracker is a convenience, the checkpoint and ``metrics.jsonl`` are the
record. A logger that fails mid-run (disk full, network down, a bug in a third-party
plugin) prints one ``warning:`` line on stderr, is dropped for the rest of the run, and
training goes on. Errors while *creating* loggers are not caught: a configured logger
whose library is missing is one error line before the stage starts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from mkdcore.fileio import first_line
from mkdcore.tracking.base import Logger, RunInfo


class Loggers:
    """Every logger of one run, called in the configured order."""

    def __init__(self, run: RunInfo, loggers: list[tuple[str, Logger]]) -> None:
        self.run = run
        self.active: list[tuple[str, Logger]] = list(loggers)
        self.dropped: list[str] = []
        self._started = False
        self._finished = False
        self._last: tuple[int, float] | None = None  # (task, perf_counter) of the last scalars, for tasks/s

    # ---------------------------------------------------------------- calls
    def start(self, resumed_from: int = 0) -> None:
        """Begin the run (idempotent; the first log call starts it if nobody did)."""
        if self._started:
            return
        self._started = True
        self.run = RunInfo(**{**self.run.__dict__, "resumed_from": resumed_from})
        self._last = (resumed_from, time.perf_counter())
        self._each("start", lambda lg: lg.start(self.run))

    def log(self, record: dict[str, Any]) -> None:
        """The engine's record (``{"task", "step", ...}``): validation when it holds
        ``val_acc``, training scalars (plus ``rate``, tasks/s) otherwise."""
        values = {k: v for k, v in record.items() if k != "task"}
        task = int(record["task"])
        if "val_acc" in values:
            self.validation(task, values)
        else:
            self.scalars(task, values)

    def scalars(self, task: int, values: dict[str, float]) -> None:
        self.start()
        now = time.perf_counter()
        assert self._last is not None
        last_task, last_time = self._last
        if task > last_task and now > last_time:
            values = {**values, "rate": (task - last_task) / (now - last_time)}
        self._last = (task, now)
        self._each("scalars", lambda lg: lg.scalars(task, values))

    def validation(self, task: int, values: dict[str, float]) -> None:
        self.start()
        self._each("validation", lambda lg: lg.validation(task, values))

    def artifact(self, path: Path) -> None:
        self.start()
        self._each("artifact", lambda lg: lg.artifact(Path(path)))

    def finish(self, status: str = "finished") -> None:
        if self._finished or not self._started:
            return
        self._finished = True
        self._each("finish", lambda lg: lg.finish(status))

    # ---------------------------------------------------------------- context
    def __enter__(self) -> "Loggers":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Finish with the status the stage ended in (the engine finishes a SIGTERM stop
        as ``terminated`` itself, before it raises)."""
        if exc_type is None:
            self.finish("finished")
        else:
            self.finish("terminated" if isinstance(exc, KeyboardInterrupt) else "failed")

    # ---------------------------------------------------------------- isolation
    def _each(self, what: str, call: Callable[[Logger], None]) -> None:
        for name, logger in list(self.active):
            try:
                call(logger)
            except Exception as exc:  # any logger failure: warn once, drop it, keep training
                self.active.remove((name, logger))
                self.dropped.append(name)
                print(f"warning: logger {name!r} failed in {what} ({first_line(exc)}) and is dropped for "
                      f"{self.run.stage}; training goes on", file=sys.stderr)
