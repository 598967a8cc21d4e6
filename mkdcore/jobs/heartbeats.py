"""Reading worker heartbeats (``<runs_dir>/workers/<node>.json``).

Workers write a heartbeat every few seconds (:mod:`workers.heartbeat`). A worker whose
heartbeat is older than ``stale_after`` is *unknown* (busy machine, network split or dead:
we cannot tell, so we do not say "down"); the watchdog re-queues its stages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mkdcore import settings
from mkdcore.jobs.model import StageRecord
from mkdcore.jobs.store import read_json

#: Seconds between two heartbeats of a worker.
HEARTBEAT_EVERY_S = settings.HEARTBEAT_EVERY.get_float()
#: A worker silent for longer than this is "unknown" and its stages are re-queued.
STALE_AFTER_S = settings.STALE_AFTER.get_float()


def workers_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "workers"


def read_heartbeats(runs_dir: str | Path) -> dict[str, dict[str, Any]]:
    """node name -> last heartbeat (with ``age_s`` added)."""
    out: dict[str, dict[str, Any]] = {}
    folder = workers_dir(runs_dir)
    if not folder.is_dir():
        return out
    now = time.time()
    for path in folder.glob("*.json"):
        if path.name.endswith(".task.json"):
            continue
        beat = read_json(path)
        if not beat or "time" not in beat:
            continue
        beat["age_s"] = max(0.0, now - float(beat["time"]))
        out[beat.get("node", path.stem)] = beat
    return out


def is_stale(beat: dict[str, Any] | None, stale_after: float = STALE_AFTER_S) -> bool:
    return beat is None or beat.get("age_s", float("inf")) > stale_after or bool(beat.get("stopped"))


def lost_reason(stage: StageRecord, beat: dict[str, Any] | None, stale_after: float = STALE_AFTER_S,
                beat_every: float = HEARTBEAT_EVERY_S, now: float | None = None) -> str | None:
    """Why a ``running`` stage has nobody running it, or None while its worker does.

    Lost: its worker is silent (or stopped), or the worker is alive but has reported for a
    few beats that it runs something else (its task process died, or it was restarted
    under the same name). The watchdog re-queues such a stage; cancel and retry treat it
    as not running.
    """
    if is_stale(beat, stale_after):
        return f"worker {stage.worker} silent for > {stale_after:.0f} s"
    now = time.time() if now is None else now
    assert beat is not None
    if float(beat["time"]) > (stage.started_at or now) + 3 * beat_every and (beat.get("task") or {}).get("token") != stage.token:
        return f"worker {stage.worker} is no longer running it"
    return None
