"""The spatial pipeline (spec 2.4): shorter side -> ``resize``, then a ``crop`` square.

Training draws ONE crop position and ONE flip decision per clip and applies them to
every frame of every modality, so a clip and its depth/flow/skeleton images stay
aligned (trx issue #1). Testing uses the centre crop. The original code does no
mean/std normalisation; ImageNet normalisation is an explicit option because it
changes results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from mkdcore.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("none", "imagenet")


class ClipTransform:
    """``{modality: uint8 (T,3,H,W)}`` -> ``{modality: float (T,3,crop,crop)}``."""

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        train: bool = False,
        normalize: Literal["none", "imagenet"] = "none",
        flip: bool = True,
    ) -> None:
        if crop > resize:
            raise ConfigError(f"crop {crop} is larger than the resized shorter side {resize}")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize {normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        self.resize, self.crop, self.train, self.normalize, self.flip = resize, crop, train, normalize, flip

    def __repr__(self) -> str:
        return f"ClipTransform(resize={self.resize}, crop={self.crop}, train={self.train}, normalize={self.normalize!r})"

    def draw(self, rng: np.random.Generator | None) -> tuple[float, float, bool]:
        """Crop position as fractions of the free space, and the flip decision."""
        if not self.train:
            return 0.5, 0.5, False
        rng = rng if rng is not None else np.random.default_rng()
        fy, fx = float(rng.random()), float(rng.random())
        flip = bool(self.flip and rng.random() < 0.5)
        return fy, fx, flip

    def apply(self, clip: torch.Tensor, fy: float, fx: float, flip: bool) -> torch.Tensor:
        """Resize, crop at (fy, fx) of the free space, flip; uint8 in, float in [0,1] out."""
        if clip.ndim != 4 or clip.shape[1] != 3:
            raise ValueError(f"expected a (T, 3, H, W) clip, got {tuple(clip.shape)}")
        clip = F.resize(clip, self.resize, antialias=True)  # int size: shorter side, aspect kept
        h, w = clip.shape[-2:]
        top = round(fy * (h - self.crop))
        left = round(fx * (w - self.crop))
        clip = clip[..., top : top + self.crop, left : left + self.crop]
        if flip:
            clip = clip.flip(-1)
        out = clip.float().div_(255.0)
        if self.normalize == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            out = (out - mean) / std
        return out.contiguous()

    def __call__(self, clips: Mapping[str, torch.Tensor], rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        fy, fx, flip = self.draw(rng)
        return {m: self.apply(c, fy, fx, flip) for m, c in clips.items()}
