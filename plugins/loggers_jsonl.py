"""Built-in plugin `loggers_jsonl`: the `jsonl` logger, each stage's ``metrics.jsonl``.

The implementation is core's (:mod:`mkdcore.tracking.jsonl`: resume truncation and the
report read its file); this module only registers it, like any third-party logger.
"""

from __future__ import annotations

from mkdcore.hookspecs import hookimpl
from mkdcore.tracking.jsonl import JsonlLogger


@hookimpl
def register_loggers(register) -> None:
    register("jsonl", JsonlLogger, description="<stage>/metrics.jsonl: one JSON line per log step, with time and elapsed s")
