"""Model folders: a saved model is ``model.json`` (its spec, see
:mod:`mkdcore.models.build`) plus ``model.pt`` (its weights), loadable with no
experiment config; a later stage and ``mkd eval`` read them, and a damaged file is
one line naming it and how to redo the stage that wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from mkdcore.errors import TrainingError
from mkdcore.fileio import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write_json,
    clean_stale_temps,
    first_line,
    read_json,
    read_torch,
)
from mkdcore.models.build import Spec, build
from mkdcore.stages.stage_dir import StageDir

MODEL_SPEC = "model.json"
WEIGHTS = "model.pt"


def save_model(dir: Path, model: torch.nn.Module, spec: Spec, state: Mapping[str, torch.Tensor] | None = None) -> None:
    """``model.json`` (how to rebuild it) and ``model.pt`` (its weights), each written
    atomically; temp files of a run killed mid-save are cleaned first."""
    dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dir)
    atomic_write_json(dir / MODEL_SPEC, spec, "model spec")
    atomic_torch_save(dir / WEIGHTS, dict(state if state is not None else model.state_dict()), "model weights")


def redo_remedy(stage: StageDir) -> str:
    """How to recreate what a finished stage wrote: the stage's name comes from its
    manifest (``--force`` takes names), else from the ``stages/<kind>/<key>`` layout."""
    name = None
    try:
        name = read_json(stage.manifest, "stage manifest").get("stage")
    except CorruptFileError:
        pass
    if not isinstance(name, str) and stage.path.parent.parent.name == "stages":
        name = stage.path.parent.name
    if isinstance(name, str):
        return f"delete {stage.path} or run with --force {name} to redo it"
    return f"delete {stage.path} and train it again"


def model_dir_of(path: Path) -> Path | None:
    """``path`` if it holds ``model.json``, else its ``model/`` folder if that does."""
    for candidate in (Path(path), Path(path) / "model"):
        if (candidate / MODEL_SPEC).is_file():
            return candidate
    return None


def load_model(dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model from ``model.json`` + ``model.pt`` (built by the one
    builder, then its weights loaded), in eval mode on ``device``."""
    remedy = redo_remedy(StageDir.containing(dir))
    spec = read_json(dir / MODEL_SPEC, "model spec", remedy)
    try:
        model, _ = build(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"model spec {dir / MODEL_SPEC} is corrupt ({first_line(exc)}); {remedy}") from None
    state = read_torch(dir / WEIGHTS, "model weights", remedy)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"model weights {dir / WEIGHTS} are corrupt (they do not fit {MODEL_SPEC}: "
                               f"{first_line(exc)}); {remedy}") from None
    return model.to(device).eval(), spec


def selected_weights(stage: StageDir) -> dict[str, torch.Tensor]:
    """The weights a training stage selected on the val split (best checkpoint), else its
    last checkpoint: what its model folder stores."""
    for path in (stage.best_checkpoint, stage.last_checkpoint):
        if path.exists():
            state = read_torch(path, "checkpoint", redo_remedy(stage))
            if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                raise CorruptFileError(f"checkpoint {path} is corrupt (no model state); {redo_remedy(stage)}")
            return state["model"]
    raise TrainingError(f"{stage.path}: no checkpoint to select a model from")
