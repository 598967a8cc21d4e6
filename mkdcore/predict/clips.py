"""One clip as the data pipeline would see it, and the clips of a support folder.

A video file goes the way ``mkd data import`` takes it: ``T`` frames at
``int(linspace(0, n-1, T))`` of the decoded stream (a short video repeats frames, as the
importer does), kept in memory instead of written as JPEGs. A frame folder goes the way
the loader reads an imported video: test-time :func:`~mkdcore.data.video.sample_indices`
(fixed ends, ``T`` evenly spaced frames). Either gives uint8 ``(T, 3, H, W)``; the
spatial transform (resize, centre crop, normalisation) is the model's, applied later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# the importer's own decoding, so a clip given here is the clip `mkd data import` would write
from mkdcore.data.importer import VIDEO_SUFFIXES, _count_frames, _decode_selected, uniform_indices
from mkdcore.data.layout import is_frame_name, list_dirs, list_frames
from mkdcore.data.video import read_frames, sample_indices
from mkdcore.errors import DataError
from mkdcore.names import class_name


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def read_clip(path: Path, frames: int) -> torch.Tensor:
    """uint8 ``(frames, 3, H, W)`` of a video file or a frame folder; ``DataError``
    naming the clip when it cannot be read or is too short."""
    path = Path(path)
    if path.is_dir():
        paths = list_frames(path)
        if not paths:
            raise DataError(f"clip {path} holds no frames (.jpg, .jpeg, .png)")
        index = sample_indices(len(paths), frames, train=False, rng=np.random.default_rng(0), name=f"clip {path}")
        return read_frames([paths[i] for i in index])
    if not path.exists():
        raise DataError(f"clip {path} does not exist")
    if not is_video_file(path):
        raise DataError(f"clip {path} is neither a video file ({', '.join(VIDEO_SUFFIXES)}) nor a frame folder")
    return _read_video(path, frames)


def _read_video(path: Path, frames: int) -> torch.Tensor:
    """The importer's frames of a video file (its decoder, its count correction when the
    container's frame count is wrong), as a tensor instead of JPEG files."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"cannot decode video {path}: no video stream")
            n = int(container.streams.video[0].frames or 0)
        n = n or _count_frames(path)
        images, decoded = _decode_selected(path, uniform_indices(max(n, 1), frames))
        if decoded != n:  # the container's count was wrong: choose again with the true one
            n = decoded
            if n:
                images, _ = _decode_selected(path, uniform_indices(n, frames))
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode video {path}: {exc}") from None
    if n < 1:
        raise DataError(f"cannot decode video {path}: no decodable frames")
    wanted = uniform_indices(n, frames)
    if any(i not in images for i in wanted):
        raise DataError(f"cannot decode video {path}: only {len(images)} of the sampled frames decoded")
    arrays = [np.asarray(images[i].convert("RGB")) for i in wanted]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class SupportClass:
    """One class of a support folder: its name and its example clips (sorted)."""

    name: str
    clips: list[Path]


def scan_support(root: Path) -> list[SupportClass]:
    """``root/<class>/<clip>`` where a clip is a video file or a frame folder.

    Refused, one line each: a missing folder, fewer than two classes (a one-class
    "few-shot" answer is always that class), a class without clips, loose frames or
    videos where a class folder was expected, an unsafe class name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"support folder {root} does not exist (or is not a folder)")
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and (is_video_file(p) or is_frame_name(p.name)))
    if loose:
        raise DataError(f"support folder {root} holds {loose[0]!r} directly: put each example clip in a folder "
                        "named after its class (DIR/<class>/<clip>)")
    classes = [SupportClass(class_name(name), _class_clips(root / name)) for name in list_dirs(root)]
    if len(classes) < 2:
        found = f"only {classes[0].name!r}" if classes else "none"
        raise DataError(f"support folder {root} needs at least 2 class folders, found {found}")
    return classes


def _class_clips(folder: Path) -> list[Path]:
    clips = [folder / n for n in list_dirs(folder)]
    clips += sorted(p for p in folder.iterdir() if p.is_file() and is_video_file(p))
    if not clips:
        if list_frames(folder):
            raise DataError(f"class folder {folder} holds frames directly: put each example's frames in a "
                            f"folder of its own ({folder}/<clip>/00000001.jpg ...)")
        raise DataError(f"class folder {folder} has no example clips (video files {', '.join(VIDEO_SUFFIXES)} "
                        "or frame folders)")
    return sorted(clips)
