"""Seeded N-way K-shot Q-query episodes (spec 2.5) and frozen episode files.

Episode ``i`` of a sampler is a pure function of ``(seed, i)`` (its own
``numpy`` Generator seeded with ``[seed, i]``), so a run draws the same episodes
whatever the number of DataLoader workers, and a test set can be frozen to JSON so
two models are compared on exactly the same tasks. Support and query lists are
shuffled (as the original loader does), so consumers must use the labels, never
positions; labels index ``Episode.classes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mkdcore.data import VideoKey
from mkdcore.data.splits import SplitIndex
from mkdcore.errors import DataError
from mkdcore.fileio import atomic_write_text, read_json

FORMAT = "mkd-episodes/1"


@dataclass
class Episode:
    """One task: label ``c`` means ``classes[c]``."""

    classes: list[str]
    support: list[VideoKey]
    support_labels: list[int]
    query: list[VideoKey]
    query_labels: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "support": [list(k) for k in self.support],
            "support_labels": self.support_labels,
            "query": [list(k) for k in self.query],
            "query_labels": self.query_labels,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Episode:
        return cls(
            classes=list(d["classes"]),
            support=[VideoKey(*k) for k in d["support"]],
            support_labels=[int(x) for x in d["support_labels"]],
            query=[VideoKey(*k) for k in d["query"]],
            query_labels=[int(x) for x in d["query_labels"]],
        )


class EpisodeSampler:
    """Draws ``way`` classes, then ``shot + query`` distinct videos per class."""

    def __init__(self, index: SplitIndex, way: int = 5, shot: int = 5, query: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if way < 1 or shot < 1 or query < 0:
            raise DataError(f"episode shape way={way} shot={shot} query={query}: way and shot must be >= 1, query >= 0")
        if way > len(index.classes):
            raise DataError(f"{way}-way episodes need {way} classes, the split has {len(index.classes)}")
        small = [c for c in index.classes if len(index.videos[c]) < shot + query]
        if small:
            c = small[0]
            raise DataError(
                f"class {c} has {len(index.videos[c])} videos, {shot}-shot {query}-query episodes need {shot + query}"
                + (f" ({len(small)} such classes)" if len(small) > 1 else "")
            )
        self.index, self.way, self.shot, self.query, self.seed, self.shuffle = index, way, shot, query, seed, shuffle
        self._next = 0

    def episode(self, i: int) -> Episode:
        """Episode number ``i`` (deterministic in ``(seed, i)``)."""
        rng = np.random.default_rng([self.seed, i])
        chosen = rng.choice(len(self.index.classes), self.way, replace=False)
        classes = [self.index.classes[j] for j in chosen]
        support: list[tuple[VideoKey, int]] = []
        query: list[tuple[VideoKey, int]] = []
        for label, cls in enumerate(classes):
            pool = self.index.videos[cls]
            picks = rng.choice(len(pool), self.shot + self.query, replace=False)
            support += [(pool[j], label) for j in picks[: self.shot]]
            query += [(pool[j], label) for j in picks[self.shot :]]
        if self.shuffle:
            support = [support[j] for j in rng.permutation(len(support))]
            query = [query[j] for j in rng.permutation(len(query))]
        return Episode(
            classes=classes,
            support=[k for k, _ in support],
            support_labels=[lab for _, lab in support],
            query=[k for k, _ in query],
            query_labels=[lab for _, lab in query],
        )

    def sample(self) -> Episode:
        """The next episode of this sampler's sequence."""
        ep = self.episode(self._next)
        self._next += 1
        return ep

    def take(self, n: int, start: int = 0) -> list[Episode]:
        return [self.episode(start + i) for i in range(n)]


def save_episodes(path: str | os.PathLike, episodes: Sequence[Episode], meta: dict[str, Any]) -> Path:
    """Write episodes as JSON (atomically: a half-written file is never left behind)."""
    path = Path(path)
    doc = {"format": FORMAT, "meta": {**meta, "n": len(episodes)}, "episodes": [e.to_json() for e in episodes]}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")), "episode file")
    return path


def load_episodes(path: str | os.PathLike) -> tuple[list[Episode], dict[str, Any]]:
    """``(episodes, meta)`` from a file written by :func:`save_episodes`."""
    path = Path(path)
    doc = read_json(path, "episode file", expect=None)  # a missing, non-UTF-8 or torn file: one line
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "episodes" not in doc:
        raise DataError(f"episode file {path} is not an mkd episode file (format {FORMAT})")
    try:
        episodes = [Episode.from_json(e) for e in doc["episodes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"episode file {path}: malformed episode ({exc})") from None
    return episodes, dict(doc.get("meta", {}))
