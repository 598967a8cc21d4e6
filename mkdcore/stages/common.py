"""Pieces the stages share: data access, model building and saving, feature
extraction, and scoring episodes on cached per-video features.

Why cache features for evaluation: in eval mode a backbone maps each frame on its own
(BatchNorm uses running statistics), so a video's features do not depend on the
episode it appears in. Extracting every test video once and running only the head per
episode gives the same logits as running the CNN per episode, thousands of times faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from mkdcore import api
from mkdcore.config import Component, ExperimentConfig
from mkdcore.data import VideoKey
from mkdcore.data.episodes import Episode, EpisodeSampler
from mkdcore.data.features import FeatureStore
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.loader import EpisodeDataset, episode_loader
from mkdcore.data.splits import SplitIndex, load_split
from mkdcore.data.transforms import ClipTransform
from mkdcore.data.video import read_frames, sample_indices
from mkdcore.errors import TrainingError

MODEL_SPEC = "model.json"
WEIGHTS = "model.pt"


# ------------------------------------------------------------------------- data
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
    for which in ("train", "val", "test"):
        keys += split_of(cfg, which).keys()
    return sorted(set(keys))


class OrderedEpisodes:
    """Yields dataset items ``start, start+1, ...`` through a prefetching DataLoader,
    so a resumed run sees exactly the episodes an uninterrupted one would."""

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
        return item


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


# ----------------------------------------------------------------------- models
def resolved(kind: str, component: Component, **known: Any) -> Component:
    """The component with pipeline-known values (widths, frame count, accumulation) filled
    in for the options its plugin accepts; options set in the config win."""
    model = api.get(kind, component.name).options
    fields = model.model_fields if model is not None else {}
    filled = {k: v for k, v in known.items() if k in fields}
    return Component(name=component.name, options={**filled, **component.options})


def build_fewshot(backbone: Component, head: Component, frames: int, pretrained: Path | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A FewShotModel plus the spec that rebuilds it (widths resolved)."""
    from mkdcore.models.fewshot import FewShotModel

    bb_opts = dict(backbone.options)
    if pretrained is not None:
        bb_opts.setdefault("pretrained", str(pretrained))
    bb = api.create("backbone", backbone.name, **bb_opts)
    head_c = resolved("head", head, in_dim=bb.out_dim, seq_len=frames)
    hd = api.create("head", head_c.name, **head_c.options)
    spec = {"type": "fewshot", "backbone": {"name": backbone.name, "options": {k: v for k, v in bb_opts.items() if k != "pretrained"}},
            "head": head_c.model_dump(mode="json"), "frames": frames}
    return FewShotModel(bb, hd), spec


