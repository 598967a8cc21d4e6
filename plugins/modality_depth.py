"""Built-in plugin `modality_depth`: monocular depth stored colour-mapped in ``depth_l8``.

Backends:

* ``hf`` (default): a ``transformers`` depth-estimation checkpoint from a local folder
  (option ``checkpoint``; e.g. Depth Anything V2 Small, DPT), never downloaded, batched
  on the chosen device (``--device cuda``).
* ``existing``: the dataset already has ``depth_l8`` (e.g. the synthetic dataset's ground
  truth); derive only verifies that every video has every frame and that they decode.

Storage: per clip, the network output is min-max normalised over all frames of the video
(so frames of one video share one scale), oriented so that *near is warm* (red in
``jet``/``turbo``: relative-depth models such as Depth Anything and DPT predict inverse
depth, larger = nearer; set ``output=depth`` for models whose output grows with
distance), then colour-mapped (``colormap``, jet by default like the original figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.base import Clip, Modality
from mkdcore.modalities.colour import apply_colormap, minmax
from mkdcore.modalities.depth_hf import HFDepthEstimator


class DepthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "existing"] = Field("hf", description="hf: local transformers checkpoint; existing: verify depth_l8")
    checkpoint: Path | None = Field(None, description="local transformers depth-estimation folder (backend hf)")
    output: Literal["disparity", "depth"] = Field("disparity", description="what the network predicts: larger = nearer (disparity) or farther (depth)")
    colormap: Literal["jet", "turbo", "inferno", "magma", "viridis", "gray"] = "jet"
    batch_size: int = Field(16, ge=1, description="frames per forward pass")
    jpeg_quality: int = Field(95, ge=1, le=100)


class Depth(Modality):
    """Monocular depth (transformers checkpoint from a local folder, or existing ground truth), colour-mapped."""

    name = "depth"
    channels = ("depth_colour_r", "depth_colour_g", "depth_colour_b")

    def __init__(self, **options: Any) -> None:
        self.options = DepthOptions(**options)
        self.existing_only = self.options.backend == "existing"
        self.uses_device = self.options.backend == "hf"
        self.jpeg_quality = self.options.jpeg_quality
        self.estimator = HFDepthEstimator(self.options.checkpoint, self.options.batch_size)

    def setup(self, device: str = "cpu") -> None:
        if self.options.backend == "hf":
            self.estimator.setup(device)

    def render(self, raw: np.ndarray) -> list[np.ndarray]:
        """Raw outputs of one clip ``(T, H, W)`` -> T colour images (clip min-max, near = warm)."""
        near = minmax(raw)
        if self.options.output == "depth":
            near = 1.0 - near
        return [apply_colormap(f, self.options.colormap) for f in near]

    def derive(self, clip: Clip) -> list[np.ndarray]:
        return self.render(self.estimator(clip.frames))

    def derive_batch(self, clips: Sequence[Clip]) -> list[list[np.ndarray]]:
        out: list[list[np.ndarray] | None] = [None] * len(clips)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(clips):
            by_size.setdefault(c.frames.shape[1:], []).append(i)
        for idxs in by_size.values():  # frames of several videos in one batched pass
            raw = self.estimator(np.concatenate([clips[i].frames for i in idxs]))
            start = 0
            for i in idxs:
                t = clips[i].frames.shape[0]
                out[i] = self.render(raw[start : start + t])
                start += t
        return out  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.options.model_dump(mode="json")}


@hookimpl
def register_modalities(register):
    register("depth", Depth, options=DepthOptions, description=Depth.__doc__)
