"""Rank the support classes for query clips: one backbone pass per query, the few-shot
head against the stored support features, softmax over the logits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from mkdcore.predict.clips import read_clip
from mkdcore.predict.model import Predictor
from mkdcore.predict.support import SupportSet


@dataclass(frozen=True)
class Prediction:
    query: str
    top: list[tuple[str, float]]  # (class, softmax score), best first

    def as_json(self) -> dict[str, object]:
        return {"query": self.query, "top": [{"class": c, "score": s} for c, s in self.top]}


def encode_query(predictor: Predictor, path: Path) -> torch.Tensor:
    """``(1, T, W)`` features of one clip (decode, sample, transform, encode)."""
    frames = predictor.contract.transform()({"x": read_clip(path, predictor.contract.frames)})["x"]
    return predictor.encode(frames[None])


def rank(scorer: Callable[[torch.Tensor], torch.Tensor], support: SupportSet, query: torch.Tensor,
         top_k: int) -> list[tuple[str, float]]:
    """The ``top_k`` classes of one encoded query with their softmax scores; ``scorer`` is
    the head prepared on ``support`` (:meth:`Predictor.prepare_head`)."""
    logits = scorer(query)[0]
    scores = logits.softmax(-1)
    values, index = scores.topk(min(top_k, support.way))
    return [(support.classes[int(i)], float(v)) for v, i in zip(values, index)]


def predict(predictor: Predictor, support: SupportSet, queries: Iterable[Path], top_k: int = 5) -> Iterator[Prediction]:
    """A :class:`Prediction` per query, as each is computed (a stream prints as it goes).
    The head's support-only work is done once, before the first query."""
    scorer = predictor.prepare_head(support.features, support.labels, support.way)
    for path in queries:
        yield Prediction(str(path), rank(scorer, support, encode_query(predictor, Path(path)), top_k))
