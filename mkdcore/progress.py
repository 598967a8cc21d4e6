"""Progress of a stage: a rich bar for people, plain lines for logs, JSON lines for the queue.

* On a terminal (stderr is a TTY): a rich bar on stderr.
* When stdout is not a TTY (``mkd run > log.txt``, ``nohup``, SLURM, ``mkd logs JOB``):
  one plain line on stdout every ``MKD_PROGRESS_EVERY`` seconds (default 30), plus one
  when the stage starts and one when it ends, e.g.
  ``12:00:31 progress teacher:rgb 40/70020 tasks (0.1%) loss=1.234 val_acc=0.45 2.31 tasks/s eta 8:25:03``.
  Without them a run under a batch system printed nothing between ``[run]`` and ``[done]``.
* When ``MKD_PROGRESS_FILE`` is set (the queue sets it for the stage's child process),
  every update is appended to that file as one JSON object:
  ``{"time", "stage", "event", "step", "total", "loss", "val_acc", "eta_s", "rate"}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from mkdcore import settings


class ProgressReporter:
    """Reports ``step`` of ``total`` for one stage (tasks, videos, episodes...)."""

    def __init__(self, stage: str, total: int, unit: str = "tasks", show: bool | None = None,
                 plain: bool | None = None) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.show = sys.stderr.isatty() if show is None else show
        self.plain = plain_wanted() if plain is None else plain
        self.plain_every = settings.PROGRESS_EVERY.get_float()
        self._last_plain = 0.0
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
        self._print_plain(done, "start")
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
        if self.plain and now - self._last_plain >= self.plain_every:
            self._print_plain(step, rate=rate, eta=eta)
        if now - self._last_emit >= 1.0 or step >= self.total or "val_acc" in fields:
            self._last_emit = now
            self._write({"event": "progress", "step": step, "rate": rate, "eta_s": eta, **self._last})

    def event(self, name: str, step: int | None = None, **fields: Any) -> None:
        self._write({"event": name, "step": step, **fields})

    def finish(self, step: int) -> None:
        self._last_plain = time.perf_counter()  # the "done" line below says it all
        self.update(step)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        rate = self.rate(step)
        self._print_plain(step, "done", rate=rate)
        self.event("finish", step)

    def _print_plain(self, step: int, what: str = "", rate: float | None = None, eta: float | None = None) -> None:
        """One self-contained line on stdout (grep-able: ``progress``, the stage, n/N)."""
        if not self.plain:
            return
        self._last_plain = time.perf_counter()
        print(plain_line(self.stage, step, self.total, self.unit, self._last, rate, eta, what), flush=True)

    def _write(self, record: dict[str, Any]) -> None:
        if not self.path:
            return
        record = {"time": time.time(), "stage": self.stage, "total": self.total, "unit": self.unit, **record}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


def plain_wanted() -> bool:
    """Plain progress lines are for logs: stdout is a file or a pipe, not a terminal."""
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def plain_line(stage: str, step: int, total: int, unit: str, fields: dict[str, Any], rate: float | None = None,
               eta: float | None = None, what: str = "") -> str:
    """``12:00:31 progress teacher:rgb 40/70020 tasks (0.1%) loss=1.234 2.31 tasks/s eta 0:04:10``."""
    parts = [time.strftime("%H:%M:%S"), "progress", stage, f"{step}/{total} {unit}"]
    if total:
        parts.append(f"({100 * step / total:.1f}%)")
    if what:
        parts.append(what)
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()]
    if rate:
        parts.append(f"{rate:.3g} {unit}/s")
    if eta is not None and step < total:
        parts.append(f"eta {_duration(eta)}")
    return " ".join(parts)


def plain_callback(stage: str, unit: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (synth, import) that prints plain lines when
    stdout is not a terminal; a no-op otherwise."""
    reporter: ProgressReporter | None = None

    def progress(done: int, total: int) -> None:
        nonlocal reporter
        if reporter is None:
            reporter = ProgressReporter(stage, total=total, unit=unit, show=False)
            reporter.start(done)
        reporter.update(done)
        if done >= total:
            reporter.finish(done)

    return progress
