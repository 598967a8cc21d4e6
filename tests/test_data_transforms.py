"""ClipTransform: one crop and flip per clip, for all frames and all modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkdcore.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from mkdcore.errors import ConfigError


def coordinate_clip(T: int = 4, H: int = 24, W: int = 32) -> torch.Tensor:
    """Pixel value encodes (row, col): any crop/flip is recoverable from the output."""
    rows = torch.arange(H).view(H, 1).expand(H, W)
    cols = torch.arange(W).view(1, W).expand(H, W)
    img = torch.stack([rows * 8, cols * 6, torch.zeros(H, W, dtype=torch.long)]).to(torch.uint8)
    return img.unsqueeze(0).repeat(T, 1, 1, 1)


def test_same_crop_and_flip_across_frames_and_modalities():
    clip = coordinate_clip()
    t = ClipTransform(resize=24, crop=16, train=True)  # resize == shorter side: no resampling
    flips, tops, lefts = set(), set(), set()
    for seed in range(30):
        out = t({"rgb": clip, "depth": clip.clone(), "flow": clip.clone()}, np.random.default_rng(seed))
        assert out["rgb"].shape == (4, 3, 16, 16) and out["rgb"].dtype == torch.float32
        assert torch.equal(out["rgb"], out["depth"]) and torch.equal(out["rgb"], out["flow"])
        for f in range(1, 4):
            assert torch.equal(out["rgb"][f], out["rgb"][0])
        rows = (out["rgb"][0, 0, :, 0] * 255 / 8).round().long()
        cols = (out["rgb"][0, 1, 0, :] * 255 / 6).round().long()
        assert torch.equal(rows, torch.arange(rows[0], rows[0] + 16))
        flipped = bool(cols[0] > cols[-1])
        flips.add(flipped)
        tops.add(int(rows[0]))
        lefts.add(int(cols[-1] if flipped else cols[0]))
    assert flips == {True, False} and len(tops) > 1 and len(lefts) > 1


def test_centre_crop_at_test_and_shorter_side_resize():
    clip = coordinate_clip(T=2, H=24, W=32)
    t = ClipTransform(resize=24, crop=16, train=False)
    a = t({"rgb": clip}, np.random.default_rng(0))["rgb"]
    b = t({"rgb": clip}, np.random.default_rng(1))["rgb"]
    assert torch.equal(a, b)
    assert round(float(a[0, 0, 0, 0]) * 255 / 8) == 4 and round(float(a[0, 1, 0, 0]) * 255 / 6) == 8
    big = ClipTransform(resize=12, crop=12)({"rgb": clip})["rgb"]
    assert big.shape == (2, 3, 12, 12)  # 24x32 -> 12x16 (aspect kept) -> centre 12


def test_modalities_of_different_resolution_stay_aligned():
    clip = coordinate_clip(H=24, W=32)
    half = clip[:, :, ::2, ::2].contiguous()
    out = ClipTransform(resize=12, crop=8, train=True)({"rgb": clip, "depth": half}, np.random.default_rng(5))
    assert out["rgb"].shape == out["depth"].shape == (4, 3, 8, 8)
    assert torch.allclose(out["rgb"], out["depth"], atol=0.1)


def test_normalisation_is_explicit():
    clip = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    plain = ClipTransform(resize=8, crop=8)({"rgb": clip})["rgb"]
    assert torch.allclose(plain, torch.ones_like(plain))
    norm = ClipTransform(resize=8, crop=8, normalize="imagenet")({"rgb": clip})["rgb"]
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(norm[0, :, 0, 0], expected)
    with pytest.raises(ConfigError, match="normalize"):
        ClipTransform(normalize="zscore")
    with pytest.raises(ConfigError, match="crop 300"):
        ClipTransform(resize=256, crop=300)
