"""Scoring few-shot models on episodes, on cached per-video features.

Why cache: in eval mode a backbone maps each frame on its own (BatchNorm uses running
statistics), so a video's features do not depend on the episode it appears in.
Extracting every video once and running only the head per episode gives the same
logits as running the CNN per episode, thousands of times faster. The chain
extract -> per-branch caches -> score is :func:`score_on_frames`, used by validation
during training, the evaluate stage and ``mkd eval``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mkdcore import speed
from mkdcore.data import VideoKey
from mkdcore.data.device_decode import (
    DecodeSetting,
    EncodedClips,
    EncodedEpisode,
    encode_part,
    resolve_decode,
)
from mkdcore.data.episodes import Episode
from mkdcore.data.features import FeatureStore
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.transforms import ClipTransform
from mkdcore.data.video import read_frames, sample_indices
from mkdcore.stages.dataset import episode_keys


# ----------------------------------------------------------- feature extraction
def chunk_frames(
    layout: DatasetLayout,
    chunk: Sequence[VideoKey],
    modality: str,
    transform: ClipTransform,
    frames: int,
    device: torch.device,
    where: Literal["cpu", "cuda"],
) -> Callable[[], torch.Tensor]:
    """Read the frames of ``chunk`` (test-time indices, the transform's draw) and return
    the step that finishes them: ``(len(chunk) * T, 3, crop, crop)`` on ``device``.

    The reading half runs in a prefetch thread on CUDA. ``where="cpu"`` decodes and
    transforms there (pinned for an asynchronous copy when ``device`` is CUDA);
    ``"cuda"`` reads JPEG bytes there and the returned step decodes the whole chunk in one
    ``decode_jpeg`` call on ``device`` (:mod:`mkdcore.data.device_decode`)."""
    paths = []
    for key in chunk:
        every = layout.frame_paths(modality, key)
        idx = sample_indices(len(every), frames, False, np.random.default_rng(0), name=f"video {key}")
        paths.append([every[i] for i in idx])
    params = [transform.draw(None) for _ in chunk]
    if where == "cuda":
        part = encode_part(paths, params, transform)
        if isinstance(part, EncodedClips) and device.type == "cuda":
            part = part.pin_memory()
        episode = EncodedEpisode(transform, {modality: {"clips": part}})
        return lambda: episode.decode(device)[modality]["clips"].flatten(0, 1)
    x = torch.cat([transform.apply(read_frames(p), *pp) for p, pp in zip(paths, params)])
    if device.type == "cuda":
        x = x.pin_memory()
    return lambda: x.to(device, non_blocking=True)


def _prefetched(make: Callable[[Sequence[VideoKey]], Callable[[], torch.Tensor]], chunks: Sequence[Sequence[VideoKey]],
                ahead: bool) -> Iterator[tuple[Sequence[VideoKey], Callable[[], torch.Tensor]]]:
    """``(chunk, make(chunk))`` in order; with ``ahead`` the next chunk is read in a
    thread while the caller runs the current one on the GPU."""
    if not ahead:
        for chunk in chunks:
            yield chunk, make(chunk)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mkd-extract-read") as pool:
        pending = pool.submit(make, chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            assert pending is not None
            ready = pending.result()
            pending = pool.submit(make, chunks[i + 1]) if i + 1 < len(chunks) else None
            yield chunk, ready


@torch.inference_mode()
def extract_backbone_features(
    backbone: torch.nn.Module,
    layout: DatasetLayout,
    keys: Sequence[VideoKey],
    modality: str,
    transform: ClipTransform,
    frames: int,
    device: torch.device,
    batch_frames: int = 256,
    on_video: Callable[[int], None] | None = None,
    amp: str = "auto",
    decode: DecodeSetting = "auto",
) -> Iterator[tuple[VideoKey, dict[str, np.ndarray]]]:
    """Per-video backbone outputs ``{branch: (T, D)}`` with the eval transform (centre
    crop, test-time frame indices, no augmentation: spec section 8 bug 6).

    ``batch_frames`` frames per backbone call. On CUDA: autocast as training
    (``amp``, :func:`mkdcore.speed.amp_dtype`: bf16 by default), frames decoded on the
    GPU when ``decode`` allows (:func:`mkdcore.data.device_decode.resolve_decode`), and
    the next batch read in a thread while the GPU runs this one. On the CPU: autocast as
    training there (bf16 only where it pays, see :func:`mkdcore.speed.amp_dtype`), read
    then run."""
    backbone.eval()
    device = torch.device(device)
    where = resolve_decode(decode, device)
    dtype = speed.amp_dtype(amp, device, backbone)
    per_batch = max(1, batch_frames // frames)
    chunks = [keys[start : start + per_batch] for start in range(0, len(keys), per_batch)]

    def make(chunk: Sequence[VideoKey]) -> Callable[[], torch.Tensor]:
        return chunk_frames(layout, chunk, modality, transform, frames, device, where)

    for chunk, finish in _prefetched(make, chunks, ahead=device.type == "cuda"):
        x = finish()
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext():
            out = backbone(x)
        feats = {b: v.float().cpu().numpy() for b, v in out.items() if b.startswith("features")}
        for i, key in enumerate(chunk):
            yield key, {b: v[i * frames : (i + 1) * frames] for b, v in feats.items()}
        if on_video:
            on_video(len(chunk))


def branch_caches(features: Iterable[tuple[VideoKey, dict[str, np.ndarray]]]) -> dict[str, dict[VideoKey, np.ndarray]]:
    """``extract_backbone_features`` output regrouped as ``{branch: {key: (T, D)}}``, the
    per-video caches that :func:`branch_logits` scores episodes on."""
    caches: dict[str, dict[VideoKey, np.ndarray]] = {}
    for key, feats in features:
        for branch, arr in feats.items():
            caches.setdefault(branch, {})[key] = arr
    return caches


def stack_features(cache: Mapping[VideoKey, np.ndarray], keys: Sequence[VideoKey], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack([cache[k] for k in keys])).to(device)


@dataclass
class EpisodeScores:
    """Per-episode accuracies plus what per-class accuracy and confusion need."""

    accuracies: list[float]
    true: list[str]
    pred: list[str]

    def summary(self) -> dict[str, Any]:
        acc = np.asarray(self.accuracies, dtype=np.float64)
        n = len(acc)
        classes = sorted(set(self.true))
        idx = {c: i for i, c in enumerate(classes)}
        confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for t, p in zip(self.true, self.pred):
            if p in idx:
                confusion[idx[t], idx[p]] += 1
        per_class = {c: float(confusion[i, i] / max(confusion[i].sum(), 1) * 100) for c, i in idx.items()}
        return {
            "episodes": n,
            "accuracy": float(acc.mean() * 100) if n else float("nan"),
            # 95% interval half-width, percentage points: 1.96 * std / sqrt(N) (population std, as TRX)
            "ci95": float(1.96 * acc.std() / math.sqrt(n) * 100) if n else float("nan"),
            "per_class_accuracy": per_class,  # % of that class's queries classified correctly
            "classes": classes,
            "confusion": confusion.tolist(),
        }


@torch.no_grad()
def score_episodes(
    episodes: Iterable[Episode],
    logits_fn: Callable[[Episode], torch.Tensor],
) -> EpisodeScores:
    """Accuracy of ``logits_fn`` on each episode (labels by class, never by position)."""
    accs: list[float] = []
    true: list[str] = []
    pred: list[str] = []
    for ep in episodes:
        logits = logits_fn(ep).float().cpu()
        p = logits.argmax(1).tolist()
        labels = ep.query_labels
        accs.append(float(np.mean([a == b for a, b in zip(p, labels)])))
        true += [ep.classes[y] for y in labels]
        pred += [ep.classes[y] for y in p]
    return EpisodeScores(accs, true, pred)


def branch_logits(head: torch.nn.Module, ep: Episode, caches: Mapping[str, Mapping[VideoKey, np.ndarray]], device: torch.device) -> torch.Tensor:
    """Sum of the shared head's logits over the backbone branches (Lite-MKD test rule)."""
    labels = torch.tensor(ep.support_labels, device=device)
    total = None
    for cache in caches.values():
        s = stack_features(cache, ep.support, device)
        q = stack_features(cache, ep.query, device)
        logits = head(s, labels, q)["logits"]
        total = logits if total is None else total + logits
    assert total is not None
    return total


def feature_caches_for(store_dirs: Mapping[str, Path], keys: Iterable[VideoKey], frames: int | None = None) -> dict[str, dict[VideoKey, np.ndarray]]:
    """``{store: {video: (T, D) float32}}``; every file is checked to be ``(frames, D)``
    with one ``D`` per store (a wrong one is one line naming the video and file)."""
    stores = {name: FeatureStore(d, frames=frames) for name, d in store_dirs.items()}
    keys = list(keys)
    return {name: {k: s.load(k).astype(np.float32) for k in keys} for name, s in stores.items()}


def score_on_frames(
    model: torch.nn.Module,
    episodes: Sequence[Episode],
    layout: DatasetLayout,
    modality: str,
    transform: ClipTransform,
    frames: int,
    device: torch.device,
    batch_frames: int = 256,
    amp: str = "auto",
    decode: DecodeSetting = "auto",
) -> EpisodeScores:
    """A frame-level few-shot model (``model.backbone`` + ``model.head``) on episodes:
    every video the episodes use through the backbone once (eval mode), then the head
    per episode on the cached features, branch logits summed."""
    model.eval()
    caches = branch_caches(extract_backbone_features(model.backbone, layout, episode_keys(episodes), modality,
                                                     transform, frames, device, batch_frames, amp=amp, decode=decode))
    return score_episodes(episodes, lambda ep: branch_logits(model.head, ep, caches, device))
