"""Optical flow: known translations, the encodings, frame pairs, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision

from mkdcore.errors import ConfigError, PluginError
from mkdcore.modalities.base import Clip
from mkdcore.modalities.flow_encoding import (
    clip_scale,
    decode_raw2,
    decode_wheel,
    encode_raw2,
    encode_wheel,
)
from plugins.modality_flow import Flow


def textured(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size + 40, size + 40, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 1.5)


def shifted_pair(dx: int, dy: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Frame b shows frame a's content moved by (dx, dy) px."""
    big = textured(size)
    a = big[20 : 20 + size, 20 : 20 + size]
    b = big[20 - dy : 20 - dy + size, 20 - dx : 20 - dx + size]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def centre_mean(flow: np.ndarray, margin: int = 16) -> np.ndarray:
    return flow[margin:-margin, margin:-margin].reshape(-1, 2).mean(0)


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("shift", [(3, 2), (-4, 1)])
def test_known_translation_direction_and_magnitude(method, shift):
    a, b = shifted_pair(*shift)
    flow = Flow(method=method).estimator(a[None], b[None])[0]
    assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(centre_mean(flow), shift, atol=0.3)


@pytest.mark.parametrize("encoding", ["wheel", "raw2"])
def test_translation_survives_encode_and_decode(encoding):
    """Through the stored image (fixed scale) and back: same direction and magnitude."""
    a, b = shifted_pair(3, -2)
    mod = Flow(encoding=encoding, normalize="fixed", max_flow=8.0)
    clip = Clip(frames=np.stack([a, b]), next_frames=np.stack([b, b]))
    images = mod.derive(clip)
    decode = decode_wheel if encoding == "wheel" else decode_raw2
    flow = decode(images[0], 8.0)
    np.testing.assert_allclose(centre_mean(flow), (3, -2), atol=0.35)
    # the zero-motion second pair (b -> b) decodes to (almost) nothing
    assert np.abs(centre_mean(decode(images[1], 8.0))).max() < 0.2


def test_wheel_is_the_standard_middlebury_wheel():
    """Same pixels as torchvision's independent implementation when scale = max magnitude."""
    rng = np.random.default_rng(1)
    flow = rng.normal(size=(20, 30, 2)) * 4
    scale = clip_scale(flow[None])
    ours = encode_wheel(flow, scale)
    ref = torchvision.utils.flow_to_image(torch.from_numpy(flow).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, ref)
    # no motion is white; motion to the right is red-ish on the wheel
    assert encode_wheel(np.zeros((1, 1, 2)), 1.0)[0, 0].tolist() == [255, 255, 255]
    right = encode_wheel(np.array([[[1.0, 0.0]]]), 1.0)[0, 0]
    assert right[0] > 200 and right[2] < 60


def test_raw2_layout_and_decode():
    flow = np.array([[[10.0, -5.0], [0.0, 0.0], [40.0, 0.0]]])
    img = encode_raw2(flow, 20.0)
    assert img[0, 1].tolist() == [128, 128, 0]
    assert img[0, 0, 0] == 128 + round(127 * 0.5) and img[0, 0, 1] == 128 - round(127 * 0.25)
    assert img[0, 2].tolist() == [255, 128, 255]  # saturated beyond the scale
    np.testing.assert_allclose(decode_raw2(img, 20.0)[0, :2], flow[0, :2], atol=20 / 127)
    dec = Flow(encoding="raw2").decode(torch.from_numpy(img).permute(2, 0, 1)[None])
    assert dec.shape == (1, 3, 1, 3) and dec.dtype == torch.float32
    assert dec[0, 0, 0, 2] == pytest.approx(1.0) and dec[0, 2, 0, 1] == 0


def test_clip_scale():
    flows = np.zeros((3, 4, 4, 2))
    flows[1, 0, 0] = (3, 4)
    assert clip_scale(flows) == pytest.approx(5.0)
    assert clip_scale(np.zeros((2, 4, 4, 2)), min_scale=1.5) == 1.5  # static video: no noise blow-up
    assert clip_scale(flows, "fixed", max_flow=12) == 12


def test_clip_normalisation_saturates_the_fastest_frame_only():
    a, b = shifted_pair(4, 0)
    clip = Clip(frames=np.stack([a, a]), next_frames=np.stack([b, a]))
    wheel = Flow().derive(clip)
    # frame 0 moves the most: strongly coloured; frame 1 does not move: near white
    assert wheel[0][20:-20, 20:-20].min(axis=-1).mean() < 80
    assert wheel[1][20:-20, 20:-20].min(axis=-1).mean() > 200


def test_frame_pairs_sampled_and_neighbours():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(5)])
    src, dst = Flow().frame_pairs(Clip(frames=frames))
    assert src[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 3] and dst[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 4]
    nxt = frames + 100
    src, dst = Flow().frame_pairs(Clip(frames=frames, next_frames=nxt))
    assert dst[:, 0, 0, 0].tolist() == [100, 101, 102, 103, 104]
    src, dst = Flow(pairs="sampled").frame_pairs(Clip(frames=frames, next_frames=nxt))
    assert dst[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 4]
    assert Flow(pairs="neighbours").needs_neighbours


@pytest.mark.skipif(hasattr(cv2, "optflow"), reason="opencv-contrib is installed")
def test_tvl1_without_contrib_is_a_one_line_error():
    with pytest.raises(PluginError) as err:
        Flow(method="tvl1")
    msg = str(err.value)
    assert "\n" not in msg and "opencv-contrib-python-headless" in msg


def test_raft_missing_weights_is_one_line(tmp_path):
    for opts in ({}, {"weights": tmp_path / "nope.pth"}):
        with pytest.raises(ConfigError) as err:
            Flow(method="raft", **opts).setup("cpu")
        msg = str(err.value)
        assert "\n" not in msg and "download.pytorch.org/models/raft_small" in msg and "weights=" in msg
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="not a raft_small state dict"):
        Flow(method="raft", weights=bad).setup("cpu")


def test_raft_from_a_local_weights_file(tmp_path):
    """The user path: raft_small(weights=None) + a local state dict, batched over clips."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    mod = Flow(method="raft", weights=path, iters=1, batch_size=3)
    assert mod.uses_device
    mod.setup("cpu")
    frames = np.stack([shifted_pair(i, 0, size=36)[0] for i in range(2)])  # 36 px: padded to 128
    out = mod.derive_batch([Clip(frames=frames), Clip(frames=frames[::-1].copy())])
    assert len(out) == 2 and all(len(v) == 2 for v in out)
    assert all(img.shape == (36, 36, 3) and img.dtype == np.uint8 for v in out for img in v)
