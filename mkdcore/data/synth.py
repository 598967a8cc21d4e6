"""The procedurally rendered action dataset (``mkd data synth``, dataset plugin ``synthetic``).

Writes the seed layout::

    ROOT/rgb_l8/<class>/<video>/00000001.jpg ... (frames, 8-digit, 1-based)
    ROOT/depth_l8/...      same names: depth, jet-coloured (near red, far blue)
    ROOT/skeleton_l8/...   same names: joints and limbs on black
    ROOT/rgb_next_l8/...   same names: the original video's frame after each sampled frame
                           (``next_frames``, default on; what flow-like modalities pair with)
    ROOT/splits/synth/{train,val,test}list03.txt   "<class>/<video>" lines
    ROOT/synth.json        parameters, classes and the split assignment

Guarantees:

* **Deterministic.** Video ``i`` of action ``a`` is rendered from its own generator seeded
  by ``(seed, index of a in ACTIONS, i)``, so the files are byte-identical across runs and
  worker counts, and a video does not change when ``--classes`` grows. JPEGs are written
  by PIL at a fixed quality without metadata.
* **Atomic and resumable.** Each modality folder of a video is written into
  ``ROOT/.synth_tmp/`` and renamed into place (RGB last), so a killed run never leaves a
  half-written video that looks finished; a rerun renders only the missing folders.
  ``synth.json`` and the split files are written first, so a different set of parameters
  pointed at the same root is refused instead of mixed in.

Next frames: the sampled frames are a subsample of a denser "original" video; with
``next_frames`` the frame after each sampled frame in that video is written too
(``rgb_next_l8``, the folder :func:`mkdcore.data.derive.read_clip` gives to a modality as
``Clip.next_frames``), so flow is computed between true neighbours, as on real datasets
that ship them. The sampled frames are byte-identical with or without them, so a dataset
rendered before the option existed (or with it off) gets them added by a rerun with it on.

Split rule: the C classes are shuffled with the seed, then train takes ``ceil(C/2)``,
test ``ceil((C - train)/2)`` and val the rest (about 50/25/25%; 20 classes -> 10/5/5,
24 -> 12/6/6). Classes are disjoint across splits, as few-shot protocols require.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mkdcore.data.synth_actions import ACTION_INDEX, ACTIONS
from mkdcore.errors import ConfigError, DataError
from mkdcore.fileio import CorruptFileError, atomic_write_text, read_json
from mkdcore.parallel import chunks, pid_alive, worker_context

MODALITIES: tuple[str, ...] = ("depth", "skeleton", "rgb")  # rgb last: it is what readers see first
#: the folder of next original frames (:data:`mkdcore.data.derive.NEXT_FRAMES_MODALITY`)
NEXT_FRAMES = "rgb_next"
SPLIT_NAME = "synth"
SPLIT_ID = "03"
JPEG_QUALITY = 90
MIN_CLASSES = 3
MIN_SIZE, MAX_SIZE = 16, 1024
MANIFEST = "synth.json"
TMP_DIR = ".synth_tmp"
FORMAT_VERSION = 1

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SynthParams:
    """What determines the rendered files (workers do not)."""

    classes: int = 20
    videos_per_class: int = 10
    size: int = 112
    seed: int = 0
    frames: int = 8
    #: also write ``rgb_next_l8`` (the original frame after each sampled frame)
    next_frames: bool = True

    @property
    def modalities(self) -> tuple[str, ...]:
        """The folders rendered per video, in writing order (rgb last)."""
        return (*MODALITIES[:-1], NEXT_FRAMES, MODALITIES[-1]) if self.next_frames else MODALITIES

    def validate(self) -> None:
        """One-line errors naming the bad value and the allowed range."""
        if not MIN_CLASSES <= self.classes <= len(ACTIONS):
            raise ConfigError(
                f"classes={self.classes} is out of range: the synthetic renderer has {len(ACTIONS)} actions "
                f"(use {MIN_CLASSES} to {len(ACTIONS)})"
            )
        if self.videos_per_class < 1:
            raise ConfigError(f"videos_per_class={self.videos_per_class} must be at least 1")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ConfigError(f"size={self.size} is out of range (use {MIN_SIZE} to {MAX_SIZE} px)")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        if not 2 <= self.frames <= 1000:
            raise ConfigError(f"frames={self.frames} is out of range (use 2 to 1000; temporal order needs 2+)")


def class_names(classes: int) -> list[str]:
    """The first ``classes`` actions (the order of :data:`ACTIONS`)."""
    return [spec.name for spec in ACTIONS[:classes]]


def video_name(index: int) -> str:
    return f"v{index:03d}"


def frame_name(index: int) -> str:
    """1-based, 8 digits, as the seed layout has them."""
    return f"{index + 1:08d}.jpg"


def split_classes(names: list[str], seed: int) -> dict[str, list[str]]:
    """Disjoint train/val/test class sets (sorted), by the rule in the module docstring."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5917])).permutation(len(names))
    shuffled = [names[i] for i in order]
    n_train = math.ceil(len(names) / 2)
    n_test = math.ceil((len(names) - n_train) / 2)
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train + n_test :]),
        "test": sorted(shuffled[n_train : n_train + n_test]),
    }


