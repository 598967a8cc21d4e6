"""The GPU data path: loader workers read JPEG bytes, the main process decodes an episode.

Why: on a GPU, decoding and resizing 400 JPEG frames per 5-way 5-shot episode on a few
CPU cores can take longer than the training step. With ``runtime.decode: cuda`` (or
``auto`` on a CUDA stage where the decoder works) a worker only reads the files, draws
the clip's random parameters (frame indices, crop, flip: the same draws, in the same
order, as the CPU path) and packs the bytes into one buffer per part of the episode; the
DataLoader pins those buffers (``pin_memory=True`` on CUDA), and the main process
decodes all the episode's frames in one batched ``decode_jpeg(..., device="cuda")``
call and applies :meth:`ClipTransform.apply_many` there. Non-JPEG frames (PNG depth or
flow) are decoded and transformed in the worker as before.

The same code runs with ``device="cpu"`` (tests compare it with the CPU path).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mkdcore.data.transforms import ClipTransform
from mkdcore.data.video import (
    decode_frame_bytes,
    decode_jpeg_batch,
    is_jpeg,
    read_frame_bytes,
    stack_frames,
)

DecodeSetting = Literal["auto", "cpu", "cuda"]

#: device string -> None when the device decoder works there, else why not (probed once)
_probes: dict[str, str | None] = {}
_warned: set[str] = set()


@dataclass
class EncodedClips:
    """JPEG bytes of several clips in one flat uint8 buffer, and what decoding them needs.

    One buffer per episode part, not one tensor per frame, because pinning costs a
    page-locked allocation per tensor."""

    data: torch.Tensor  # uint8 (total bytes,)
    offsets: list[int]  # frame f is data[offsets[f] : offsets[f + 1]]
    paths: list[str]  # one per frame, for error messages
    frames: int  # frames per clip (T)
    params: list[tuple[float, float, bool]]  # one (fy, fx, flip) per clip

    @classmethod
    def pack(cls, clips: Sequence[Sequence[torch.Tensor]], paths: Sequence[Sequence[Path]],
             params: Sequence[tuple[float, float, bool]]) -> EncodedClips:
        flat = [d for clip in clips for d in clip]
        offsets = [0]
        for d in flat:
            offsets.append(offsets[-1] + int(d.numel()))
        return cls(torch.cat(flat), offsets, [str(p) for clip in paths for p in clip], len(clips[0]), list(params))

    def pin_memory(self) -> EncodedClips:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        return dataclasses.replace(self, data=self.data.pin_memory())

    def frame_bytes(self) -> list[torch.Tensor]:
        return [self.data[a:b] for a, b in zip(self.offsets, self.offsets[1:])]


Part = EncodedClips | torch.Tensor  # encoded JPEG clips, or frames the worker already transformed


def encode_part(paths: Sequence[Sequence[Path]], params: Sequence[tuple[float, float, bool]], transform: ClipTransform) -> Part:
    """The worker side for some clips of one modality (``paths[clip][frame]``, a draw per
    clip): their JPEG bytes packed for decoding on the device, or, when any frame is not a
    JPEG (PNG depth or flow), the clips decoded and transformed here on the CPU, stacked
    ``(N, T, 3, crop, crop)``."""
    data = [[read_frame_bytes(p) for p in clip] for clip in paths]
    if all(is_jpeg(d) for clip in data for d in clip):
        return EncodedClips.pack(data, paths, params)
    return torch.stack([
        transform.apply(stack_frames([decode_frame_bytes(d, p) for d, p in zip(clip, ps)], ps), *pp)
        for clip, ps, pp in zip(data, paths, params)
    ])


@dataclass
class EncodedEpisode:
    """An episode's frames before decoding: ``parts[modality][side]`` (side: support|query)."""

    transform: ClipTransform
    parts: dict[str, dict[str, Part]]

    def pin_memory(self) -> EncodedEpisode:
        return EncodedEpisode(self.transform, {m: {s: p.pin_memory() for s, p in sides.items()} for m, sides in self.parts.items()})

    def decode(self, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
        """``{modality: {side: float (N, T, 3, crop, crop)}}`` on ``device``; every JPEG
        frame of the episode in one decoder call."""
        encoded = [(m, s, p) for m, sides in self.parts.items() for s, p in sides.items() if isinstance(p, EncodedClips)]
        data = [d for _, _, p in encoded for d in p.frame_bytes()]
        paths = [Path(q) for _, _, p in encoded for q in p.paths]
        decoded = iter(decode_jpeg_batch(data, paths, device))
        out: dict[str, dict[str, torch.Tensor]] = {}
        for m, sides in self.parts.items():
            out[m] = {}
            for s, p in sides.items():
                if not isinstance(p, EncodedClips):
                    out[m][s] = p.to(device, non_blocking=True)
                    continue
                T = p.frames
                frames = [next(decoded) for _ in p.paths]
                clips = [stack_frames(frames[i : i + T], p.paths[i : i + T]) for i in range(0, len(frames), T)]
                out[m][s] = self.transform.apply_many(clips, p.params)
        return out


def decode_item(item: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A loader item with ``encoded`` frames -> the same item with ``frames``,
    ``support_frames`` and ``query_frames`` decoded on ``device``; other items unchanged."""
    if "encoded" not in item:
        return item
    item = dict(item)
    episode: EncodedEpisode = item.pop("encoded")
    frames = episode.decode(device)
    first = next(iter(frames))
    item.update(frames=frames, support_frames=frames[first]["support"], query_frames=frames[first]["query"])
    return item


def probe(device: torch.device) -> str | None:
    """None when ``decode_jpeg(device=...)`` works on ``device``, else the reason (cached)."""
    name = str(device)
    if name not in _probes:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        try:
            data = encode_jpeg(torch.zeros(3, 16, 16, dtype=torch.uint8))
            out = decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
            _probes[name] = None if out[0].shape == (3, 16, 16) else f"decoded shape {tuple(out[0].shape)}"
        except (RuntimeError, TypeError, ValueError) as exc:
            _probes[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _probes[name]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def resolve_decode(setting: DecodeSetting, device: torch.device | str) -> Literal["cpu", "cuda"]:
    """Where a stage on ``device`` decodes frames for ``runtime.decode = setting``.

    ``cpu``: in the loader workers (the path before issue 14). ``auto``: on the GPU when
    the stage runs on CUDA and torchvision's GPU decoder works there (probed once), else
    on the CPU. ``cuda`` on a CPU stage or with a decoder that fails falls back to the
    CPU with one warning line."""
    device = torch.device(device)
    if setting == "cpu":
        return "cpu"
    if device.type != "cuda":
        if setting == "cuda":
            _warn_once(f"runtime.decode: cuda, but the stage runs on {device}: frames are decoded on the CPU")
        return "cpu"
    reason = probe(device)
    if reason is not None:
        _warn_once(f"runtime.decode: GPU JPEG decoding does not work on {device} ({reason}): frames are decoded on the CPU")
        return "cpu"
    return "cuda"

