"""Built-in plugin `modality_flow`: dense optical flow stored as images in ``flow_l8``.

Frame pairs. Each of the T stored images is the flow *from* sampled frame t *to* the
next frame: the original video's next frame when the dataset has it
(``<root>/rgb_next_l8/<class>/<video>/`` with the RGB file names; option
``pairs=neighbours`` requires it), else the next *sampled* frame t+1 (a larger step: 8
frames span the whole video). The last frame has no next sampled frame, so it reuses the
pair (T-2 -> T-1). With ``pairs=auto`` (default) neighbours are used when present.

Magnitude normalisation (per clip, so that one video's frames stay comparable):
``normalize=clip`` divides every flow of the video by the largest magnitude in the video
(at least ``min_scale`` px, so a static video stays pale instead of amplified noise);
``normalize=fixed`` divides by ``max_flow`` px for every video (magnitudes comparable
across videos; exactly decodable to pixels with
:func:`mkdcore.modalities.flow_encoding.decode_raw2` / ``decode_wheel``).

Encodings (:mod:`mkdcore.modalities.flow_encoding`): ``wheel`` = Middlebury colour
wheel (hue = direction, saturation = magnitude; the default, as the original teacher saw
flow) and ``raw2`` = dx, dy around grey 128 plus magnitude, decoded for training to
``(dx / scale, dy / scale, |flow| / scale)`` in [-1, 1], [-1, 1], [0, 1].

Methods: OpenCV on CPU (``dis`` default with ``preset`` medium/fast/ultrafast,
``farneback``, ``tvl1`` with opencv-contrib), ``raft`` (torchvision RAFT, a local
``weights`` file, batched on the chosen device) or ``flownet2`` (the paper's expert
network, :mod:`mkdcore.modalities.flownet2`: NVIDIA's converted FlowNet2 weights from a
local ``weights`` file, any of the 7 released files, pure PyTorch, batched on the
chosen device).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.base import Clip, Modality
from mkdcore.modalities.flow_encoding import clip_scale, encode_raw2, encode_wheel
from mkdcore.modalities.optical_flow import OpenCVFlow, RaftFlow

if TYPE_CHECKING:
    import torch


class FlowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["dis", "farneback", "tvl1", "raft", "flownet2"] = Field("dis", description="flow algorithm")
    preset: Literal["medium", "fast", "ultrafast"] = Field("medium", description="DIS preset (2.9 / 0.75 / 0.26 ms a 224 px pair)")
    encoding: Literal["wheel", "raw2"] = Field("wheel", description="how flow is stored as an image")
    normalize: Literal["clip", "fixed"] = Field("clip", description="divide by the clip's max magnitude or by max_flow")
    max_flow: float = Field(20.0, gt=0, description="px mapped to full magnitude when normalize=fixed")
    min_scale: float = Field(1.0, gt=0, description="px; lower bound of the clip scale when normalize=clip")
    pairs: Literal["auto", "sampled", "neighbours"] = Field("auto", description="next frame: original neighbour or next sampled frame")
    raft_model: Literal["raft_small", "raft_large"] = "raft_small"
    weights: Path | None = Field(None, description="local RAFT state dict (method=raft) or official FlowNet2 checkpoint (method=flownet2)")
    iters: int = Field(12, ge=1, description="RAFT refinement iterations")
    batch_size: int = Field(16, ge=1, description="RAFT / FlowNet2 frame pairs per forward pass")
    jpeg_quality: int = Field(95, ge=1, le=100)


class Flow(Modality):
    """Dense optical flow (OpenCV DIS/Farneback/TV-L1 on CPU, RAFT or FlowNet2), colour-wheel or raw images."""

    name = "flow"

    def __init__(self, **options: Any) -> None:
        self.options = FlowOptions(**options)
        o = self.options
        self.channels = ("wheel_r", "wheel_g", "wheel_b") if o.encoding == "wheel" else ("dx", "dy", "magnitude")
        self.needs_neighbours = o.pairs == "neighbours"
        self.uses_device = o.method in ("raft", "flownet2")
        self.jpeg_quality = o.jpeg_quality
        if o.method == "raft":
            self.estimator: Any = RaftFlow(o.raft_model, o.weights, o.iters, o.batch_size)
        elif o.method == "flownet2":
            # torch: only this method needs it here
            from mkdcore.modalities.flownet2 import FlowNet2Flow

            self.estimator = FlowNet2Flow(o.weights, o.batch_size)
        else:
            self.estimator = OpenCVFlow(o.method, o.preset)

    def setup(self, device: str = "cpu") -> None:
        if self.uses_device:
            self.estimator.setup(device)

    def frame_pairs(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        """(from, to) stacks, one pair per stored image (see the module docstring)."""
        use_next = clip.next_frames is not None and self.options.pairs != "sampled"
        if use_next:
            return clip.frames, clip.next_frames  # type: ignore[return-value]
        t = clip.frames.shape[0]
        if t == 1:
            return clip.frames, clip.frames
        src = np.concatenate([np.arange(t - 1), [t - 2]])
        return clip.frames[src], clip.frames[src + 1]

    def encode(self, flows: np.ndarray) -> list[np.ndarray]:
        """Flow of one clip ``(T, H, W, 2)`` px -> T images, with the clip-level scale."""
        o = self.options
        scale = clip_scale(flows, o.normalize, o.max_flow, o.min_scale)
        enc = encode_wheel if o.encoding == "wheel" else encode_raw2
        return [enc(f, scale) for f in flows]

    def derive(self, clip: Clip) -> list[np.ndarray]:
        src, dst = self.frame_pairs(clip)
        return self.encode(self.estimator(src, dst))

    def derive_batch(self, clips: Sequence[Clip]) -> list[list[np.ndarray]]:
        if not self.uses_device:
            return [self.derive(c) for c in clips]
        # one network pass over the pairs of every clip of the same frame size
        out: list[list[np.ndarray] | None] = [None] * len(clips)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(clips):
            by_size.setdefault(c.frames.shape[1:], []).append(i)
        for idxs in by_size.values():
            pairs = [self.frame_pairs(clips[i]) for i in idxs]
            flows = self.estimator(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))
            start = 0
            for i, (src, _) in zip(idxs, pairs):
                out[i] = self.encode(flows[start : start + len(src)])
                start += len(src)
        return out  # type: ignore[return-value]

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        if self.options.encoding == "wheel":
            return super().decode(images)
        x = images.float()
        return raw2_to_training(x)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.options.model_dump(mode="json")}


def raw2_to_training(x: torch.Tensor) -> torch.Tensor:
    """raw2 uint8-valued float ``(T, 3, H, W)`` -> ``(dx, dy)/scale`` in [-1, 1] and magnitude in [0, 1]."""
    import torch

    return torch.cat([(x[:, :2] - 128.0) / 127.0, x[:, 2:] / 255.0], dim=1)


@hookimpl
def register_modalities(register):
    register("flow", Flow, options=FlowOptions, description=Flow.__doc__)