def build_feature_head(head: Component, in_dim: int, frames: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    from mkdcore.models.fewshot import FeatureHeadModel

    head_c = resolved("head", head, in_dim=in_dim, seq_len=frames)
    return FeatureHeadModel(api.create("head", head_c.name, **head_c.options)), {"type": "feature_head", "head": head_c.model_dump(mode="json"), "frames": frames}


def save_model(dir: Path, model: torch.nn.Module, spec: dict[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> None:
    """``model.json`` (how to rebuild it) and ``model.pt`` (its weights), each written
    atomically; temp files of a run killed mid-save are cleaned first."""
    from mkdcore.fileio import atomic_torch_save, atomic_write_json, clean_stale_temps

    dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dir)
    atomic_write_json(dir / MODEL_SPEC, spec, "model spec")
    atomic_torch_save(dir / WEIGHTS, dict(state if state is not None else model.state_dict()), "model weights")


def redo_remedy(stage_dir: Path) -> str:
    """How to recreate what a finished stage wrote: the stage's name comes from its
    manifest (``--force`` takes names), else from the ``stages/<kind>/<key>`` layout."""
    from mkdcore.fileio import CorruptFileError, read_json
    from mkdcore.stages.base import MANIFEST

    stage = None
    try:
        stage = read_json(stage_dir / MANIFEST, "stage manifest").get("stage")
    except CorruptFileError:
        pass
    if not isinstance(stage, str) and stage_dir.parent.parent.name == "stages":
        stage = stage_dir.parent.name
    if isinstance(stage, str):
        return f"delete {stage_dir} or run with --force {stage} to redo it"
    return f"delete {stage_dir} and train it again"


def stage_dir_of(model_dir: Path) -> Path:
    """The stage folder of a saved model (``<stage>/model/``, or a bare model folder)."""
    return model_dir.parent if model_dir.name == "model" else model_dir


def load_model(dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model from ``model.json`` + ``model.pt`` (random init then load).

    A later stage and ``mkd eval`` read what a finished stage wrote: a damaged file is
    one line naming it and how to redo that stage, never a parser's traceback."""
    from mkdcore.fileio import CorruptFileError, first_line, read_json, read_torch

    remedy = redo_remedy(stage_dir_of(dir))
    spec = read_json(dir / MODEL_SPEC, "model spec", remedy)
    try:
        kind = spec["type"]
        if kind == "fewshot":
            model, _ = build_fewshot(Component(**spec["backbone"]), Component(**spec["head"]), spec["frames"])
        elif kind == "feature_head":
            model, _ = build_feature_head(Component(**spec["head"]), spec["head"]["options"]["in_dim"], spec["frames"])
        elif kind == "fusion_teacher":
            from mkdcore.stages.fuse import build_fusion_teacher

            model, _ = build_fusion_teacher(spec)
        else:
            raise TrainingError(f"{dir / MODEL_SPEC}: unknown model type {kind!r}; {remedy}")
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"model spec {dir / MODEL_SPEC} is corrupt ({first_line(exc)}); {remedy}") from None
    state = read_torch(dir / WEIGHTS, "model weights", remedy)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"model weights {dir / WEIGHTS} are corrupt (they do not fit {MODEL_SPEC}: "
                               f"{first_line(exc)}); {remedy}") from None
    return model.to(device).eval(), spec


def best_state(stage_dir: Path) -> dict[str, torch.Tensor]:
    """Weights selected on the val split (best.pt), else the last checkpoint."""
    from mkdcore.fileio import CorruptFileError, read_torch

    ckpt = stage_dir / "checkpoints"
    for name in ("best.pt", "last.pt"):
        path = ckpt / name
        if path.exists():
            remedy = redo_remedy(stage_dir)
            state = read_torch(path, "checkpoint", remedy)
            if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                raise CorruptFileError(f"checkpoint {path} is corrupt (no model state); {remedy}")
            return state["model"]
    raise TrainingError(f"{stage_dir}: no checkpoint to select a model from")


# ----------------------------------------------------------- feature extraction
@torch.no_grad()
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
) -> Iterator[tuple[VideoKey, dict[str, np.ndarray]]]:
    """Per-video backbone outputs ``{branch: (T, D)}`` with the eval transform (centre
    crop, test-time frame indices, no augmentation: spec section 8 bug 6)."""
    backbone.eval()
    per_batch = max(1, batch_frames // frames)
    for start in range(0, len(keys), per_batch):
        chunk = keys[start : start + per_batch]
        clips = []
        for key in chunk:
            paths = layout.frame_paths(modality, key)
            idx = sample_indices(len(paths), frames, False, np.random.default_rng(0), name=f"video {key}")
            clips.append(transform({modality: read_frames([paths[i] for i in idx])})[modality])
        x = torch.cat(clips).to(device)
        out = backbone(x)
        for i, key in enumerate(chunk):
            yield key, {b: v[i * frames : (i + 1) * frames].float().cpu().numpy() for b, v in out.items() if b.startswith("features")}
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


# ------------------------------------------------------------------- episodes
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


def val_episodes(cfg: ExperimentConfig, n: int, query: int | None = None, which: str = "val", seed: int | None = None) -> list[Episode]:
    ep = cfg.episodes
    sampler = EpisodeSampler(split_of(cfg, which), ep.way, ep.shot, query or ep.query_test, seed=cfg.evaluation.seed if seed is None else seed)
    return sampler.take(n)


def feature_caches_for(store_dirs: Mapping[str, Path], keys: Iterable[VideoKey], frames: int | None = None) -> dict[str, dict[VideoKey, np.ndarray]]:
    """``{store: {video: (T, D) float32}}``; every file is checked to be ``(frames, D)``
    with one ``D`` per store (a wrong one is one line naming the video and file)."""
    stores = {name: FeatureStore(d, frames=frames) for name, d in store_dirs.items()}
    keys = list(keys)
    return {name: {k: s.load(k).astype(np.float32) for k in keys} for name, s in stores.items()}


def episode_keys(episodes: Iterable[Episode]) -> list[VideoKey]:
    keys: set[VideoKey] = set()
    for ep in episodes:
        keys.update(ep.support)
        keys.update(ep.query)
    return sorted(keys)
