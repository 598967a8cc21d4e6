"""The synthetic action dataset: layout, splits, determinism, ground truth, resume, errors."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mkdcore.data import synth
from mkdcore.data.synth_actions import ACTION_INDEX, ACTIONS, J, skeleton
from mkdcore.data.synth_render import colour_depth
from mkdcore.errors import MkdError

SMALL = dict(classes=6, videos_per_class=3, size=32, seed=0)
MODS = ("rgb", "depth", "skeleton")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return synth.render_dataset(tmp_path_factory.mktemp("synth") / "ds", **SMALL)


def test_layout_and_names(small_root):
    meta = synth.manifest(synth.SynthParams(**SMALL))
    assert (small_root / "synth.json").is_file()
    classes = sorted(p.name for p in (small_root / "rgb_l8").iterdir())
    assert classes == sorted(meta["classes"]) == sorted(a.name for a in ACTIONS[:6])
    for c in classes:
        videos = sorted(p.name for p in (small_root / "rgb_l8" / c).iterdir())
        assert videos == ["v000", "v001", "v002"]
        for v in videos:
            names = sorted(p.name for p in (small_root / "rgb_l8" / c / v).iterdir())
            assert names == [f"{k:08d}.jpg" for k in range(1, 9)]
            for m in ("depth", "skeleton"):
                assert sorted(p.name for p in (small_root / f"{m}_l8" / c / v).iterdir()) == names
            with Image.open(small_root / "rgb_l8" / c / v / names[0]) as im:
                assert im.size == (32, 32) and im.mode == "RGB" and im.format == "JPEG"
                assert not im.info.get("exif")
    assert not (small_root / synth.TMP_DIR).exists()


def test_splits_disjoint_and_listed(small_root):
    split_dir = small_root / "splits" / "synth"
    seen: dict[str, set[str]] = {}
    for which in ("train", "val", "test"):
        lines = (split_dir / f"{which}list03.txt").read_text().splitlines()
        assert lines
        for line in lines:
            c, v = line.split("/")
            assert (small_root / "rgb_l8" / c / v).is_dir()
        seen[which] = {line.split("/")[0] for line in lines}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert set().union(*seen.values()) == set(synth.class_names(6))


@pytest.mark.parametrize("classes,sizes", [(3, (2, 0, 1)), (6, (3, 1, 2)), (20, (10, 5, 5)), (24, (12, 6, 6)), (30, (15, 7, 8))])
def test_split_rule(classes, sizes):
    split = synth.split_classes(synth.class_names(classes), seed=1)
    sizes = dict(zip(("train", "val", "test"), sizes))
    sizes["val"] = classes - sizes["train"] - sizes["test"]
    assert {k: len(v) for k, v in split.items()} == sizes
    assert sorted(sum(split.values(), [])) == sorted(synth.class_names(classes))
    if classes >= 20:
        assert min(len(v) for v in split.values()) >= 5


def test_same_seed_byte_identical_any_workers(small_root, tmp_path):
    again = synth.render_dataset(tmp_path / "again", **SMALL, workers=2)
    assert tree_bytes(again) == tree_bytes(small_root)


def test_different_seed_differs(small_root, tmp_path):
    other = synth.render_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    a, b = tree_bytes(small_root), tree_bytes(other)
    frames = [k for k in a if k.endswith(".jpg")]
    assert set(frames) == {k for k in b if k.endswith(".jpg")}
    assert sum(a[k] != b[k] for k in frames) == len(frames)


def test_video_does_not_depend_on_class_count(small_root, tmp_path):
    fewer = synth.render_dataset(tmp_path / "fewer", **{**SMALL, "classes": 3, "videos_per_class": 2})
    rel = Path("rgb_l8") / "squat_down" / "v001" / "00000005.jpg"
    assert (fewer / rel).read_bytes() == (small_root / rel).read_bytes()


def test_depth_colours_near_red_far_blue():
    near, far = colour_depth(np.full((2, 2), 1.0)), colour_depth(np.full((2, 2), 10.0))
    r, g, b = (int(x) for x in near[0, 0])
    assert r >= 120 and g < 40 and b < 40  # jet's dark red
    r, g, b = (int(x) for x in far[0, 0])
    assert b >= 120 and r < 40 and g < 40  # jet's dark blue


def test_depth_actor_nearer_than_wall(small_root):
    # the skeleton image marks the actor; in the depth image the actor is redder (nearer) than the top row (wall)
    for c in synth.class_names(6):
        skel = np.asarray(Image.open(small_root / "skeleton_l8" / c / "v000" / "00000004.jpg"), np.float32)
        depth = np.asarray(Image.open(small_root / "depth_l8" / c / "v000" / "00000004.jpg"), np.float32)
        actor = skel.max(-1) > 128
        assert actor.sum() > 5
        redness = depth[..., 0] - depth[..., 2]
        assert redness[actor].mean() > redness[0].mean()


def test_reversed_and_mirrored_actions_are_exact():
    t = np.linspace(0, 1, 8)
    for spec in ACTIONS:
        joints = skeleton(spec.fn(t, 0.7, 1.0))
        assert np.isfinite(joints).all() and joints[..., 1].min() >= 0  # nobody sinks into the floor
        if spec.reverse_of:
            forward = skeleton(ACTIONS[ACTION_INDEX[spec.reverse_of]].fn(1 - t, 0.7, 1.0))
            np.testing.assert_allclose(joints, forward, atol=1e-9)
        if spec.mirror_of:
            other = skeleton(ACTIONS[ACTION_INDEX[spec.mirror_of]].fn(t, 0.7, 1.0))
            swap = np.arange(len(J))
            for name, i in J.items():
                if name.startswith(("l_", "r_")):
                    swap[i] = J[("r_" if name[0] == "l" else "l_") + name[2:]]
            np.testing.assert_allclose(joints[:, :, 0], -other[:, swap, 0], atol=1e-9)
            np.testing.assert_allclose(joints[:, :, 1:], other[:, swap, 1:], atol=1e-9)
    assert len(ACTIONS) >= 24 and len({a.name for a in ACTIONS}) == len(ACTIONS)


def _skeleton_centroids(root: Path, c: str, v: str) -> np.ndarray:
    out = []
    for p in sorted((root / "skeleton_l8" / c / v).glob("*.jpg")):
        mask = np.asarray(Image.open(p).convert("L"), np.float32) > 60
        ys, xs = np.nonzero(mask)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def test_rendered_motion_reverses(small_root):
    for v in ("v000", "v001", "v002"):
        down, up = _skeleton_centroids(small_root, "squat_down", v), _skeleton_centroids(small_root, "stand_up", v)
        assert down[-2:, 1].mean() > down[:2, 1].mean() + 1  # image y grows: the body goes down
        assert up[-2:, 1].mean() < up[:2, 1].mean() - 1
        left, right = _skeleton_centroids(small_root, "walk_left", v), _skeleton_centroids(small_root, "walk_right", v)
        assert left[-1, 0] < left[0, 0] - 2 and right[-1, 0] > right[0, 0] + 2


def _assert_complete_and_decodable(root: Path, params: dict) -> None:
    for c in synth.class_names(params["classes"]):
        for i in range(params["videos_per_class"]):
            for m in MODS:
                frames = sorted((root / f"{m}_l8" / c / f"v{i:03d}").glob("*.jpg"))
                assert len(frames) == 8
                for f in frames:
                    with Image.open(f) as im:
                        im.load()


def test_interrupted_render_is_finished_on_rerun(small_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small_root, root)
    # killed between renames: depth and skeleton in place, rgb still in the temp folder, half written
    shutil.rmtree(root / "rgb_l8" / "walk_left" / "v001")
    stale = root / synth.TMP_DIR / f"{synth._host()}-999999999-rgb-walk_left-v001"
    stale.mkdir(parents=True)
    good = (small_root / "rgb_l8" / "walk_left" / "v001" / "00000001.jpg").read_bytes()
    (stale / "00000001.jpg").write_bytes(good[: len(good) // 2])
    untouched = (root / "rgb_l8" / "squat_down" / "v000").stat().st_mtime_ns
    synth.render_dataset(root, **SMALL)
    assert not (root / synth.TMP_DIR).exists()
    assert tree_bytes(root) == tree_bytes(small_root)
    assert (root / "rgb_l8" / "squat_down" / "v000").stat().st_mtime_ns == untouched  # finished videos skipped


def test_killed_process_leaves_no_half_video(tmp_path):
    root = tmp_path / "ds"
    params = dict(classes=6, videos_per_class=40, size=64)
    cmd = [sys.executable, "-c", "from mkdcore.cli.main import main; main()", "data", "synth", "--out", str(root)]
    cmd += ["--classes", "6", "--videos-per-class", "40", "--size", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((root / "rgb_l8").glob("*/v00[2-9]")):
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not still_running:
        pytest.skip("the render finished before it could be killed")
    for video in (root / "rgb_l8").glob("*/*"):  # whatever is in place is whole
        assert len(list(video.glob("*.jpg"))) == 8
    assert not synth.dataset_complete(root, synth.SynthParams(**params))
    synth.render_dataset(root, **params)
    assert synth.dataset_complete(root, synth.SynthParams(**params))
    _assert_complete_and_decodable(root, params)
    assert not (root / synth.TMP_DIR).exists()


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    from mkdcore.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", *args])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--classes", "500"], "classes=500"),
        (["--classes", "2"], "classes=2"),
        (["--size", "8"], "size=8"),
        (["--videos-per-class", "0"], "videos_per_class=0"),
        (["--frames", "1"], "frames=1"),
        (["--workers", "0"], "workers=0"),
    ],
)
def test_cli_bad_input_one_line(tmp_path, capsys, args, needle):
    code, err = run_cli(["--out", str(tmp_path / "x"), *args], capsys)
    assert code != 0
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "rgb_l8").exists()


def test_cli_refuses_foreign_or_mismatched_root(tmp_path, small_root, capsys):
    foreign = tmp_path / "mine"
    (foreign / "rgb_l8").mkdir(parents=True)
    code, err = run_cli(["--out", str(foreign), "--classes", "6"], capsys)
    assert code != 0 and "synth.json" in err and err.count("\n") == 1
    code, err = run_cli(["--out", str(small_root), "--classes", "6", "--videos-per-class", "3", "--size", "32", "--seed", "5"], capsys)
    assert code != 0 and "seed=0" in err and "seed=5" in err and err.count("\n") == 1


def test_cli_renders_and_reports(tmp_path, capsys, small_root):
    from mkdcore.cli.main import main

    try:
        main(["data", "synth", "--out", str(tmp_path / "c"), "--classes", "6", "--videos-per-class", "3", "--size", "32"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "18 videos (18 rendered" in capsys.readouterr().out
    assert tree_bytes(tmp_path / "c") == tree_bytes(small_root)


def test_plugin_renders_when_missing_and_reuses(plugin_manager, tmp_path):
    from mkdcore.api import create

    root = tmp_path / "p"
    opts = dict(root=root, classes=3, videos_per_class=2, size=32, seed=0)
    assert create("dataset", "synthetic", **opts) == root
    params = synth.SynthParams(3, 2, 32, 0)
    assert synth.dataset_complete(root, params)
    stamp = (root / "synth.json").stat().st_mtime_ns
    assert create("dataset", "synthetic", **opts) == root
    assert (root / "synth.json").stat().st_mtime_ns == stamp  # complete: nothing rewritten
    shutil.rmtree(root / "depth_l8" / "squat_down" / "v001")  # incomplete: finished
    create("dataset", "synthetic", **opts)
    assert synth.dataset_complete(root, params)
    with pytest.raises(MkdError, match="classes"):
        create("dataset", "synthetic", root=tmp_path / "q", classes=99)


def test_next_frames_are_the_original_neighbours(small_root):
    """``rgb_next_l8`` holds, per sampled frame, the next original frame: same names and
    size, and much closer to its sampled frame than the next *sampled* frame is."""
    from mkdcore.data.derive import read_clip
    from mkdcore.data.layout import DatasetLayout
    from mkdcore.data import VideoKey

    assert synth.manifest(synth.SynthParams(**SMALL))["next_frames"] == "rgb_next_l8"
    layout = DatasetLayout(small_root)
    for c in synth.class_names(6):
        clip = read_clip(layout, VideoKey(c, "v001"))
        assert clip.next_frames is not None and clip.next_frames.shape == clip.frames.shape == (8, 32, 32, 3)
        frames, nxt = clip.frames.astype(np.float32), clip.next_frames.astype(np.float32)
        to_next = np.abs(nxt - frames).mean()
        to_sampled = np.abs(frames[1:] - frames[:-1]).mean()
        assert 0 < to_next < 0.75 * to_sampled, (c, to_next, to_sampled)


def test_next_frames_added_to_a_dataset_rendered_without(small_root, tmp_path):
    """Sampled frames do not depend on next_frames: a dataset rendered without them (or
    before the option existed) gets exactly the folder a fresh render has, nothing else changes."""
    import json

    old = synth.render_dataset(tmp_path / "old", **SMALL, next_frames=False)
    assert not (old / "rgb_next_l8").exists()
    before = tree_bytes(old)
    meta = json.loads((old / "synth.json").read_text())
    del meta["params"]["next_frames"]  # as written before the option existed
    (old / "synth.json").write_text(json.dumps(meta))
    assert not synth.dataset_complete(old, synth.SynthParams(**SMALL))
    synth.render_dataset(old, **SMALL)
    after = tree_bytes(old)
    assert {k: v for k, v in after.items() if k in before and k != "synth.json"} == {k: v for k, v in before.items() if k != "synth.json"}
    assert after == tree_bytes(small_root)
    with pytest.raises(MkdError, match="next_frames=True"):  # dropping them is a different dataset
        synth.render_dataset(old, **SMALL, next_frames=False)
