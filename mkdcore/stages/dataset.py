"""What stages read of the dataset, as the experiment config describes it: the layout,
splits, transforms, the videos features are extracted for, and validation episodes."""

from __future__ import annotations

from typing import Any, Iterable

from mkdcore.config import ExperimentConfig
from mkdcore.data import VideoKey
from mkdcore.data.episodes import Episode, EpisodeSampler
from mkdcore.data.layout import WHICH, DatasetLayout
from mkdcore.data.splits import SplitIndex, load_split
from mkdcore.data.transforms import ClipTransform


def layout_of(cfg: ExperimentConfig) -> DatasetLayout:
    return DatasetLayout(cfg.data.root)


def split_of(cfg: ExperimentConfig, which: str) -> SplitIndex:
    return load_split(layout_of(cfg), cfg.data.split, which, cfg.data.split_id)


def data_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a saved model needs to read clips as it was trained (for `mkd eval`)."""
    d = cfg.data
    return {"root": str(d.root), "split": d.split, "split_id": d.split_id, "frames": d.frames,
            "resize": d.resize, "crop": d.crop, "normalize": d.normalize}


def transform_of(cfg: ExperimentConfig, train: bool) -> ClipTransform:
    d = cfg.data
    return ClipTransform(resize=d.resize, crop=d.crop, train=train, normalize=d.normalize)


def all_keys(cfg: ExperimentConfig) -> list[VideoKey]:
    """Every video of the train, val and test splits (features are extracted for all)."""
    keys: list[VideoKey] = []
    for which in WHICH:
        keys += split_of(cfg, which).keys()
    return sorted(set(keys))


def val_episodes(cfg: ExperimentConfig, n: int, query: int | None = None, which: str = "val",
                 seed: int | None = None) -> list[Episode]:
    ep = cfg.episodes
    sampler = EpisodeSampler(split_of(cfg, which), ep.way, ep.shot, query or ep.query_test,
                             seed=cfg.evaluation.seed if seed is None else seed)
    return sampler.take(n)


def episode_keys(episodes: Iterable[Episode]) -> list[VideoKey]:
    """Every video the episodes use (support and query), sorted."""
    keys: set[VideoKey] = set()
    for ep in episodes:
        keys.update(ep.support)
        keys.update(ep.query)
    return sorted(keys)
