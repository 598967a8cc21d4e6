"""Run an exported model folder (``mkd export``) without mkd's training code.

Interface for callers (``mkd predict``, scripts)::

    from mkdcore.export.runtime import load_exported, open_model
    m = load_exported("student-onnx/")      # ONNX via onnxruntime (CPU), or TorchScript / ExportedProgram via torch
    feats = m.encode(clips)                  # clips (N, T, 3, S, S) float32, prepared as m.input says -> (N, T, W) torch tensor
    logits = m.head(support, labels, queries)  # (Ns, T, W), (Ns,) int64 0..way-1, (Nq, T, W) -> (Nq, way)
    m.card, m.input, m.frames, m.frame_size, m.feature_width, m.way, m.path

``open_model(path)`` returns this for an export folder and
:class:`mkdcore.models.loaded.LoadedModel` (same ``encode``/``head``/``input``/
``frames``/``frame_size``/``feature_width``) for a model folder, so a caller needs no
branch. An exported head has a static ``way`` (``m.way``): ``head`` with labels for
another number of classes is one line; ``Ns``, ``Nq`` and the shots per class are free.
Clips of the wrong frame count or size are one line naming the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mkdcore.errors import DataError
from mkdcore.export.modules import check_clips, check_features
from mkdcore.fileio import first_line
from mkdcore.models.card import CARD, CardView, ModelCardError


class ExportedModel(CardView):
    """An export folder's two graphs behind the eager :class:`LoadedModel` methods."""

    def __init__(self, path: Path, card: dict[str, Any], encoder: Callable[..., np.ndarray], head: Callable[..., np.ndarray]) -> None:
        self.path, self.card, self._encoder, self._head = path, card, encoder, head

    @property
    def export(self) -> dict[str, Any]:
        return self.card["export"]

    @property
    def feature_width(self) -> int:
        return int(self.card["features"]["width"])

    @property
    def way(self) -> int:
        return int(self.export["way"])

    def encode(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clips ``(N, T, 3, S, S)`` -> features ``(N, T, W)``."""
        x = np.ascontiguousarray(np.asarray(clips, dtype=np.float32))
        check_clips(x.shape, self.input, str(self.path))
        return torch.from_numpy(np.asarray(self._encoder(x)))

    def head(self, support: torch.Tensor | np.ndarray, support_labels: torch.Tensor | np.ndarray | list[int],
             queries: torch.Tensor | np.ndarray, way: int | None = None) -> torch.Tensor:
        """Logits ``(Nq, way)``; ``way`` (if given) and the labels must fit the export's."""
        s = np.ascontiguousarray(np.asarray(support, dtype=np.float32))
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        labels = np.ascontiguousarray(np.asarray(support_labels, dtype=np.int64))
        for what, a in (("support", s), ("query", q)):
            check_features(a.shape, self.feature_width, self.frames, what, str(self.path))
        classes = int(labels.max()) + 1 if labels.size else 0
        if (way is not None and way != self.way) or classes > self.way or labels.min(initial=0) < 0:
            raise DataError(f"{self.path} was exported for {self.way} classes (--way {self.way}); the support set has "
                            f"{way or classes}: export it again with --way {way or classes} or use the model folder")
        if labels.shape[0] != s.shape[0]:
            raise DataError(f"{self.path}: {labels.shape[0]} support labels for {s.shape[0]} support videos")
        return torch.from_numpy(np.asarray(self._head(s, labels, q)))

    def prepare_head(self, support: torch.Tensor | np.ndarray, support_labels: torch.Tensor | np.ndarray | list[int],
                     way: int | None = None) -> Callable[[torch.Tensor | np.ndarray], torch.Tensor]:
        """``queries -> logits``: :meth:`head` on the fixed support set (an exported head is
        one graph of support and queries, so nothing of the support set is kept between
        queries: the eager model's :meth:`LoadedModel.prepare_head` does that)."""
        return lambda queries: self.head(support, support_labels, queries, way)


def _onnx_runners(path: Path, files: dict[str, str]) -> tuple[Callable, Callable]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelCardError(f"{path} is an ONNX export: install the export extra (pip install 'lite-mkd[export]')") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {}
    for part, name in files.items():
        try:
            sessions[part] = ort.InferenceSession(str(path / name), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise ModelCardError(f"{path / name} cannot be loaded ({first_line(exc)}); export the model again") from None
    enc, head = sessions["encoder"], sessions["head"]
    return (lambda x: enc.run(None, {"clips": x})[0],
            lambda s, lab, q: head.run(None, {"support": s, "support_labels": lab, "queries": q})[0])


def _torch_runners(path: Path, files: dict[str, str], fmt: str) -> tuple[Callable, Callable]:
    modules = {}
    for part, name in files.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
                modules[part] = torch.jit.load(str(path / name), map_location="cpu") if fmt == "torchscript" \
                    else torch.export.load(str(path / name)).module()
        except Exception as exc:  # noqa: BLE001  (torch's loaders raise many types)
            raise ModelCardError(f"{path / name} cannot be loaded ({first_line(exc)}); export the model again") from None
    enc, head = modules["encoder"], modules["head"]

    @torch.no_grad()
    def encode(x: np.ndarray) -> np.ndarray:
        return enc(torch.from_numpy(x)).numpy()

    @torch.no_grad()
    def run_head(s: np.ndarray, lab: np.ndarray, q: np.ndarray) -> np.ndarray:
        return head(torch.from_numpy(s), torch.from_numpy(lab), torch.from_numpy(q)).numpy()

    return encode, run_head


def load_exported(path: str | Path) -> ExportedModel:
    """The export folder ``path`` (``model.json`` with an ``export`` section)."""
    from mkdcore.models.folder import read_card

    path = Path(path)
    card = read_card(path)
    if "export" not in card:
        raise ModelCardError(f"{path} is a model folder, not an export; load it with mkdcore.api.load_model")
    exp = card["export"]
    fmt, files = exp.get("format"), exp.get("files") or {}
    missing = [name for name in files.values() if not (path / name).is_file()]
    if set(files) != {"encoder", "head"} or missing:
        raise ModelCardError(f"{path / CARD}: the export's files are missing ({', '.join(missing) or 'none listed'}); "
                             f"export the model again")
    if fmt == "onnx":
        encoder, head = _onnx_runners(path, files)
    elif fmt in ("torchscript", "exported-program"):
        encoder, head = _torch_runners(path, files, fmt)
    else:
        raise ModelCardError(f"{path / CARD}: unknown export format {fmt!r}")
    return ExportedModel(path, card, encoder, head)


def open_model(path: str | Path, device: str = "cpu") -> Any:
    """An export folder as :class:`ExportedModel`, a model folder (or a stage folder
    holding ``model/``) as :class:`mkdcore.models.loaded.LoadedModel`."""
    from mkdcore import api
    from mkdcore.models.folder import model_dir_of, read_card

    folder = model_dir_of(Path(path)) or Path(path)
    if "export" in read_card(folder):
        return load_exported(folder)
    return api.load_model(folder, device)

