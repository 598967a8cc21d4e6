"""Stage nodes, manifests and the context a stage function receives."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mkdcore.config import ExperimentConfig
    from mkdcore.progress import ProgressReporter

MANIFEST = "manifest.json"


@dataclass
class StageNode:
    """One stage of the experiment DAG."""

    name: str  # e.g. "teacher:rgb"
    kind: str  # e.g. "teacher"
    key: str  # content hash of what the stage reads
    deps: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"modality": "rgb"}
    runs_dir: Path = Path("runs")

    @property
    def stage_dir(self) -> Path:
        return Path(self.runs_dir) / "stages" / self.kind / self.key

    @property
    def manifest_path(self) -> Path:
        return self.stage_dir / MANIFEST

    def is_done(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "key": self.key, "deps": self.deps, "params": self.params,
                "stage_dir": str(self.stage_dir), "done": self.is_done()}


@dataclass
class StageContext:
    """What a stage function gets: the config, its node, its inputs, a device."""

    cfg: "ExperimentConfig"
    node: StageNode
    nodes: dict[str, StageNode]
    device: "torch.device"
    progress_factory: Any = None

    @property
    def dir(self) -> Path:
        return self.node.stage_dir

    def dep(self, name: str) -> StageNode:
        return self.nodes[name]

    def progress(self, total: int, unit: str = "tasks", label: str | None = None) -> "ProgressReporter":
        from mkdcore.progress import ProgressReporter

        return ProgressReporter(label or self.node.name, total=total, unit=unit)

    def log(self, message: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "log.txt").open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def write_manifest(ctx: StageContext, outputs: dict[str, Any], started: float) -> None:
    """Mark a stage done; written last and atomically."""
    import torch

    from mkdcore import __version__

    manifest = {
        "stage": ctx.node.name,
        "kind": ctx.node.kind,
        "key": ctx.node.key,
        "inputs": {d: ctx.nodes[d].key for d in ctx.node.deps},
        "params": ctx.node.params,
        "versions": {"mkd": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(ctx.device),
        "seconds": round(time.time() - started, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "outputs": outputs,
    }
    ctx.dir.mkdir(parents=True, exist_ok=True)
    tmp = ctx.dir / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, ctx.node.manifest_path)
