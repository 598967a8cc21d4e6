"""Depth through the real transformers classes, loaded like a user's local checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mkdcore.data.derive import derive_dataset
from mkdcore.errors import ConfigError
from mkdcore.modalities.base import Clip
from plugins.modality_depth import Depth
from tests.test_derive import NAMES, make_tree


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Depth Anything (DINOv2 backbone) + DPT image processor, saved to disk."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 16, 16],
                              fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    path = tmp_path_factory.mktemp("depth-anything-tiny")
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14).save_pretrained(path)
    return path


def test_depth_from_a_local_checkpoint(checkpoint):
    mod = Depth(checkpoint=checkpoint, batch_size=5)
    assert mod.uses_device and not mod.existing_only
    mod.setup("cpu")
    rng = np.random.default_rng(0)
    clips = [Clip(frames=rng.integers(0, 256, (8, 40, 52, 3), dtype=np.uint8)) for _ in range(2)]
    out = mod.derive_batch(clips)
    assert len(out) == 2 and all(len(v) == 8 for v in out)
    assert all(img.shape == (40, 52, 3) and img.dtype == np.uint8 for v in out for img in v)
    # one clip alone gives the same images as inside a batch of clips
    single = mod.derive(clips[1])
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(single, out[1])) <= 2


def test_derive_depth_dataset_through_the_registry(checkpoint, tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds", classes=1, videos=2, size=32)
    s = derive_dataset(root, "depth", {"checkpoint": str(checkpoint)}, progress=False, batch_videos=2)
    assert s.ok and s.derived == 2
    assert sorted(p.name for p in (root / "depth_l8/class_0/video_1").iterdir()) == NAMES


def test_near_is_warm_and_clip_normalised():
    mod = Depth(backend="existing")
    raw = np.zeros((2, 4, 8), np.float32)
    raw[0, :, :4] = 10.0  # frame 0 left half: largest disparity = nearest
    near = mod.render(raw)
    r, _, b = near[0][0, 0].astype(int)
    assert r >= 120 and b < 30  # near: (dark) red, jet's warm end
    r, _, b = near[0][0, 7].astype(int)
    assert b >= 120 and r < 30  # far: (dark) blue
    assert np.array_equal(near[1][0, 0], near[0][0, 7])  # one scale for the whole clip
    far = Depth(backend="existing", output="depth").render(raw)
    assert far[0][0, 0, 2] >= 120 and far[0][0, 0, 0] < 30


def test_missing_or_wrong_checkpoint_is_one_line(tmp_path):
    not_depth = tmp_path / "bert"
    not_depth.mkdir()
    (not_depth / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (not_depth / "preprocessor_config.json").write_text("{}")
    cases = [None, tmp_path / "missing", not_depth]
    for ckpt in cases:
        with pytest.raises(ConfigError) as err:
            Depth(checkpoint=ckpt).setup("cpu")
        msg = str(err.value)
        assert "\n" not in msg, msg
        assert "Depth-Anything" in msg and "modalities.derive.depth.options.checkpoint" in msg and "-o checkpoint=" in msg


def test_derive_stops_at_once_on_a_missing_checkpoint(tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds", classes=1, videos=1, size=32)
    with pytest.raises(ConfigError, match="needs the option checkpoint"):
        derive_dataset(root, "depth", {}, progress=False)
    assert not (root / "depth_l8").exists()  # nothing created on disk
