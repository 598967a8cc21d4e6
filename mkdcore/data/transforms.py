"""The spatial pipeline (spec 2.4): shorter side -> ``resize``, then a ``crop`` square.

Training draws ONE crop position and ONE flip decision per clip and applies them to
every frame of every modality, so a clip and its depth/flow/skeleton images stay
aligned (trx issue #1). Testing uses the centre crop. The original code does no
mean/std normalisation; ImageNet normalisation is an explicit option because it
changes results.

The random draws (:meth:`ClipTransform.draw`) are a step apart from the pixel work
(:meth:`ClipTransform.apply`, :meth:`ClipTransform.apply_many`), so loader workers can
draw them and the GPU data path can apply them on the device to frames it decoded
there: the same crop and flip for a given (seed, episode) wherever the pixels are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from mkdcore.errors import ConfigError

# torchvision (``torchvision.transforms.v2.functional``, for ``resize``) is imported where
# the pixels are resized, not here: importing it costs ~1.7 s of CPU, and stages that only
# need this module's constants or types (a model card's mean/std, the fuse and mm_features
# stages on stored features) must not pay it in every queue stage process.

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

    def _crop_flip(self, clip: torch.Tensor, fy: float, fx: float, flip: bool) -> torch.Tensor:
        """A resized clip cropped at (fy, fx) of the free space, flipped: still uint8."""
        h, w = clip.shape[-2:]
        top = round(fy * (h - self.crop))
        left = round(fx * (w - self.crop))
        clip = clip[..., top : top + self.crop, left : left + self.crop]
        return clip.flip(-1) if flip else clip

    def _to_float(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0,1], ImageNet-normalised if asked; on the clip's device."""
        out = clip.float().div_(255.0)
        if self.normalize == "imagenet":
            shape = (1,) * (out.ndim - 3) + (3, 1, 1)
            mean = torch.tensor(IMAGENET_MEAN, device=out.device).view(shape)
            std = torch.tensor(IMAGENET_STD, device=out.device).view(shape)
            out = (out - mean) / std
        return out.contiguous()

    def apply(self, clip: torch.Tensor, fy: float, fx: float, flip: bool) -> torch.Tensor:
        """Resize, crop at (fy, fx) of the free space, flip; uint8 in, float in [0,1] out
        (on the clip's device)."""
        from torchvision.transforms.v2 import functional as F

        if clip.ndim != 4 or clip.shape[1] != 3:
            raise ValueError(f"expected a (T, 3, H, W) clip, got {tuple(clip.shape)}")
        clip = F.resize(clip, self.resize, antialias=True)  # int size: shorter side, aspect kept
        return self._to_float(self._crop_flip(clip, fy, fx, flip))

    def apply_many(self, clips: Sequence[torch.Tensor], params: Sequence[tuple[float, float, bool]]) -> torch.Tensor:
        """``[apply(clip, *p) for clip, p]`` stacked to ``(N, T, 3, crop, crop)``, in few
        large calls: clips of one frame size are resized together (resizing is per image,
        so the result is the same), the float conversion runs once. This is what the GPU
        data path runs on an episode's frames, where per-clip calls cost a launch each."""
        from torchvision.transforms.v2 import functional as F

        if len(clips) != len(params) or not clips:
            raise ValueError(f"apply_many: {len(clips)} clips and {len(params)} draws")
        for clip in clips:
            if clip.ndim != 4 or clip.shape[1] != 3:
                raise ValueError(f"expected a (T, 3, H, W) clip, got {tuple(clip.shape)}")
        T = clips[0].shape[0]
        if any(c.shape[0] != T for c in clips):
            raise ValueError("apply_many: clips of different lengths")
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, clip in enumerate(clips):
            by_size.setdefault(tuple(clip.shape[-2:]), []).append(i)
        cropped: list[torch.Tensor | None] = [None] * len(clips)
        for members in by_size.values():
            resized = F.resize(torch.cat([clips[i] for i in members]), self.resize, antialias=True)
            for j, i in enumerate(members):
                cropped[i] = self._crop_flip(resized[j * T : (j + 1) * T], *params[i])
        return self._to_float(torch.stack(cropped))  # type: ignore[arg-type]

    def __call__(self, clips: Mapping[str, torch.Tensor], rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        fy, fx, flip = self.draw(rng)
        return {m: self.apply(c, fy, fx, flip) for m, c in clips.items()}
