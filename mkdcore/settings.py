"""Every ``MKD_*`` environment variable mkd reads, declared once with its meaning.

Why one module: the variables are read in the CLI, the plugin manager, the queue and
the workers; declaring them here keeps their names, defaults and documentation from
drifting, and ``python -m mkdcore.settings`` (and ``mkd doctor --json``) lists them.
Code reads a variable through its :class:`Setting`, never ``os.environ["MKD_..."]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default (``None``: unset) and meaning."""

    name: str
    default: str | None
    doc: str

    def raw(self) -> str | None:
        """The value as set (``""`` included), or None when unset."""
        return os.environ.get(self.name)

    def get(self) -> str | None:
        """The value, or the default when unset or empty."""
        return os.environ.get(self.name) or self.default

    def get_float(self) -> float:
        value = self.get()
        assert value is not None, f"{self.name} has no default"
        return float(value)

    def names(self) -> set[str] | None:
        """A comma-separated list of names; None when unset (``""`` is the empty set)."""
        value = self.raw()
        return None if value is None else {n.strip() for n in value.split(",") if n.strip()}

    def flag(self) -> bool:
        return bool(self.raw())


RUNS_DIR = Setting("MKD_RUNS_DIR", "runs", "Run directory of the queue commands (submit, status, logs, cancel, retry, worker).")
BROKER_URL = Setting("MKD_BROKER_URL", None, "Redis URL of the job queue (redis:// or rediss://; a password is never printed).")
STATE_DIR = Setting("MKD_STATE_DIR", str(Path.home() / ".mkd"), "Where `mkd up` keeps the PIDs and logs of what it started.")
LOAD_PLUGINS = Setting("MKD_LOAD_PLUGINS", None, "Load only these entry points (comma-separated; empty: none).")
DISABLE_PLUGINS = Setting("MKD_DISABLE_PLUGINS", None, "Never import these entry points (comma-separated), like pytest's -p no:NAME.")
TRACE_PLUGINS = Setting("MKD_TRACE_PLUGINS", None, "Print every hook call, its implementations and results to stderr.")
PROGRESS_FILE = Setting("MKD_PROGRESS_FILE", None, "Append progress events of a stage as JSON lines to this file (set by the queue).")
PROGRESS_EVERY = Setting("MKD_PROGRESS_EVERY", "30", "Seconds between plain progress lines on stdout when it is not a terminal (logs, nohup, SLURM).")
HEARTBEAT_EVERY = Setting("MKD_HEARTBEAT_EVERY", "2", "Seconds between a worker's heartbeats.")
STALE_AFTER = Setting("MKD_STALE_AFTER", "30", "Seconds of silence after which a worker counts as lost and its stage is re-queued.")
NODE = Setting("MKD_NODE", None, "A worker's node name (set by `mkd worker`; default: the Celery hostname).")
WORKER_GPU = Setting("MKD_WORKER_GPU", None, "The GPU indices a worker owns, comma-separated (set by `mkd worker`; empty: CPU).")
WORKER_DEVICES = Setting("MKD_WORKER_DEVICES", "1", "How many devices a worker owns: the largest runtime.devices it runs (set by `mkd worker`).")
WORKER_QUEUES = Setting("MKD_WORKER_QUEUES", None, "The queues a worker consumes (set by `mkd worker`).")
STAGE_MODULE = Setting("MKD_STAGE_MODULE", "mkdcore.cli.main", "Module a worker runs stages with (`python -m MODULE run ...`; tests swap it).")
NO_STAGE_ZYGOTE = Setting("MKD_NO_STAGE_ZYGOTE", None, "Set: a worker starts each stage as a new interpreter instead of forking it from its zygote.")
STAGE_PRELOAD = Setting("MKD_STAGE_PRELOAD", "torch,torchvision,timm,numpy,PIL.Image,safetensors.torch,yaml,pydantic",
                        "Libraries a worker's stage zygote imports once, before it forks each stage (comma-separated; libraries only, never mkd code).")

ALL: tuple[Setting, ...] = (RUNS_DIR, BROKER_URL, STATE_DIR, LOAD_PLUGINS, DISABLE_PLUGINS, TRACE_PLUGINS, PROGRESS_FILE, PROGRESS_EVERY,
                            HEARTBEAT_EVERY, STALE_AFTER, NODE, WORKER_GPU, WORKER_DEVICES, WORKER_QUEUES, STAGE_MODULE,
                            NO_STAGE_ZYGOTE, STAGE_PRELOAD)


def describe() -> list[dict[str, str | None]]:
    """Every variable with its default, current value and meaning (for listings)."""
    return [{"name": s.name, "default": s.default, "value": s.raw(), "doc": s.doc} for s in ALL]


if __name__ == "__main__":
    for s in ALL:
        print(f"{s.name:22s} {s.doc} (default: {s.default if s.default is not None else 'unset'})")
