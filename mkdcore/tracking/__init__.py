"""Experiment tracking: logger plugins fed by the engine and the stages.

* :mod:`.base`: :class:`Logger` (what a logger receives) and :class:`RunInfo` (who logs);
* :mod:`.fanout`: :class:`Loggers`, the one object the engine and stages call; a logger
  that raises is dropped with one warning, training goes on;
* :mod:`.build`: the loggers of a stage from ``logging: {loggers: [...], options: {...}}``;
* :mod:`.jsonl`: ``metrics.jsonl`` (the built-in ``jsonl`` logger).

See docs/tracking.md.
"""

from mkdcore.tracking.base import Logger, RunInfo
from mkdcore.tracking.build import create_loggers, default_loggers, stage_loggers
from mkdcore.tracking.fanout import Loggers

__all__ = ["Logger", "Loggers", "RunInfo", "create_loggers", "default_loggers", "stage_loggers"]
