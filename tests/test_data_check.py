"""``mkd data check``: standard counts from the real split files and every bad input."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from mkdcore.cli.data_check import check
from mkdcore.data.checker import check_dataset, frame_problem
from mkdcore.data.layout import SHIPPED_SPLITS_DIR
from mkdcore.data.treebuild import build_tree


def small_tree(tmp_path: Path, modalities=()) -> Path:
    sd = tmp_path / "src"
    sd.mkdir()
    (sd / "trainlist03.txt").write_text("".join(f"walk/w{i}\njump/j{i}\n" for i in range(3)))
    (sd / "vallist03.txt").write_text("".join(f"clap/c{i}\n" for i in range(3)))
    (sd / "testlist03.txt").write_text("".join(f"kick/k{i}\nbow/b{i}\n" for i in range(3)))
    return build_tree(tmp_path / "root", sorted(sd.glob("*.txt")), "mine", frames=8, size=16, modalities=modalities, link=False)


def run_json(root: Path, *args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(check, [str(root), "--json", *args])
    return res.exit_code, json.loads(res.output)


def test_hmdb_real_split_counts(tmp_path):
    files = sorted(glob.glob(str(SHIPPED_SPLITS_DIR / "hmdb_ARN" / "*.txt")))
    root = build_tree(tmp_path / "hmdb", files, "hmdb_ARN", size=16)
    code, out = run_json(root)
    assert code == 0, out["errors"][:3]
    got = {w: (s["classes"], s["videos"]) for w, s in out["splits"].items()}
    assert got == {"train": (31, 4280), "val": (10, 1194), "test": (10, 1292)}
    assert out["errors"] == []
    assert set(out) == {"splits", "errors"}


def test_clean_small_tree_passes_table(tmp_path):
    root = small_tree(tmp_path, modalities=("depth",))
    res = CliRunner().invoke(check, [str(root)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "depth" in res.output


def test_unreadable_jpeg(tmp_path):
    root = small_tree(tmp_path)
    (root / "rgb_l8" / "walk" / "w1" / "00000003.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage without end")
    code, out = run_json(root)
    assert code == 1 and out["splits"]["train"]["unreadable_videos"] == 1
    assert any("walk/w1" in e and "00000003.jpg" in e for e in out["errors"])


def test_five_frame_video(tmp_path):
    root = small_tree(tmp_path)
    for k in range(6, 9):
        (root / "rgb_l8" / "kick" / "k0" / f"{k:08d}.jpg").unlink()
    code, out = run_json(root)
    assert code == 1 and out["splits"]["test"]["too_few_frames"] == 1
    assert any("kick/k0 has 5 frames" in e for e in out["errors"])


def test_missing_listed_video_and_missing_class(tmp_path):
    root = small_tree(tmp_path)
    with open(root / "splits" / "mine" / "vallist03.txt", "a") as fh:
        fh.write("clap/ghost\nwave/w0\n")
    code, out = run_json(root)
    assert code == 1 and out["splits"]["val"]["missing_videos"] == 2
    assert out["splits"]["val"]["videos"] == 3 and out["splits"]["val"]["videos_listed"] == 5
    assert any("clap/ghost" in e for e in out["errors"]) and any("class folder wave" in e for e in out["errors"])


def test_empty_class_folder(tmp_path):
    root = small_tree(tmp_path)
    (root / "rgb_l8" / "idle").mkdir()
    code, out = run_json(root)
    assert code == 1 and any("empty class folder" in e and "idle" in e for e in out["errors"])


def test_modality_mismatch(tmp_path):
    root = small_tree(tmp_path, modalities=("depth",))
    (root / "depth_l8" / "jump" / "j2" / "00000008.jpg").unlink()
    code, out = run_json(root)
    assert code == 1 and out["splits"]["train"]["modality_mismatch"] == 1
    assert any("depth_l8 video jump/j2" in e for e in out["errors"])


def test_feature_of_wrong_shape(tmp_path):
    root = small_tree(tmp_path)
    fdir = root / "feature" / "mm"
    for cls, vid in [(c, f"{c[0]}{i}") for c in ("walk", "jump", "clap", "kick", "bow") for i in range(3)]:
        (fdir / cls).mkdir(parents=True, exist_ok=True)
        np.save(fdir / cls / f"{vid}.npy", np.zeros((1, 8, 4), np.float32))
    assert run_json(root)[0] == 0
    np.save(fdir / "bow" / "b1.npy", np.zeros((7, 4), np.float32))
    code, out = run_json(root)
    assert code == 1 and out["splits"]["test"]["bad_features"] == 1
    assert any("bow/b1" in e and "(7, 4)" in e for e in out["errors"])


def test_overlapping_classes_and_missing_split_are_errors(tmp_path):
    root = small_tree(tmp_path)
    with open(root / "splits" / "mine" / "testlist03.txt", "a") as fh:
        fh.write("walk/w0\n")
    assert any("classes in both train and test: walk" in e for e in check_dataset(root).errors)
    (root / "splits" / "mine" / "trainlist03.txt").unlink()
    assert any("trainlist03.txt does not exist" in e for e in check_dataset(root).errors)


def test_frame_problem_signatures(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"")
    assert frame_problem(p) == "empty file"
    p.write_bytes(b"GIF89a....")
    assert "not a JPEG" in frame_problem(p)


def test_cli_one_line_error_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdcore.cli.main", "data", "check", str(tmp_path / "nope")],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: dataset root {tmp_path / 'nope'} does not exist"]


def test_empty_split_file_is_an_error_not_ok(tmp_path):
    root = small_tree(tmp_path)
    empty = root / "splits" / "mine" / "vallist03.txt"
    empty.write_text("\n")
    code, out = run_json(root)
    assert code == 1
    assert f"split file {empty} lists no videos (expected '<class>/<video>' lines)" in out["errors"]


def test_class_folder_with_spaces_matches_its_split_line(tmp_path):
    root = small_tree(tmp_path)
    (root / "rgb_l8" / "kick").rename(root / "rgb_l8" / "Kick Ball")
    split = root / "splits" / "mine" / "testlist03.txt"
    split.write_text(split.read_text().replace("kick/", "Kick_Ball/"))
    code, out = run_json(root)
    assert code == 0, out["errors"]
    assert out["splits"]["test"]["videos"] == 6
