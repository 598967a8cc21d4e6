"""The plugin's own tests, written with mkd's plugin authors' kit (``mkdcore.testing``).

Run them after installing the package (``pip install -e .``, so the ``mkd`` entry point
is registered): ``pytest tests``. mkd's test suite runs them too
(``tests/test_example_plugin.py``), against a real install.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mkdcore import api, testing


def test_registered_through_the_entry_point():
    spec = api.get("modality", "edge")
    assert spec.package == "mkd-edge-modality" and spec.version == "0.1.0"


@pytest.mark.parametrize("options", [{"method": "sobel"}, {"method": "canny", "low": 30}])
def test_images_follow_the_contract(tmp_path, options):
    root = testing.tiny_dataset(tmp_path)  # 3 classes x 2 videos, 4 frames of 32 px
    summary = testing.check_modality("edge", root, options)
    assert summary.derived == 6
    edges = cv2.imread(str(next((root / "edge_l8").glob("*/*/00000001.jpg"))))
    assert edges.max() > max(30, 3 * np.median(edges))  # outlines, not a flat image


def test_plugs_into_the_pipeline(tmp_path):
    result = testing.derive_and_train("edge", tmp_path)  # data -> derive:edge -> teacher:edge
    assert result.ran == ["data", "derive:edge", "teacher:edge"]
    assert result.val_acc is not None