def manifest(params: SynthParams) -> dict:
    names = class_names(params.classes)
    return {
        "generator": "mkd data synth",
        "format_version": FORMAT_VERSION,
        "params": asdict(params),
        "classes": names,
        "videos": [video_name(i) for i in range(params.videos_per_class)],
        "modalities": [f"{m}_l8" for m in ("rgb", "depth", "skeleton")],
        "next_frames": f"{NEXT_FRAMES}_l8" if params.next_frames else None,
        "jpeg_quality": JPEG_QUALITY,
        "split": {"name": SPLIT_NAME, "id": SPLIT_ID, "rule": "shuffle(seed); train ceil(C/2), test ceil(rest/2), val rest"},
        "splits": split_classes(names, params.seed),
        "reverse_pairs": {s.name: s.reverse_of for s in ACTIONS[: params.classes] if s.reverse_of in names},
        "mirror_pairs": {s.name: s.mirror_of for s in ACTIONS[: params.classes] if s.mirror_of in names},
    }


def _write_text(path: Path, text: str) -> None:
    """Atomic: readers see the old file or the whole new one."""
    atomic_write_text(path, text)


def _describe(params: object) -> str:
    if not isinstance(params, dict):
        return "unknown parameters"
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def _prepare_root(root: Path, params: SynthParams) -> dict:
    """Write (or check) ``synth.json`` and the split files before any video."""
    meta = manifest(params)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    path = root / MANIFEST
    if path.exists():
        old = read_json(path, "synthetic dataset manifest", "delete it or choose another --out")
        old_params = old.get("params")
        if isinstance(old_params, dict):  # rendered before next frames existed: it has none
            old_params = {**old_params, "next_frames": old_params.get("next_frames", False)}
        adds_next = params.next_frames and old_params == {**meta["params"], "next_frames": False}
        if (old_params != meta["params"] and not adds_next) or old.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{path}: {root} was rendered with {_describe(old.get('params'))}, "
                f"not {_describe(meta['params'])}; choose another --out or delete the folder"
            )
    elif root.exists() and any(p.name != TMP_DIR for p in root.iterdir()):
        raise DataError(f"{root} exists, is not empty and holds no {MANIFEST}; choose an empty or new folder")
    _write_text(path, text)
    for which, names in meta["splits"].items():
        lines = [f"{c}/{video_name(i)}\n" for c in names for i in range(params.videos_per_class)]
        _write_text(root / "splits" / SPLIT_NAME / f"{which}list{SPLIT_ID}.txt", "".join(lines))
    return meta


def _video_dir(root: Path, modality: str, class_name: str, video: str) -> Path:
    return root / f"{modality}_l8" / class_name / video


def _missing(root: Path, class_name: str, video: str, modalities: tuple[str, ...] = MODALITIES) -> list[str]:
    return [m for m in modalities if not _video_dir(root, m, class_name, video).is_dir()]


