"""Model folders: a saved model is ``model.json`` (its card, see
:mod:`mkdcore.models.card`: the spec the one builder rebuilds it from, its input
contract, widths, versions, evaluation) plus ``model.safetensors`` (its weights),
loadable with no experiment config; a later stage, ``mkd eval``, ``mkd export`` and
:func:`mkdcore.api.load_model` read them. Old folders (bare spec + ``model.pt``) still
load. A damaged file is one line naming it and how to redo the stage that wrote it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mkdcore.errors import TrainingError
from mkdcore.fileio import (
    CorruptFileError,
    atomic_save,
    atomic_write_json,
    clean_stale_temps,
    first_line,
    read_json,
    read_torch,
)
from mkdcore.models.build import Spec, build
from mkdcore.models.card import (
    CARD,
    LEGACY_WEIGHTS,
    WEIGHTS,
    ModelCardError,
    card_of,
    check_plugins,
    make_card,
)
from mkdcore.stages.stage_dir import StageDir

MODEL_SPEC = CARD


def save_model(dir: Path, model: torch.nn.Module, spec: Spec, state: Mapping[str, torch.Tensor] | None = None,
               evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """``model.safetensors`` (its weights) then ``model.json`` (its card), each written
    atomically (the card last: a folder with a card has its weights); temp files of a
    run killed mid-save are cleaned first, and a ``model.pt`` of an older save removed.
    Returns the card."""
    dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dir)
    save_weights(dir / WEIGHTS, state if state is not None else model.state_dict())
    card = make_card(spec, model, evaluation)
    atomic_write_json(dir / CARD, card, "model card")
    (dir / LEGACY_WEIGHTS).unlink(missing_ok=True)
    return card


def save_weights(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """A state dict as safetensors (no pickle: loading it runs no code). Tensors are
    copied contiguous on the CPU first: safetensors refuses views that share storage."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}), "model weights")


def read_weights(path: Path, remedy: str) -> dict[str, torch.Tensor]:
    """The state dict of a ``.safetensors`` (or legacy ``.pt``) weights file; a missing
    or damaged file is one line naming it."""
    if path.suffix != ".safetensors":
        return read_torch(path, "model weights", remedy)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CorruptFileError(f"model weights {path} do not exist; {remedy}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptFileError(f"model weights {path} are corrupt ({first_line(exc)}); {remedy}") from None


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


def read_card(dir: Path) -> dict[str, Any]:
    """The card of the model folder ``dir`` (old bare specs read as format-1 cards)."""
    dir = Path(dir)
    if not (dir / CARD).is_file():
        where = "folder" if dir.is_dir() else "path (it does not exist)"
        raise ModelCardError(f"{dir}: no {CARD} model card in this {where}; pass a model folder "
                             f"(a stage's model/ folder, or what mkd export wrote)")
    return card_of(read_json(dir / CARD, "model card", redo_remedy(StageDir.containing(dir))), dir / CARD)


def load_folder(dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model from its card and weights (built by the one builder, then
    its weights loaded), in eval mode on ``device``; returns it with its card."""
    dir = Path(dir)
    remedy = redo_remedy(StageDir.containing(dir))
    card = read_card(dir)
    if "export" in card:
        raise ModelCardError(f"{dir} holds a model exported as {card['export'].get('format')}; run it with "
                             f"mkdcore.export.runtime.load_exported, or load the model folder it was exported from")
    check_plugins(card, dir / CARD)
    try:
        model, _ = build(card["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"model card {dir / CARD} is corrupt ({first_line(exc)}); {remedy}") from None
    weights = dir / (WEIGHTS if card["format"] >= 2 else LEGACY_WEIGHTS)
    state = read_weights(weights, remedy)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"model weights {weights} are corrupt (they do not fit {CARD}: "
                               f"{first_line(exc)}); {remedy}") from None
    return model.to(device).eval(), card


def load_model(dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a folder and its spec (what the stages and ``mkd eval`` read)."""
    model, card = load_folder(dir, device)
    return model, card["spec"]


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


def record_evaluation(dir: Path, evaluation: dict[str, Any]) -> None:
    """Write ``evaluation`` into the card of the model folder ``dir`` (atomically); an
    old folder without a card format (bare spec) is left as it is."""
    card = read_card(dir)
    if card["format"] < 2:
        return
    atomic_write_json(Path(dir) / CARD, {**card, "evaluation": evaluation}, "model card")
