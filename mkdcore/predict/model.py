"""The one adapter between a model folder and prediction.

A :class:`Predictor` is what ``mkd predict`` and ``mkd support build`` need of a model:
its input contract (frames, resize, crop, normalisation: how a clip becomes a tensor),
a fingerprint (so support features from another model are refused), ``encode`` (clips
``(N, T, 3, S, S)`` -> per-video features ``(N, T, W)``, branches concatenated) and
``head`` (the few-shot logits ``(Nq, way)`` of queries against support features). The
eager model (:func:`mkdcore.api.load_model`) and an ONNX export
(:mod:`mkdcore.export.runtime`) both have that shape; :func:`load_predictor` picks one,
so changing how model folders are read touches this module only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mkdcore.data.transforms import ClipTransform
from mkdcore.errors import ConfigError
from mkdcore.fileio import CorruptFileError, first_line


@dataclass(frozen=True)
class InputContract:
    """How a clip must be prepared for the model (what it was tested on in training)."""

    modality: str
    frames: int
    resize: int
    crop: int
    normalize: str

    def transform(self) -> ClipTransform:
        """The evaluation transform: shorter side to ``resize``, centre crop, no flip."""
        return ClipTransform(resize=self.resize, crop=self.crop, train=False, normalize=self.normalize)


class Model(Protocol):
    """The methods prediction calls (``LoadedModel`` and ``OnnxModel`` have them)."""

    def encode(self, clips: torch.Tensor) -> torch.Tensor: ...

    def head(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor,
             way: int | None = None) -> torch.Tensor: ...

    def prepare_head(self, support: torch.Tensor, support_labels: torch.Tensor,
                     way: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]: ...


@dataclass
class Predictor:
    """A model ready to predict: ``model`` (eager or ONNX), where it came from, how clips
    are prepared for it, and the fingerprint of the features it computes."""

    path: Path
    model: Model
    contract: InputContract
    fingerprint: str
    runtime: str  # "torch" (a model folder) or the export format ("onnx", ...)

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.encode(clips)

    def head(self, support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, way: int) -> torch.Tensor:
        return self.model.head(support, labels, queries, way)

    def prepare_head(self, support: torch.Tensor, labels: torch.Tensor, way: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``queries -> logits`` against this support set, its share of the head computed once."""
        return self.model.prepare_head(support, labels, way)


def fingerprint_of(files: list[Path], card: dict[str, Any], contract: InputContract) -> str:
    """blake2b of the files that compute the features (the weights of a model folder, the
    encoder graph of an export), the components and the input contract: equal exactly
    when two loads compute the same features (an evaluation added to a card later does
    not change it). An export and its source folder differ (their features agree to
    ~1e-5, not bit for bit), so support features are rebuilt per form."""
    h = hashlib.blake2b(digest_size=16)
    for path in files:
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise CorruptFileError(f"cannot read model file {path}: {first_line(exc)}") from None
    spec = card["spec"]
    parts = {"backbone": spec.get("backbone"), "head": spec.get("head"), "contract": asdict(contract)}
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()


def load_predictor(path: Path, device: str = "auto") -> Predictor:
    """The model at ``path`` (a stage folder, its ``model/`` folder, or an export of one)
    ready to predict; one line when it is not a few-shot model of clips. An export runs
    on the CPU whatever ``device`` says."""
    from mkdcore.device import resolve_device
    from mkdcore.export.runtime import open_model
    from mkdcore.models.card import LEGACY_WEIGHTS

    model = open_model(Path(path), str(resolve_device(device, "--device")))
    card, folder = model.card, Path(model.path)
    if card["type"] != "fewshot":
        raise ConfigError(f"{folder}: a {card['type']} model reads stored features, not clips; "
                          "predict with a student (or a per-modality teacher)")
    contract = contract_of(card, folder)
    if "export" in card:
        files, runtime = [folder / card["export"]["files"]["encoder"]], card["export"]["format"]
    else:
        files, runtime = [folder / (card.get("weights") or LEGACY_WEIGHTS)], "torch"
    return Predictor(folder, model, contract, fingerprint_of(files, card, contract), runtime)


def contract_of(card: dict[str, Any], path: Path) -> InputContract:
    """The card's input contract; a card that does not say how clips were read (a model
    built by hand, never trained by a stage) is one line."""
    try:
        i = card["input"]
        return InputContract(modality=str(i["modality"]), frames=int(i["frames"]), resize=int(i["resize"]),
                             crop=int(i["frame_size"]), normalize=str(i["normalize"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"model card {path} does not say how to read clips (input contract: "
                               f"{first_line(exc)}); predict needs a model saved by a training stage") from None
