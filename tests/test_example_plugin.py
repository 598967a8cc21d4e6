"""The example plugin package (examples/mkd-edge-modality), installed for real.

It is pip-installed into a temporary --target folder (never into the shared venv) and
found through its ``mkd`` entry point by importlib.metadata; then ``mkd plugins`` lists
it, ``derive`` writes its images and one FewShotModel training step runs on them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mkdcore import plugins as plugin_module
from tests.test_derive import NAMES, make_tree

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mkd-edge-modality"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps --target`` of a copy of the example (no build files left in the repo)."""
    work = tmp_path_factory.mktemp("edge")
    src = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(src)], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("mkd_edge_modality", None)


@pytest.fixture
def manager(installed):
    """A fresh plugin manager that discovers entry points with the example installed."""
    manager = plugin_module.PluginManager()
    previous = plugin_module.set_manager(manager)
    yield manager
    plugin_module.set_manager(previous)


def test_mkd_plugins_lists_it(installed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mkdcore.cli.main", "plugins", "--kind", "modality", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    import json

    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["edge"]["package"] == "mkd-edge-modality" and rows["edge"]["version"] == "0.1.0"
    assert "method='sobel'" in rows["edge"]["options_summary"]


def test_derive_then_one_training_step(manager, tmp_path):
    from mkdcore import api
    from mkdcore.data import VideoKey
    from mkdcore.data.derive import derive_dataset
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data.video import read_frames
    from mkdcore.models.fewshot import FewShotModel

    spec = api.get("modality", "edge")
    assert spec.package == "mkd-edge-modality"
    root = make_tree(tmp_path / "ds", classes=3, videos=2, size=40)
    summary = derive_dataset(root, "edge", {"method": "sobel"}, progress=False)
    assert summary.ok and summary.derived == 6
    layout = DatasetLayout(root)
    edge_img = cv2.imread(str(layout.video_dir("edge", VideoKey("class_0", "video_0")) / NAMES[0]))
    assert edge_img.shape == (40, 40, 3) and edge_img.max() > max(30, 3 * np.median(edge_img))

    modality = api.create("modality", "edge")

    def clip(key: VideoKey) -> torch.Tensor:  # 4 of the 8 edge frames, decoded, at 32 px
        frames = modality.decode(read_frames(layout.frame_paths("edge", key)[::2]))
        return torch.nn.functional.interpolate(frames, size=(32, 32), mode="bilinear", align_corners=False)

    classes = ["class_0", "class_1", "class_2"]  # 3-way 1-shot, 1 query per class
    support = torch.stack([clip(VideoKey(c, "video_0")) for c in classes])
    query = torch.stack([clip(VideoKey(c, "video_1")) for c in classes])
    labels = torch.arange(3)
    torch.manual_seed(0)
    backbone = api.create("backbone", "resnet18", pooling="avg", projection="1fc", out_dim=32)
    head = api.create("head", "trx", in_dim=32, out_dim=16, temporal_set=[2], seq_len=4)
    model = FewShotModel(backbone, head).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(support, labels, query)
    assert out["logits"].shape == (3, 3)
    loss = torch.nn.functional.cross_entropy(out["logits"], labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
