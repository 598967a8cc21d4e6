"""Built-in plugin `modality_depth`: monocular depth stored colour-mapped in ``depth_l8``.

Backends:

* ``hf`` (default): a ``transformers`` depth-estimation checkpoint from a local folder
  (option ``checkpoint``; e.g. Depth Anything V2 Small, DPT), never downloaded, batched
  on the chosen device (``--device cuda``).
* ``adabins`` (``model=adabins`` is the same option): the paper's depth network,
  AdaBins (:mod:`mkdcore.modalities.adabins`), from the official ``AdaBins_nyu.pt`` /
  ``AdaBins_kitti.pt`` (option ``weights``, ``dataset`` nyu|kitti to match the file),
  run at the resolution it was trained for (480x640 NYU, 352x1216 KITTI; option
  ``size``), averaged with the horizontally flipped pass (``flip``) as the official
  inference; metric depth, so larger = farther.
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
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.base import Clip, Modality
from mkdcore.modalities.colour import apply_colormap, minmax
from mkdcore.modalities.depth_hf import HFDepthEstimator


class DepthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "adabins", "existing"] = Field(
        "hf", validation_alias=AliasChoices("backend", "model"),
        description="hf: local transformers checkpoint; adabins: official AdaBins file; existing: verify depth_l8 (also spelt model=)")
    weights: Path | None = Field(None, description="official AdaBins_nyu.pt / AdaBins_kitti.pt (backend adabins)")
    dataset: Literal["nyu", "kitti"] = Field("nyu", description="which AdaBins file: depth range 10 m (nyu) or 80 m (kitti)")
    size: tuple[int, int] | None = Field(None, description="AdaBins input H, W; default 480x640 (nyu), 352x1216 (kitti)")
    flip: bool = Field(True, description="AdaBins: average with the horizontally flipped pass (official inference)")
    checkpoint: Path | None = Field(None, description="local transformers depth-estimation folder (backend hf)")
    output: Literal["disparity", "depth"] = Field("disparity", description="what the network predicts: larger = nearer (disparity) or farther (depth)")
    colormap: Literal["jet", "turbo", "inferno", "magma", "viridis", "gray"] = "jet"
    batch_size: int = Field(16, ge=1, description="frames per forward pass")

    @field_validator("size")
    @classmethod
    def _patch_count(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        from mkdcore.modalities.adabins import patches

        if value is not None and not 129 <= patches(*value) <= 500:
            raise ValueError(f"AdaBins needs 129..500 patches of 16 px at half resolution; {value[0]}x{value[1]} gives "
                             f"{patches(*value)} (480x640 gives 300)")
        return value
    jpeg_quality: int = Field(95, ge=1, le=100)


class Depth(Modality):
    """Monocular depth (transformers checkpoint from a local folder, AdaBins, or existing ground truth), colour-mapped."""

    name = "depth"
    channels = ("depth_colour_r", "depth_colour_g", "depth_colour_b")

    def __init__(self, **options: Any) -> None:
        self.options = DepthOptions(**options)
        self.existing_only = self.options.backend == "existing"
        o = self.options
        self.uses_device = o.backend in ("hf", "adabins")
        self.jpeg_quality = o.jpeg_quality
        # AdaBins predicts metres (larger = farther) whatever `output` says
        self.larger_is_nearer = o.backend != "adabins" and o.output == "disparity"
        if o.backend == "adabins":
            # torch and timm: only this backend needs them here
            from mkdcore.modalities.adabins import AdaBinsDepth

            self.estimator: Any = AdaBinsDepth(o.weights, o.dataset, o.size, o.flip, o.batch_size)
        else:
            self.estimator = HFDepthEstimator(o.checkpoint, o.batch_size)

    def setup(self, device: str = "cpu") -> None:
        if self.uses_device:
            self.estimator.setup(device)

    def render(self, raw: np.ndarray) -> list[np.ndarray]:
        """Raw outputs of one clip ``(T, H, W)`` -> T colour images (clip min-max, near = warm)."""
        near = minmax(raw)
        if not self.larger_is_nearer:
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
