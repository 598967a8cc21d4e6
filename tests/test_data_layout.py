"""Layout spellings, split resolution, frame decoding and temporal sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mkdcore.data import VideoKey
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.splits import load_split, resolve_split
from mkdcore.data.treebuild import build_tree, write_jpeg
from mkdcore.data.video import read_frames, sample_indices
from mkdcore.errors import DataError


def write_split(dir: Path, which: str, lines: list[str], split_id: str = "03") -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / f"{which}list{split_id}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("spelling", ["rgb_l8", "l8/rgb_l8", "l8"])
def test_three_rgb_spellings_and_modality_beside(tmp_path, spelling):
    rgb = tmp_path / spelling
    write_jpeg(rgb / "jump" / "v1" / "00000001.jpg")
    depth_base = tmp_path / "l8" if spelling == "l8/rgb_l8" else tmp_path
    write_jpeg(depth_base / "depth_l8" / "jump" / "v1" / "00000001.jpg")
    layout = DatasetLayout(tmp_path)
    assert layout.rgb_dir == rgb
    assert layout.classes() == ["jump"]  # depth_l8 inside bare l8/ is not a class
    assert layout.modality_dir("depth") == depth_base / "depth_l8"
    assert layout.modalities() == ["rgb", "depth"]
    key = VideoKey("jump", "v1")
    assert [p.name for p in layout.frame_paths("depth", key)] == ["00000001.jpg"]
    assert layout.frame_paths("rgb", VideoKey("jump", "nope")) == []


def test_missing_root_and_missing_rgb_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _ = DatasetLayout(tmp_path / "nothing").rgb_dir
    with pytest.raises(DataError, match="no RGB frame folder"):
        _ = DatasetLayout(tmp_path).rgb_dir


def test_split_spaces_case_and_missing(tmp_path):
    for cls, vid in [("Hurling_(sport)", "AbC_01"), ("Hurling_(sport)", "x2"), ("kick", "k1")]:
        write_jpeg(tmp_path / "rgb_l8" / cls / vid / "00000001.jpg")
    sd = tmp_path / "splits" / "mine"
    write_split(sd, "train", ["hurling (sport)/abc_01", "HURLING (SPORT)/x2", "kick/k1", ""])
    layout = DatasetLayout(tmp_path)
    index = load_split(layout, "mine", "train")
    assert index.classes == ["Hurling_(sport)", "kick"]
    assert index.videos["Hurling_(sport)"] == [VideoKey("Hurling_(sport)", "AbC_01"), VideoKey("Hurling_(sport)", "x2")]
    write_split(sd, "test", ["kick/k1", "kick/gone", "punch/p1"])
    assert resolve_split(layout, "mine", "test").missing == ["kick/gone", "punch/p1"]
    with pytest.raises(DataError, match=r"2 listed video\(s\) not found.*kick/gone") as err:
        load_split(layout, "mine", "test")
    assert "\n" not in str(err.value)


def test_split_files_fall_back_to_shipped_and_split_ids(tmp_path):
    write_jpeg(tmp_path / "rgb_l8" / "a" / "b" / "00000001.jpg")
    layout = DatasetLayout(tmp_path)
    assert layout.split_file("hmdb_ARN", "test").is_file()
    assert "mkdcore" in str(layout.split_file("hmdb_ARN", "test"))
    assert layout.split_ids("ssv2_OTAM") == ["07"]
    assert layout.resolve_split_id("ssv2_OTAM", None) == "07"
    with pytest.raises(DataError, match="no split folder"):
        layout.default_split()
    write_split(tmp_path / "splits" / "one", "train", ["a/b"])
    assert layout.default_split() == "one"
    write_split(tmp_path / "splits" / "two", "train", ["a/b"])
    with pytest.raises(DataError, match="one, two"):
        layout.default_split()


def test_standard_counts_at_index_level(tmp_path):
    """UCF101 ARN 70/10/21 and Kinetics-100 CMN 64/12/24 from the shipped files."""
    import glob

    from mkdcore.data.layout import SHIPPED_SPLITS_DIR

    expected = {"ucf_ARN": ((70, 9154), (10, 1421), (21, 2745)), "kinetics_CMN": ((64, 6400), (12, 1200), (24, 2400))}
    for split, counts in expected.items():
        root = tmp_path / split
        build_tree(root, sorted(glob.glob(str(SHIPPED_SPLITS_DIR / split / "*.txt"))), split, frames=0)
        layout = DatasetLayout(root)
        got = [(len(i.classes), i.num_videos) for i in (load_split(layout, split, w) for w in ("train", "val", "test"))]
        assert tuple(got) == counts
        sets = [set(load_split(layout, split, w).classes) for w in ("train", "val", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_read_frames_jpeg_png_and_errors(tmp_path):
    j = write_jpeg(tmp_path / "a.jpg", size=16)
    p = tmp_path / "b.png"
    arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(arr).save(p)
    clip = read_frames([j, p])
    assert clip.dtype == torch.uint8 and clip.shape == (2, 3, 16, 24)
    assert torch.equal(clip[1], torch.from_numpy(arr).permute(2, 0, 1))  # PNG is lossless
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(j.read_bytes()[:40])
    with pytest.raises(DataError, match="bad.jpg"):
        read_frames([bad])
    Image.fromarray(arr[:8]).save(tmp_path / "small.png")
    with pytest.raises(DataError, match="other frames"):
        read_frames([p, tmp_path / "small.png"])


def test_sample_indices_rules():
    rng = np.random.default_rng(0)
    assert sample_indices(8, 8, True, rng) == list(range(8))
    assert sample_indices(8, 8, False, rng) == list(range(8))
    assert sample_indices(30, 8, False, rng) == [int(x) for x in np.floor(np.linspace(1, 28, 8))]
    for _ in range(50):
        idx = sample_indices(30, 8, True, rng)
        assert len(idx) == 8 and idx == sorted(idx) and 0 <= idx[0] <= 5 and 24 <= idx[-1] <= 29
    assert sample_indices(9, 8, True, rng) == [int(x) for x in np.floor(np.linspace(0, 8, 8))]  # pad < 1
    with pytest.raises(DataError, match="v has 5 frames, needs at least 8"):
        sample_indices(5, 8, True, rng, name="v")


def test_standard_dataset_plugin_installs_shipped_split(tmp_path, plugin_manager):
    from mkdcore import api

    assert {"ucf101", "hmdb51", "kinetics100", "ssv2_small", "ssv2_full"} <= set(api.names("dataset"))
    with pytest.raises(DataError, match="does not exist"):
        api.create("dataset", "ssv2_full", root=str(tmp_path / "none"))
    write_jpeg(tmp_path / "l8" / "rgb_l8" / "a" / "b" / "00000001.jpg")
    root = api.create("dataset", "ssv2_full", root=str(tmp_path))
    assert root == tmp_path
    assert DatasetLayout(root).split_ids("ssv2_OTAM") == ["07"]
    assert (tmp_path / "splits" / "ssv2_OTAM" / "trainlist07.txt").stat().st_size > 0


@pytest.mark.parametrize("line", ["Apply Eye Makeup/v_x", "Apply_Eye_Makeup/v_x", "apply eye_makeup/V_X"])
@pytest.mark.parametrize("folder", ["Apply Eye Makeup", "Apply_Eye_Makeup"])
def test_spaces_and_underscores_match_both_ways(tmp_path, line, folder):
    """Rule: case ignored, space == underscore, on the split side and the folder side."""
    write_jpeg(tmp_path / "rgb_l8" / folder / "v_x" / "00000001.jpg")
    write_split(tmp_path / "splits" / "s", "train", [line])
    index = load_split(DatasetLayout(tmp_path), "s", "train")
    assert index.keys() == [VideoKey(folder, "v_x")]  # keyed by the folder on disk


def test_folders_differing_only_by_space_are_refused(tmp_path):
    for folder in ("Apply Eye", "apply_eye"):
        write_jpeg(tmp_path / "rgb_l8" / folder / "v" / "00000001.jpg")
    write_split(tmp_path / "splits" / "s", "train", ["Apply Eye/v"])
    with pytest.raises(DataError, match="'Apply Eye' and 'apply_eye' differ only in case or space/underscore"):
        load_split(DatasetLayout(tmp_path), "s", "train")


@pytest.mark.parametrize("bad", ["../x", "jump/../../etc", "./v1", "jump/.hidden"])
def test_unsafe_split_line_names_file_and_line(tmp_path, bad):
    write_jpeg(tmp_path / "rgb_l8" / "jump" / "v1" / "00000001.jpg")
    path = write_split(tmp_path / "splits" / "s", "train", ["jump/v1", bad])
    with pytest.raises(DataError, match=rf"^{path}:2: .* is not allowed") as err:
        load_split(DatasetLayout(tmp_path), "s", "train")
    assert "\n" not in str(err.value)


def test_empty_split_file_is_an_error_naming_it(tmp_path):
    write_jpeg(tmp_path / "rgb_l8" / "jump" / "v1" / "00000001.jpg")
    path = write_split(tmp_path / "splits" / "s", "test", ["", "  "])
    with pytest.raises(DataError, match=rf"split file {path} lists no videos"):
        load_split(DatasetLayout(tmp_path), "s", "test")


def test_read_frames_errors_name_file_and_reason(tmp_path):
    good = write_jpeg(tmp_path / "a.jpg", size=16)
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DataError, match=r"cut.jpg: .*truncated") as err:
        read_frames([good, tmp_path / "cut.jpg"])
    assert ".cpp" not in str(err.value)
    with pytest.raises(DataError, match=r"empty.jpg: empty file"):
        read_frames([tmp_path / "empty.jpg"])
    with pytest.raises(DataError, match=r"text.jpg: not a JPEG or PNG image"):
        read_frames([tmp_path / "text.jpg"])
