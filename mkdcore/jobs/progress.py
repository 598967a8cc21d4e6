"""The latest progress of each stage, read from a job's ``progress.jsonl``.

Stages append ``{"time", "stage", "step", "total", "loss", "val_acc", "eta_s", "event"}``
lines (``MKD_PROGRESS_FILE``). Only the file's tail is read, so status stays fast on
long runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def tail_lines(path: Path, max_bytes: int = 65536) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode(errors="replace")
    except OSError:
        return []
    lines = data.splitlines()
    return lines[1:] if size > max_bytes else lines  # the first line may be cut


def latest_progress(path: Path) -> dict[str, dict[str, Any]]:
    """stage -> merged latest fields (the last val_acc is kept even if later lines lack it)."""
    out: dict[str, dict[str, Any]] = {}
    for line in tail_lines(path):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or "stage" not in event:
            continue
        merged = out.setdefault(str(event["stage"]), {})
        merged.update({k: v for k, v in event.items() if v is not None})
    return out
