"""Frame decoding and temporal sampling (spec 2.3).

JPEGs go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo, no PIL round trip);
anything else (PNG from derived modalities) falls back to PIL. Decoding errors name
the file, since a broken frame must never be silently replaced. Reading and decoding
are separate steps (:func:`read_frame_bytes`, :func:`decode_frame_bytes`,
:func:`decode_jpeg_batch`) so that the GPU data path can read bytes in loader workers
and decode a whole episode in one call on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mkdcore.errors import DataError

# ``torchvision.io`` is imported by the functions that decode, not here: importing
# torchvision costs ~1.7 s of CPU, which stages that never decode a frame (fuse,
# mm_features, report: they import this module through the scoring helpers) should not pay.

JPEG_MAGIC = b"\xff\xd8"


class FrameError(DataError):
    """A frame file that cannot be read or decoded; ``reason`` without the path, for lists."""

    def __init__(self, path: Path, reason: str, verb: str = "decode") -> None:
        super().__init__(f"cannot {verb} frame {path}: {reason}")
        self.path, self.reason = Path(path), reason


def _torchvision_reason(exc: RuntimeError) -> str:
    """torchvision prefixes its decoder messages with a C++ source location
    (``decode_jpeg, /.../decode_jpeg.cpp:171, Image is incomplete or truncated``): keep the reason."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return first.rsplit(", ", 1)[-1] if ".cpp:" in first else first


def read_frame_bytes(path: Path) -> torch.Tensor:
    """The encoded file as a uint8 tensor ``(nbytes,)``; ``FrameError`` when it cannot be
    read or is empty. The GPU data path reads frames with this in the loader workers and
    decodes them in batches on the device (:func:`decode_jpeg_batch`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FrameError(path, exc.strerror or str(exc), "read") from None
    if not data:
        raise FrameError(path, "empty file")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def is_jpeg(data: torch.Tensor) -> bool:
    """True when the encoded bytes start with the JPEG marker (derived modalities may be PNG)."""
    return data.numel() >= 2 and bytes(data[:2].tolist()) == JPEG_MAGIC


def decode_frame_bytes(data: torch.Tensor, path: Path) -> torch.Tensor:
    """Encoded bytes of the frame ``path`` -> uint8 ``(3, H, W)`` on the CPU; errors name ``path``."""
    if is_jpeg(data):
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError as exc:
            raise FrameError(path, _torchvision_reason(exc)) from None
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            arr = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise FrameError(path, "not a JPEG or PNG image") from None
    except (OSError, SyntaxError) as exc:
        raise FrameError(path, str(exc)) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def decode_frame(path: Path) -> torch.Tensor:
    """One frame as uint8 ``(3, H, W)``; ``DataError`` naming the file and why it cannot be read.

    This is the decoder every stage reads frames with, so the data stage's up-front check
    (:mod:`mkdcore.data.verify`) rejects exactly the frames that would fail later."""
    return decode_frame_bytes(read_frame_bytes(path), path)


def decode_jpeg_batch(data: Sequence[torch.Tensor], paths: Sequence[Path], device: torch.device) -> list[torch.Tensor]:
    """Many JPEG frames decoded in ONE ``decode_jpeg`` call on ``device`` (nvJPEG's batched
    decoder on CUDA: one launch for an episode instead of one per frame); uint8 ``(3, H, W)``
    each, on ``device``.

    A batch that fails is decoded again frame by frame on the CPU, so a broken file gives
    the same one-line ``FrameError`` naming it as the CPU path; if every frame decodes on
    the CPU (a failure of the device decoder only), the CPU frames are used."""
    if not data:
        return []
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        frames = [decode_frame_bytes(d, p) for d, p in zip(data, paths)]
        return [f.to(device) for f in frames]


def stack_frames(frames: Sequence[torch.Tensor], paths: Sequence[Path]) -> torch.Tensor:
    """Decoded frames of one clip -> ``(T, 3, H, W)``; all must share one size."""
    shape = frames[0].shape
    for p, f in zip(paths, frames):
        if f.shape != shape:
            raise DataError(f"frame {p} is {tuple(f.shape[1:])}, other frames of the video are {tuple(shape[1:])}")
    return torch.stack(list(frames))


def read_frames(paths: Sequence[Path]) -> torch.Tensor:
    """Decode frames to a uint8 tensor ``(T, 3, H, W)``; all frames must share one size."""
    if not paths:
        raise DataError("read_frames: no frame paths given")
    return stack_frames([decode_frame(p) for p in paths], paths)


def sample_indices(n: int, T: int, train: bool, rng: np.random.Generator, name: str = "video") -> list[int]:
    """``T`` frame indices out of ``n`` as the original ``get_seq`` (spec 2.3).

    ``n == T``: all frames in order. ``n > T``: training jitters both ends by up to
    5 frames, testing uses the fixed ends (1, n-2); then ``T`` evenly spaced indices.
    ``n < T`` is an error (the original silently dropped such videos).
    """
    if n < T:
        raise DataError(f"{name} has {n} frames, needs at least {T}")
    if n == T:
        return list(range(T))
    if train:
        pad = int(min(5, (n - T) / 2))
        if pad < 1:
            start, end = 0, n - 1
        else:
            start = int(rng.integers(0, pad + 1))
            end = int(rng.integers(n - 1 - pad, n))
    else:
        start, end = 1, n - 2
    if end - start < T:
        start, end = 0, n - 1
    return [int(i) for i in np.floor(np.linspace(start, end, T))]
