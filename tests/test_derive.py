"""The derive runner and `mkd data derive`: whole datasets, resume, kills, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mkdcore.cli.main import cli
from mkdcore.data.derive import (
    derive_dataset,
    is_complete,
    list_videos,
)
from mkdcore.data.layout import DatasetLayout
from mkdcore.errors import PluginError
from mkdcore.fileio import clean_stale_temps

NAMES = [f"{i:08d}.jpg" for i in range(1, 9)]


def make_tree(root: Path, classes: int = 2, videos: int = 2, size: int = 48, frames: int = 8, seed: int = 0) -> Path:
    """A tiny dataset in the seed layout: random-texture background, a square moving right."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        for v in range(videos):
            d = root / "rgb_l8" / f"class_{c}" / f"video_{v}"
            d.mkdir(parents=True, exist_ok=True)
            bg = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (5, 5), 1.0)
            for t in range(frames):
                img = bg.copy()
                x = 4 + 2 * t
                img[size // 4 : size // 4 + size // 4, x : x + size // 4] = (250, 30, 30)
                cv2.imwrite(str(d / f"{t + 1:08d}.jpg"), img)
    return root


def all_decode(video_dir: Path) -> bool:
    imgs = [cv2.imread(str(video_dir / n)) for n in NAMES]
    return all(i is not None and i.shape[2] == 3 for i in imgs)


def test_derive_flow_on_cpu_then_resume(tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds")
    s = derive_dataset(root, "flow", {"preset": "fast"}, progress=False)
    assert s.ok and s.videos == 4 and s.derived == 4 and s.frames == 32 and s.frames_per_s > 0
    layout = DatasetLayout(root)
    for key in list_videos(layout):
        out = layout.video_dir("flow", key)
        assert [p.name for p in layout.frame_paths("flow", key)] == NAMES
        assert all_decode(out)
    # the square moves right: the wheel colour inside it is not white
    img = cv2.imread(str(root / "flow_l8/class_0/video_0/00000001.jpg"))
    assert img[14:22, 10:16].min(axis=-1).mean() < 200
    again = derive_dataset(root, "flow", {"preset": "fast"}, progress=False)
    assert again.skipped == 4 and again.derived == 0
    assert not any(".tmp-" in p.name for p in (root / "flow_l8").iterdir())


def test_process_pool_gives_the_same_images(tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds", classes=2, videos=2)
    derive_dataset(root, "flow", {"encoding": "raw2"}, progress=False)
    ref = {p.relative_to(root): p.read_bytes() for p in (root / "flow_l8").rglob("*.jpg")}
    import shutil

    shutil.rmtree(root / "flow_l8")
    s = derive_dataset(root, "flow", {"encoding": "raw2"}, workers=2, progress=False)
    assert s.ok and s.derived == 4
    got = {p.relative_to(root): p.read_bytes() for p in (root / "flow_l8").rglob("*.jpg")}
    assert got == ref


def test_leftovers_of_a_killed_run_are_cleaned_and_redone(tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds")
    out = root / "flow_l8"
    # a dead process's temporary folder, and a half video that is not complete
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = out / f".class_0-video_0.tmp-{int(dead.stdout)}"
    stale.mkdir(parents=True)
    (stale / NAMES[0]).write_bytes(b"\xff\xd8 half")
    half = out / "class_1" / "video_1"
    half.mkdir(parents=True)
    (half / NAMES[0]).write_bytes(b"\xff\xd8 half")
    assert not is_complete(half, NAMES)
    s = derive_dataset(root, "flow", {}, progress=False)
    assert s.ok and s.derived == 4
    assert not stale.exists() and all_decode(half)
    # a live process's temporary folder is left alone
    live = out / f".x-y.tmp-{os.getppid()}"
    live.mkdir()
    assert clean_stale_temps(out) == 0 and live.exists()


def test_sigkill_half_way_then_rerun_finishes_with_no_corrupt_image(tmp_path):
    root = make_tree(tmp_path / "ds", classes=6, videos=8, size=96)
    cmd = [sys.executable, "-m", "mkdcore.cli.main", "data", "derive", str(root), "-m", "flow",
           "-o", "method=farneback", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = root / "flow_l8"
    deadline = time.time() + 60
    done = lambda: [d for d in out.glob("class_*/video_*")] if out.exists() else []
    while len(done()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = done()
    assert 0 < len(finished) < 48, "the kill should land half-way"
    for d in finished:  # whatever looks done is complete and decodes
        assert is_complete(d, NAMES) and all_decode(d)
    res = CliRunner().invoke(cli, ["data", "derive", str(root), "-m", "flow", "-o", "method=farneback", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"{len(finished)} already done" in res.output
    assert len(done()) == 48 and all(all_decode(d) for d in done())
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_cli_lists_failures_and_exits_non_zero(tmp_path):
    root = make_tree(tmp_path / "ds")
    (root / "rgb_l8/class_1/video_0" / NAMES[3]).write_bytes(b"not a jpeg")
    res = CliRunner().invoke(cli, ["data", "derive", str(root), "--modality", "flow", "--option", "preset=ultrafast"])
    assert res.exit_code == 1
    assert "3 derived" in res.output and "frames/s" in res.output
    assert "failed: class_1/video_0:" in res.output and "00000004.jpg" in res.output
    assert not (root / "flow_l8/class_1/video_0").exists()


def test_bad_modality_or_option_is_one_line(tmp_path):
    root = make_tree(tmp_path / "ds", classes=1, videos=1)
    with pytest.raises(PluginError, match="unknown modality 'flwo'"):
        derive_dataset(root, "flwo", {})
    res = CliRunner().invoke(cli, ["data", "derive", str(root), "-m", "flow", "-o", "speed=3"])
    assert res.exit_code != 0 and "speed" in str(res.exception or res.output)


def test_existing_backend_only_verifies(tmp_path, plugin_manager):
    root = make_tree(tmp_path / "ds", classes=1, videos=2)
    import shutil

    shutil.copytree(root / "rgb_l8", root / "depth_l8")  # stands in for ground-truth depth
    (root / "depth_l8/class_0/video_1" / NAMES[7]).unlink()
    s = derive_dataset(root, "depth", {"backend": "existing"}, progress=False)
    assert s.verified == 1 and s.derived == 0
    assert s.failures and s.failures[0][0] == "class_0/video_1" and "missing 1 of 8" in s.failures[0][1]
    assert not (root / "depth_l8/class_0/video_1" / NAMES[7]).exists()  # never written
    assert derive_dataset(root, "rgb", {}, progress=False).verified == 2
