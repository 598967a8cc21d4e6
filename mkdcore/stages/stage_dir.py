"""The layout of one stage's folder, spelled once.

``<runs>/stages/<kind>/<key>/`` holds what a stage made: its manifest (written last,
the mark of a finished stage), the record of what an unfinished run is made from,
checkpoints, metrics, a log, and its product (a model folder, per-video features or
results). Every module that reads or writes one of these goes through
:class:`StageDir`, so the layout can change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
STARTED = "started.json"
LOCK = ".run.lock"


@dataclass(frozen=True)
class StageDir:
    """Paths inside one stage folder (nothing is created by asking for a path)."""

    path: Path

    @classmethod
    def of(cls, runs_dir: Path, kind: str, key: str) -> "StageDir":
        return cls(Path(runs_dir) / "stages" / kind / key)

    @classmethod
    def containing(cls, model_dir: Path) -> "StageDir":
        """The stage folder of a saved model (``<stage>/model/``, or a bare model folder)."""
        model_dir = Path(model_dir)
        return cls(model_dir.parent if model_dir.name == "model" else model_dir)

    # ----------------------------------------------------------------- records
    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def started(self) -> Path:
        return self.path / STARTED

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    # ----------------------------------------------------------------- training
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """Everything needed to resume exactly (model, optimiser, RNG, task counter)."""
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        """The weights selected on the val split."""
        return self.checkpoints / "best.pt"

    # ----------------------------------------------------------------- products
    @property
    def model(self) -> Path:
        """A model folder (``model.json`` + weights)."""
        return self.path / "model"

    @property
    def features(self) -> Path:
        """Per-video ``<class>/<video>.npy`` features."""
        return self.path / "features"

    @property
    def results(self) -> Path:
        return self.path / "results.json"