def video_rng(seed: int, class_name: str, video_index: int) -> np.random.Generator:
    """The generator of one video: independent of the class count and of other videos."""
    return np.random.default_rng(np.random.SeedSequence([seed, ACTION_INDEX[class_name], video_index]))


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _clean_stale_tmp(root: Path) -> None:
    """Remove temp folders left by killed runs on this host (their process is gone)."""
    tmp = root / TMP_DIR
    if not tmp.is_dir():
        return
    for entry in tmp.iterdir():
        host, _, rest = entry.name.partition("-")
        pid = rest.partition("-")[0]
        if host != _host() or not pid.isdigit():
            continue
        if not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def render_one(root: Path, class_name: str, video_index: int, size: int, frames: int, seed: int, next_frames: bool = True) -> bool:
    """Render one video's missing modality folders (``rgb_next`` too with ``next_frames``);
    False if it was already complete."""
    from mkdcore.data.synth_render import (
        render_video,  # cv2 only where videos are drawn
    )

    video = video_name(video_index)
    missing = _missing(root, class_name, video, SynthParams(next_frames=next_frames).modalities)
    if not missing:
        return False
    spec = ACTIONS[ACTION_INDEX[class_name]]
    out = render_video(spec.fn, video_rng(seed, class_name, video_index), size, frames, next_frames=NEXT_FRAMES in missing)
    for modality in missing:  # SynthParams.modalities order: rgb last
        tmp = root / TMP_DIR / f"{_host()}-{os.getpid()}-{modality}-{class_name}-{video}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k, image in enumerate(getattr(out, modality)):
            Image.fromarray(image).save(tmp / frame_name(k), "JPEG", quality=JPEG_QUALITY)
        final = _video_dir(root, modality, class_name, video)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent run that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _render_chunk(args: tuple[Path, list[tuple[str, int]], int, int, int, bool]) -> int:
    root, jobs, size, frames, seed, next_frames = args
    import cv2

    cv2.setNumThreads(1)
    return sum(render_one(root, c, i, size, frames, seed, next_frames) for c, i in jobs)


def dataset_complete(root: Path | str, params: SynthParams) -> bool:
    """True when ``root`` holds every video of ``params`` in every modality."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        return False
    try:
        if read_json(path, "synthetic dataset manifest").get("params") != asdict(params):
            return False
    except CorruptFileError:
        return False
    return all(
        not _missing(root, c, video_name(i), params.modalities)
        for c in class_names(params.classes)
        for i in range(params.videos_per_class)
    )


def render_dataset(
    root: Path | str,
    classes: int = 20,
    videos_per_class: int = 10,
    size: int = 112,
    seed: int = 0,
    frames: int = 8,
    workers: int = 1,
    progress: Progress | None = None,
    next_frames: bool = True,
) -> Path:
    """Render (or finish rendering) the synthetic dataset into ``root``; returns ``root``.

    ``progress(done, total)`` is called as videos finish (``done`` counts skipped ones).
    ``next_frames`` also writes ``rgb_next_l8`` (see the module docstring); turning it on
    for a dataset rendered without it adds the folder and changes nothing else.
    """
    params = SynthParams(classes, videos_per_class, size, seed, frames, next_frames)
    params.validate()
    if workers < 1:
        raise ConfigError(f"workers={workers} must be at least 1")
    root = Path(root)
    try:
        _prepare_root(root, params)
    except OSError as exc:
        raise DataError(f"{root}: cannot write the dataset here ({exc.strerror or exc})") from None
    _clean_stale_tmp(root)
    jobs = [(c, i) for c in class_names(classes) for i in range(videos_per_class)]
    total = len(jobs)
    todo = [job for job in jobs if _missing(root, job[0], video_name(job[1]), params.modalities)]
    done = total - len(todo)
    if progress:
        progress(done, total)
    chunk = 4
    if workers == 1 or len(todo) <= chunk:
        for c, i in todo:
            render_one(root, c, i, size, frames, seed, next_frames)
            done += 1
            if progress:
                progress(done, total)
    else:
        tasks = [(root, part, size, frames, seed, next_frames) for part in chunks(todo, chunk)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(["numpy", "cv2", "mkdcore.data.synth"])) as pool:
            for part, _ in zip(tasks, pool.map(_render_chunk, tasks)):
                done += len(part[1])
                if progress:
                    progress(done, total)
    tmp = root / TMP_DIR
    if tmp.is_dir() and not any(tmp.iterdir()):
        tmp.rmdir()
    return root
