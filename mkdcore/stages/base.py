"""Stage nodes, manifests and the context a stage function receives."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mkdcore.config import ExperimentConfig
    from mkdcore.progress import ProgressReporter

from mkdcore.stages import provenance
from mkdcore.stages.provenance import Freshness
from mkdcore.stages.stage_dir import StageDir


@dataclass
class StageNode:
    """One stage of the experiment DAG."""

    name: str  # e.g. "teacher:rgb"
    kind: str  # e.g. "teacher"
    key: str  # content hash of what the stage reads
    deps: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"modality": "rgb"}
    runs_dir: Path = Path("runs")
    #: ``(kind, name)`` of the plugin components this stage builds (their packages'
    #: versions are part of its provenance)
    components: list[tuple[str, str]] = field(default_factory=list)
    #: for outputs outside the stage directory: ``{"kind", "args", "changed"}`` of a
    #: :mod:`~mkdcore.stages.provenance` probe (``changed`` is the stale reason)
    probe: dict[str, Any] | None = None

    @property
    def stage_dir(self) -> Path:
        return Path(self.runs_dir) / "stages" / self.kind / self.key

    @property
    def files(self) -> StageDir:
        """The paths inside this stage's folder."""
        return StageDir(self.stage_dir)

    @property
    def manifest_path(self) -> Path:
        return self.files.manifest

    def input_dirs(self, nodes: dict[str, "StageNode"]) -> dict[str, Path]:
        return {d: nodes[d].stage_dir for d in self.deps}

    def freshness(self, nodes: dict[str, "StageNode"], memo: dict[Path, Freshness] | None = None) -> Freshness:
        """May this stage's finished output be reused (see :mod:`mkdcore.stages.provenance`)?"""
        return provenance.check(self.stage_dir, self.input_dirs(nodes), memo)

    def manifest(self) -> dict[str, Any]:
        """The manifest of a finished stage (one-line error when unreadable)."""
        from mkdcore.fileio import read_json

        return read_json(self.manifest_path, "manifest", f"run with --force {self.name} to redo the stage")

    def as_dict(self, nodes: dict[str, "StageNode"] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "key": self.key, "deps": self.deps,
                               "params": self.params, "stage_dir": str(self.stage_dir)}
        if nodes is not None:
            f = self.freshness(nodes)
            out.update(done=f.fresh, reason=f.reason)
        return out


@dataclass
class StageContext:
    """What a stage function gets: the config, its node, its inputs, a device."""

    cfg: "ExperimentConfig"
    node: StageNode
    nodes: dict[str, StageNode]
    device: "torch.device"
    #: the user asked to redo this stage (``--force``): stages whose output lives outside
    #: their directory (``derive``) must rebuild it instead of resuming
    forced: bool = False

    @property
    def dir(self) -> Path:
        return self.node.stage_dir

    @property
    def files(self) -> StageDir:
        return self.node.files

    def progress(self, total: int, unit: str = "tasks", label: str | None = None) -> "ProgressReporter":
        from mkdcore.progress import ProgressReporter

        return ProgressReporter(label or self.node.name, total=total, unit=unit)

    def log(self, message: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        from mkdcore.fileio import append_line

        append_line(self.files.log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", "stage log")


def plugin_packages(components: list[tuple[str, str]]) -> dict[str, str]:
    """``{package: version}`` of the distributions providing ``components``."""
    from mkdcore import api

    packages: dict[str, str] = {}
    for kind, name in components:
        spec = api.get(kind, name)
        packages[spec.package] = spec.version
    return packages


def write_started(ctx: StageContext, inputs: dict[str, Any]) -> None:
    """Record what this run of the stage is made from, before it makes anything: an
    interrupted run resumes only if its inputs are still the same."""
    from mkdcore.fileio import atomic_write_json

    atomic_write_json(ctx.files.started, {"inputs": inputs}, "stage start record")


def write_manifest(ctx: StageContext, outputs: dict[str, Any], started: float, inputs: dict[str, Any]) -> None:
    """Mark a stage done: written last and atomically, only when the stage function
    returned (a failure never writes one), with the provenance that decides reuse."""
    from mkdcore.fileio import atomic_write_json

    node = ctx.node
    probe = None
    if node.probe is not None:
        probe = {**node.probe, "value": provenance.run_probe(node.probe)}
    manifest = {
        "format": provenance.FORMAT,
        "id": provenance.new_id(),
        "stage": node.name,
        "kind": node.kind,
        "key": node.key,
        "inputs": inputs,
        "code": provenance.code_versions(plugin_packages(node.components)),
        "probe": probe,
        "params": node.params,
        "versions": {"torch": provenance.installed_version("torch"), "python": platform.python_version()},
        "device": str(ctx.device),
        "seconds": round(time.time() - started, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "outputs": outputs,
    }
    atomic_write_json(node.manifest_path, manifest, "stage manifest")
