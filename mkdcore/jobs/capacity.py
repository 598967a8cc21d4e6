"""How many devices a stage asks for, and the queue that takes it to a worker that has them.

Routing is by Celery queue, decided when the stage is sent (no worker ever takes a stage it
cannot run, so nothing is re-queued in a loop): a stage that needs N > 1 devices goes on
``<queue>.devices<N>``; a worker that owns k devices consumes ``<queue>`` and
``<queue>.devices2`` .. ``<queue>.devices<k>``. A 1-device stage can therefore also run on
a bigger worker (which then leaves devices idle for that stage); a stage that needs more
devices than any worker has waits on its queue, and ``mkd status`` shows that queue's
depth and the stage's note.

The device count is the job's resolved ``runtime.devices`` (default 1) for the stages that
run data-parallel (:data:`DEVICE_KINDS`: training and evaluation); every other stage
needs one device. This module is the one place that reads it.
"""

from __future__ import annotations

from typing import Any

#: Stage kinds that run on ``runtime.devices`` ranks; the others (derivation, feature
#: extraction, the report) use one device whatever the config says.
DEVICE_KINDS = frozenset({"teacher", "fuse", "student", "evaluate"})

#: Separator between a queue and its device count (``mkd.devices2``).
DEVICES_SUFFIX = ".devices"


def job_devices(config: dict[str, Any]) -> int:
    """``runtime.devices`` of a resolved config (a JSON dict), 1 when absent."""
    runtime = config.get("runtime") or {}
    try:
        return max(1, int(runtime.get("devices") or 1))
    except (TypeError, ValueError):
        return 1  # the config was validated before it was queued; never route on junk


def stage_devices(config: dict[str, Any], kind: str) -> int:
    """Devices a stage of ``kind`` needs under ``config``."""
    return job_devices(config) if kind in DEVICE_KINDS else 1


def queue_for(queue: str, devices: int) -> str:
    """The queue a stage needing ``devices`` devices is sent to."""
    return queue if devices <= 1 else f"{queue}{DEVICES_SUFFIX}{devices}"


def queues_of_worker(queue: str, devices: int) -> list[str]:
    """Every shared queue a worker owning ``devices`` devices consumes."""
    return [queue_for(queue, n) for n in range(1, max(1, devices) + 1)]
