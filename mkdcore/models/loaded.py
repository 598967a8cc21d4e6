"""A model folder loaded for use outside the pipeline (:func:`mkdcore.api.load_model`).

Why a small object, not the bare module: a caller that classifies new clips needs,
besides the weights, the input contract (frames, frame size, normalisation) and the
feature width, all on the card; and the encode-once / head-per-query split that
``mkd predict`` and the exported graphs use (:mod:`mkdcore.export.modules`). The ONNX
runtime twin, :class:`mkdcore.export.runtime.OnnxModel`, has the same methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mkdcore.export.modules import (
    FewShotHead,
    FrameEncoder,
    check_clips,
    check_features,
)
from mkdcore.models.card import CardView, ModelCardError


@dataclass
class LoadedModel(CardView):
    """``model`` (eval mode), its ``card`` and the folder ``path`` it came from."""

    model: torch.nn.Module
    card: dict[str, Any]
    path: Path

    @property
    def feature_width(self) -> int:
        """Width ``W`` of the per-video ``(T, W)`` features :meth:`encode` gives."""
        return self.dim * self.branches

    @property
    def dim(self) -> int:
        return int(self.model.backbone.out_dim)

    @property
    def branches(self) -> int:
        return int(self.model.branches)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _fewshot(self) -> None:
        if self.spec["type"] != "fewshot":
            raise ModelCardError(f"{self.path} is a {self.spec['type']} model: it reads stored features, not clips")

    def encoder(self) -> FrameEncoder:
        """The frame encoder module (what ``mkd export`` exports)."""
        self._fewshot()
        return FrameEncoder(self.model.backbone, self.branches).eval()

    def head_module(self, way: int) -> FewShotHead:
        """The few-shot head for ``way`` classes (what ``mkd export`` exports)."""
        self._fewshot()
        return FewShotHead(self.model.head, way, self.dim, self.branches).eval()

    @torch.no_grad()
    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, T, 3, H, W)`` prepared as the card's input contract says ->
        features ``(N, T, W)`` on the CPU."""
        self._fewshot()
        check_clips(tuple(clips.shape), self.input, str(self.path))
        return self.encoder()(clips.to(self.device, torch.float32)).cpu()

    @torch.no_grad()
    def head(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor,
             way: int | None = None) -> torch.Tensor:
        """Logits ``(Nq, way)`` of queries against a labelled support set, all as
        features from :meth:`encode`; ``way`` defaults to ``max(label) + 1``."""
        return self.prepare_head(support, support_labels, way)(queries)

    @torch.no_grad()
    def prepare_head(self, support: torch.Tensor, support_labels: torch.Tensor,
                     way: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``queries -> logits (Nq, way)`` against a fixed support set: :meth:`head`'s
        logits, with the support set's share of the head (TRX: its tuple keys and values,
        25x a query's at 5-way 5-shot) computed once, here, not per query."""
        self._fewshot()
        check_features(tuple(support.shape), self.feature_width, self.frames, "support", str(self.path))
        labels = torch.as_tensor(support_labels, dtype=torch.long)
        way = int(labels.max()) + 1 if way is None else int(way)
        dev = self.device
        scorer = self.head_module(way).prepare(support.to(dev, torch.float32), labels.to(dev))

        @torch.no_grad()
        def logits(queries: torch.Tensor) -> torch.Tensor:
            check_features(tuple(queries.shape), self.feature_width, self.frames, "query", str(self.path))
            return scorer(queries.to(dev, torch.float32)).cpu()

        return logits
