"""mkdcore.testing, the plugin authors' kit: a tiny dataset with next frames, the output
contract check through the real derive runner, and a derive-and-train run of the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkdcore import api, testing
from mkdcore.errors import PluginError
from mkdcore.modalities import Clip, Modality


class Invert(Modality):
    """A modality defined in a test, never packaged: 255 - frame."""

    name = "invert"
    channels = ("r", "g", "b")

    def derive(self, clip: Clip) -> list[np.ndarray]:
        return [255 - f for f in clip.frames]


class Motion(Invert):
    """Needs the next original frames: |next - frame|."""

    name = "motion"
    needs_neighbours = True

    def derive(self, clip: Clip) -> list[np.ndarray]:
        assert clip.next_frames is not None
        return [np.abs(n.astype(np.int16) - f).astype(np.uint8) for f, n in zip(clip.frames, clip.next_frames)]


class BadDecode(Invert):
    name = "bad_decode"

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        return images  # uint8: training would get integers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return testing.tiny_dataset(tmp_path_factory.mktemp("kit"))


def test_tiny_dataset_has_next_frames(tiny):
    assert sorted(p.name for p in tiny.iterdir() if p.name.endswith("_l8")) == ["depth_l8", "rgb_l8", "rgb_next_l8", "skeleton_l8"]
    videos = sorted(tiny.glob("rgb_l8/*/*"))
    assert len(videos) == 6 and all(len(list(v.glob("*.jpg"))) == 4 for v in videos)


def test_check_modality_with_an_instance(plugin_manager, tiny):
    summary = testing.check_modality(Invert(), tiny)
    assert summary.ok and summary.derived == 6 and summary.frames == 24
    with pytest.raises(PluginError):  # registered for the call only
        api.get("modality", "invert")


def test_next_frames_reach_the_modality(plugin_manager, tiny, tmp_path):
    assert testing.check_modality(Motion(), tiny).derived == 6
    still = testing.tiny_dataset(tmp_path, next_frames=False)
    with pytest.raises(AssertionError, match="6 of 6 videos failed.*needs the next original frames"):
        testing.check_modality(Motion(), still)


def test_flow_pairs_neighbours_by_name(plugin_manager, tiny):
    summary = testing.check_modality("flow", tiny, {"pairs": "neighbours", "method": "dis", "preset": "ultrafast"})
    assert summary.derived == 6


def test_contract_breaches_name_the_file(plugin_manager, tiny):
    with pytest.raises(AssertionError, match=r"bad_decode.decode\(\).*expected float \(4, C, 32, 32\)"):
        testing.check_modality(BadDecode(), tiny)

    class Small(Invert):
        name = "small"

        def derive(self, clip: Clip) -> list[np.ndarray]:
            return [f[::2, ::2] for f in clip.frames]

    with pytest.raises(AssertionError, match="derive small: 6 of 6 videos failed.*expected uint8"):
        testing.check_modality(Small(), tiny)


def test_unknown_modality_says_modalities(plugin_manager):
    with pytest.raises(PluginError, match="registered modalities: ") as err:
        api.create("modality", "nope")
    assert "modalitys" not in str(err.value)


@pytest.mark.slow
def test_derive_and_train_an_unpackaged_modality(plugin_manager, tmp_path):
    result = testing.derive_and_train(Invert(), tmp_path)
    assert result.ran == ["data", "derive:invert", "teacher:invert"]
    assert result.outputs["tasks"] == 2 and 0.0 <= result.val_acc <= 1.0
    assert (tmp_path / "data" / "invert_l8").is_dir() and (tmp_path / "data" / "rgb_next_l8").is_dir()

