"""Episodes as tensors: a map-style dataset over episode numbers plus its DataLoader.

Item ``i`` is episode ``i`` of the sampler (or of a frozen list), decoded with a
Generator seeded by ``[seed, i]`` for temporal jitter, crop and flip. Nothing depends
on which worker builds an item, so results are identical for any ``num_workers``.

Each item is a dict::

    frames[modality] = {"support": float (Ns,T,3,H,W), "query": float (Nq,T,3,H,W)}
    support_frames, query_frames      # the first modality's tensors (rgb), for convenience
    support_labels (Ns,) long, query_labels (Nq,) long
    support_keys, query_keys          # lists of VideoKey
    classes                           # label c is classes[c]
    features[name] = {"support": (Ns,T,D), "query": (Nq,T,D)}   # when feature stores are given

With ``decode="cuda"`` (the GPU data path, :mod:`mkdcore.data.device_decode`) an item
carries ``encoded`` (JPEG bytes and the clips' random draws) instead of the three frame
entries; :func:`decode_item` (called by :class:`OrderedEpisodes` on its device) turns it
into the same dict, decoded and transformed on the GPU with the same draws.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mkdcore.data import VideoKey
from mkdcore.data.device_decode import EncodedEpisode, Part, decode_item, encode_part
from mkdcore.data.episodes import Episode, EpisodeSampler
from mkdcore.data.features import FeatureStore
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.splits import SplitIndex
from mkdcore.data.transforms import ClipTransform
from mkdcore.data.video import read_frames, sample_indices
from mkdcore.errors import DataError
from mkdcore.parallel import worker_context

#: length of a sampler-backed dataset when none is given (training stops by step count)
DEFAULT_NUM_EPISODES = 1_000_000


@dataclass(frozen=True)
class ClipPlan:
    """The random part of loading one video: the sampled frame files of every modality
    and the clip's crop/flip. Drawing it is separate from reading pixels so both data
    paths (decode in the worker, or on the GPU) use the same draws."""

    paths: dict[str, list[Path]]
    params: tuple[float, float, bool]


class EpisodeDataset(Dataset):
    """Episodes ``0..len-1`` from a sampler or a frozen list, loaded as tensors."""

    def __init__(
        self,
        layout: DatasetLayout,
        index: SplitIndex | None,
        episodes: EpisodeSampler | Sequence[Episode],
        modalities: Sequence[str] = ("rgb",),
        transform: ClipTransform | None = None,
        feature_stores: Mapping[str, FeatureStore] | None = None,
        frames: int = 8,
        num_episodes: int | None = None,
        seed: int | None = None,
        decode: Literal["cpu", "cuda"] = "cpu",
    ) -> None:
        """``decode``: where frames are decoded; ``cuda`` yields ``encoded`` items (see the
        module docstring), resolved from ``runtime.decode`` by
        :func:`mkdcore.data.device_decode.resolve_decode`."""
        if not modalities:
            raise DataError("EpisodeDataset needs at least one modality")
        self.layout, self.index = layout, index
        self.modalities = list(modalities)
        self.transform = transform if transform is not None else ClipTransform(train=False)
        self.feature_stores = dict(feature_stores or {})
        self.frames = frames
        self.decode = decode
        if isinstance(episodes, EpisodeSampler):
            self.sampler: EpisodeSampler | None = episodes
            self.episodes: list[Episode] | None = None
            self.length = num_episodes if num_episodes is not None else DEFAULT_NUM_EPISODES
            self.seed = episodes.seed if seed is None else seed
        else:
            self.sampler, self.episodes = None, list(episodes)
            self.length = len(self.episodes) if num_episodes is None else min(num_episodes, len(self.episodes))
            self.seed = 0 if seed is None else seed

    def __len__(self) -> int:
        return self.length

    def episode(self, i: int) -> Episode:
        return self.sampler.episode(i) if self.sampler is not None else self.episodes[i]

    def plan_clip(self, key: VideoKey, rng: np.random.Generator) -> ClipPlan:
        """Frame indices, then crop and flip, drawn from ``rng`` in that order (the order
        every run has used: changing it changes every episode's pixels)."""
        paths = {m: self.layout.frame_paths(m, key) for m in self.modalities}
        first = self.modalities[0]
        n = len(paths[first])
        if n == 0:
            raise DataError(f"video {key}: no frames in {self.layout.video_dir(first, key)}")
        for m in self.modalities[1:]:
            if len(paths[m]) != n:
                raise DataError(f"video {key}: {len(paths[m])} {m} frames but {n} {first} frames ({self.layout.video_dir(m, key)})")
        idx = sample_indices(n, self.frames, self.transform.train, rng, name=f"video {key}")
        return ClipPlan({m: [paths[m][j] for j in idx] for m in self.modalities}, self.transform.draw(rng))

    def load_clip(self, key: VideoKey, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """All modalities of one video: same frame indices, same crop and flip."""
        plan = self.plan_clip(key, rng)
        return {m: self.transform.apply(read_frames(plan.paths[m]), *plan.params) for m in self.modalities}

    def _stack(self, keys: Sequence[VideoKey], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        per_video = [self.load_clip(k, rng) for k in keys]
        return {m: torch.stack([v[m] for v in per_video]) for m in self.modalities}

    def _encode(self, keys: Sequence[VideoKey], rng: np.random.Generator) -> dict[str, Part]:
        """The GPU path's worker side: per modality the clips' JPEG bytes and draws, or
        (a modality with non-JPEG frames) the clips decoded and transformed here."""
        plans = [self.plan_clip(k, rng) for k in keys]
        return {m: encode_part([plan.paths[m] for plan in plans], [plan.params for plan in plans], self.transform)
                for m in self.modalities}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        ep = self.episode(i)
        rng = np.random.default_rng([self.seed, i, 1])
        out: dict[str, Any]
        if self.decode == "cuda":
            support_parts, query_parts = self._encode(ep.support, rng), self._encode(ep.query, rng)
            parts = {m: {"support": support_parts[m], "query": query_parts[m]} for m in self.modalities}
            out = {"encoded": EncodedEpisode(self.transform, parts)}
        else:
            support = self._stack(ep.support, rng)
            query = self._stack(ep.query, rng)
            first = self.modalities[0]
            out = {
                "frames": {m: {"support": support[m], "query": query[m]} for m in self.modalities},
                "support_frames": support[first],
                "query_frames": query[first],
            }
        out |= {
            "support_labels": torch.tensor(ep.support_labels, dtype=torch.long),
            "query_labels": torch.tensor(ep.query_labels, dtype=torch.long),
            "support_keys": list(ep.support),
            "query_keys": list(ep.query),
            "classes": list(ep.classes),
            "index": i,
        }
        if self.feature_stores:
            out["features"] = {
                name: {
                    "support": torch.from_numpy(np.stack([store.load(k) for k in ep.support])).float(),
                    "query": torch.from_numpy(np.stack([store.load(k) for k in ep.query])).float(),
                }
                for name, store in self.feature_stores.items()
            }
        return out


def _init_worker(worker_id: int) -> None:
    """Distinct, reproducible torch/numpy seeds per worker (derived from the loader's base
    seed), and SIGTERM and SIGINT ignored: a cancel or a preemption signals the stage's
    whole process group, and a terminal's Ctrl-C its foreground group, these workers
    included. A worker ended by either made the trainer fail while it finished its step
    ("DataLoader worker exited unexpectedly", or a lost shared-memory tensor) instead of
    checkpointing and exiting 143 / 130. The trainer stops its workers when it exits;
    SIGKILL, or a second Ctrl-C in the trainer, still ends everything."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def episode_loader(
    dataset: EpisodeDataset,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader yielding one episode dict per step, in episode order.

    Pinned memory on CUDA (so ``.to(device, non_blocking=True)`` overlaps), persistent
    workers and prefetching when ``num_workers > 0``. Episode content does not depend on
    the workers (see :class:`EpisodeDataset`).
    """
    device = torch.device(device)
    generator = torch.Generator()
    generator.manual_seed(int(dataset.seed))
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        # never plain fork from a process running torch threads (see mkdcore.parallel)
        kwargs.update(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=_init_worker,
                      multiprocessing_context=worker_context())
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=generator,
        **kwargs,
    )


class OrderedEpisodes:
    """Yields dataset items ``start, start+1, ...`` through a prefetching DataLoader,
    so a resumed run sees exactly the episodes an uninterrupted one would. Items of the
    GPU data path come back decoded on ``device`` (:func:`decode_item`)."""

    def __init__(self, dataset: EpisodeDataset, num_workers: int, device: torch.device) -> None:
        self.dataset, self.num_workers, self.device = dataset, num_workers, device
        self._it: Iterator[dict[str, Any]] | None = None
        self._next = -1

    def get(self, index: int) -> dict[str, Any]:
        if self._it is None or index != self._next:
            sub = torch.utils.data.Subset(self.dataset, range(index, len(self.dataset)))
            sub.seed = self.dataset.seed  # type: ignore[attr-defined]
            self._it = iter(episode_loader(sub, self.num_workers, self.device))  # type: ignore[arg-type]
        item = next(self._it)
        self._next = index + 1
        return decode_item(item, self.device)


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x
