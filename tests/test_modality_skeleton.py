"""Skeleton: drawing, Keypoint R-CNN from a local state dict, one-line errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mkdcore.errors import ConfigError
from mkdcore.modalities.base import Clip
from mkdcore.modalities.pose import COCO_LIMBS, draw_skeletons
from plugins.modality_skeleton import Skeleton


def test_drawing_joints_and_limbs():
    kp = np.zeros((17, 3), np.float32)
    kp[:, 2] = 5.0
    kp[5, :2] = (10, 10)  # left shoulder
    kp[7, :2] = (30, 10)  # left elbow
    others = [j for j in range(17) if j not in (5, 7)]
    kp[others, 2] = -1.0  # below the threshold: not drawn
    img = draw_skeletons(40, 40, [kp], threshold=0.0, thickness=1)
    assert img.dtype == np.uint8 and img.shape == (40, 40, 3)
    assert img[10, 20].max() > 100  # on the shoulder-elbow limb
    assert img[10, 10].min() > 200 and img[10, 30].min() > 200  # joints are white
    assert img[30:, :].max() == 0  # nothing else
    assert not draw_skeletons(40, 40, []).any()  # nobody: black
    assert (5, 7) in COCO_LIMBS


def test_keypointrcnn_from_a_local_state_dict(tmp_path):
    """The user path (keypointrcnn_resnet50_fpn(weights=None) + local file). Random weights
    with a classifier biased to background detect nobody (black images); biased to
    person, every frame has people, drawn as limbs."""
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([10.0, -10.0]))
    path = tmp_path / "keypointrcnn.pth"
    torch.save(model.state_dict(), path)
    del model

    mod = Skeleton(weights=path, min_size=64, max_size=64, proposals=10, max_people=1, score_threshold=0.5)
    mod.setup("cpu")
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    black = mod.derive_batch([Clip(frames=frames[:2]), Clip(frames=frames[2:])])
    assert [len(v) for v in black] == [2, 1]
    assert all(img.shape == (48, 64, 3) and img.dtype == np.uint8 and not img.any() for v in black for img in v)

    with torch.no_grad():
        mod.estimator.model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-10.0, 10.0]))
    people = mod.estimator(frames)
    assert [len(p) for p in people] == [1, 1, 1] and people[0][0].shape == (17, 3)
    drawn = mod.derive(Clip(frames=frames))
    assert all(img.shape == (48, 64, 3) and img.any() for img in drawn)


def test_missing_weights_is_one_line(tmp_path):
    for w in (None, tmp_path / "nope.pth"):
        with pytest.raises(ConfigError) as err:
            Skeleton(weights=w).setup("cpu")
        msg = str(err.value)
        assert "\n" not in msg and "keypointrcnn_resnet50_fpn_coco" in msg and "modalities.derive.skeleton.options.weights" in msg


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_mediapipe_missing_gives_the_install_line():
    mod = Skeleton(backend="mediapipe")
    assert not mod.uses_device
    with pytest.raises(ConfigError) as err:
        mod.setup("cpu")
    msg = str(err.value)
    assert "\n" not in msg and "pip install 'lite-mkd[pose]'" in msg and "opencv-contrib-python==4.11.0.86" in msg
