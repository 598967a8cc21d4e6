"""Teacher features stored as one ``.npy`` per video, read and written by key.

Accepts both spellings of the seed: ``<dir>/<class>/<video>.npy`` and
``<dir>/<class>/<video>/<file>.npy`` (the first sorted file, as the original loader).
Features are looked up by (class, video), never by position (spec section 8, bug 4),
and a missing or mis-shaped file is an error naming the video.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mkdcore.data import VideoKey
from mkdcore.errors import DataError
from mkdcore.fileio import atomic_save


def npy_shape(path: Path) -> tuple[int, ...]:
    """The array shape from a ``.npy`` header, without reading the data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape)


class FeatureStore:
    """Per-video features ``(T, D)`` under ``dir``; ``frames``/``dim`` are checked when given."""

    def __init__(self, dir: str | os.PathLike, frames: int | None = None, dim: int | None = None) -> None:
        self.dir = Path(dir)
        self.frames, self.dim = frames, dim

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.dir)!r}, frames={self.frames}, dim={self.dim})"

    def path(self, key: VideoKey) -> Path:
        """The existing file for ``key`` (``<video>.npy`` first), else where :meth:`save` writes."""
        flat = self.dir / key.class_name / f"{key.video}.npy"
        if flat.is_file():
            return flat
        folder = self.dir / key.class_name / key.video
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and not p.name.startswith("."))
            if files:
                return files[0]
        return flat

    def check_shape(self, key: VideoKey, shape: tuple[int, ...], path: Path) -> tuple[int, int]:
        """``(T, D)`` of a stored shape; ``DataError`` naming the video when it does not fit."""
        s = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
        want = f"({self.frames or 'T'}, {self.dim or 'D'})"
        if len(s) != 2 or (self.frames is not None and s[0] != self.frames) or (self.dim is not None and s[1] != self.dim):
            raise DataError(f"feature of video {key} has shape {tuple(shape)}, expected {want}: {path}")
        return int(s[0]), int(s[1])

    def load(self, key: VideoKey) -> np.ndarray:
        """The ``(T, D)`` feature of ``key`` (a stored ``(1, T, D)`` is squeezed)."""
        path = self.path(key)
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"no feature for video {key} in {self.dir}") from None
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"feature of video {key} is unreadable ({exc}): {path}") from None
        frames, dim = self.check_shape(key, arr.shape, path)
        # every feature of a store has one (T, D): the first one read fixes what was not given
        self.frames = frames if self.frames is None else self.frames
        self.dim = dim if self.dim is None else self.dim
        return arr.reshape(arr.shape[-2:]) if arr.ndim == 3 else arr

    def exists(self, key: VideoKey) -> bool:
        return self.path(key).is_file()

    def save(self, key: VideoKey, array: np.ndarray) -> Path:
        """Write ``<class>/<video>.npy`` atomically (:mod:`mkdcore.fileio`: a full disk is one
        line and leaves no temp file)."""
        array = np.asarray(array)
        self.check_shape(key, array.shape, self.dir / key.class_name / f"{key.video}.npy")
        if array.ndim == 3:
            array = array.reshape(array.shape[-2:])
        path = self.dir / key.class_name / f"{key.video}.npy"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)

        atomic_save(path, write, f"feature of video {key}")
        return path
