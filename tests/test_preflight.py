"""What can be known before a stage trains fails before any stage trains: in
``mkd run`` (run_experiment), ``mkd submit`` and ``mkd submit --dry-run``, as one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkdcore.config import load_config
from mkdcore.data.treebuild import build_tree
from mkdcore.errors import ConfigError, DataError
from mkdcore.preflight import check_experiment, summary
from mkdcore.stages.dag import plan
from mkdcore.stages.runner import run_experiment

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture
def tree(tmp_path) -> Path:
    """3 classes x 2 videos per split, 4 frames of 16 px each (copies: tests may break one)."""
    src = tmp_path / "src"
    src.mkdir()
    for which, classes in (("train", "abc"), ("val", "def"), ("test", "ghi")):
        (src / f"{which}list03.txt").write_text("".join(f"{c}/{c}{i}\n" for c in classes for i in range(2)))
    return build_tree(tmp_path / "root", sorted(src.glob("*.txt")), "mine", frames=4, size=16, link=False)


def cfg_for(root: Path, runs: Path, *extra: str):
    return load_config(SMOKE, [f"data.root={root}", "data.split=mine", "data.synth=null",
                               f"runtime.runs_dir={runs}", *extra])


def test_clean_tree_passes(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path / "runs")
    check_experiment(cfg, plan(cfg))


def test_mfm_with_rgb_only_fails_before_any_stage_runs(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path / "runs", "modalities.names=[rgb]")
    with pytest.raises(ConfigError, match=r"fusion.module 'mfm' with modalities.names=\['rgb'\]: modalities: .*at least two"):
        run_experiment(cfg, echo=lambda m: None)
    assert not (tmp_path / "runs" / "stages").exists()  # not even the data stage ran
    # a run that does not reach fuse is fine
    check_experiment(cfg, [n for n in plan(cfg) if n.name in ("data", "teacher:rgb")])


def test_fusion_modalities_option_must_match_names(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path / "runs", "fusion.module.options.modalities=[rgb,flow]")
    with pytest.raises(ConfigError, match=r"fusion.module.options.modalities \['rgb', 'flow'\] differs from modalities.names"):
        check_experiment(cfg, plan(cfg))


def test_missing_pretrained_files_listed_together(tree, tmp_path):
    cfg = cfg_for(tree, tmp_path / "runs", f"teacher.pretrained={{rgb: {tmp_path / 'nope.pth'}, depht: {tmp_path}}}",
                  f"student.pretrained={tmp_path}")
    with pytest.raises(ConfigError) as err:
        check_experiment(cfg, plan(cfg))
    msg = str(err.value)
    assert msg.startswith("3 problems: ") and "\n" not in msg
    assert "teacher.pretrained.depht: 'depht' is not one of modalities.names" in msg
    assert f"teacher.pretrained.rgb: {tmp_path / 'nope.pth'} does not exist" in msg
    assert f"student.pretrained: {tmp_path} is not a file" in msg


def test_unsafe_split_line_and_missing_video_fail_up_front(tree, tmp_path):
    train = tree / "splits" / "mine" / "trainlist03.txt"
    train.write_text(train.read_text() + "../x\n")
    (tree / "splits" / "mine" / "testlist03.txt").write_text("g/g0\ng/g1\nh/h0\nh/h1\ni/i0\ni/gone\n")
    cfg = cfg_for(tree, tmp_path / "runs")
    with pytest.raises(DataError) as err:
        check_experiment(cfg, plan(cfg))
    msg = str(err.value)
    assert msg.startswith("2 problems: ")
    assert f"{train}:7: class name '..' is not allowed" in msg
    assert "i/gone" in msg


def test_data_stage_decodes_every_frame_and_names_every_bad_video(tree, tmp_path):
    rgb = tree / "rgb_l8"
    frame = rgb / "a" / "a0" / "00000002.jpg"
    frame.write_bytes(frame.read_bytes()[:200])  # truncated
    (rgb / "d" / "d1" / "00000004.jpg").write_bytes(b"")  # zero bytes
    (rgb / "g" / "g0" / "00000003.jpg").write_text("not an image")
    (rgb / "h" / "h1" / "00000004.jpg").unlink()  # 3 frames, data.frames is 4
    cfg = cfg_for(tree, tmp_path / "runs")
    with pytest.raises(DataError) as err:
        run_experiment(cfg, echo=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{rgb}: 4 of 18 videos cannot be read")
    assert "a/a0: unreadable frame 00000002.jpg (Image is incomplete or truncated)" in msg
    assert "d/d1: unreadable frame 00000004.jpg (empty file)" in msg
    assert "g/g0: unreadable frame 00000003.jpg (not a JPEG or PNG image)" in msg
    assert "h/h1: 3 frames, needs at least 4 (data.frames)" in msg
    data = next(n for n in plan(cfg) if n.name == "data")
    assert not data.manifest_path.exists()  # nothing downstream can start


@pytest.mark.slow
def test_verify_pool_agrees_with_serial(tree, monkeypatch):
    from mkdcore.data import verify

    (tree / "rgb_l8" / "b" / "b1" / "00000001.jpg").write_bytes(b"")
    dirs = sorted((tree / "rgb_l8").glob("*/*"))
    serial = verify.verify_videos(dirs, 4, workers=1)
    monkeypatch.setattr(verify, "POOL_MIN_VIDEOS", 0)
    assert verify.verify_videos(dirs, 4, workers=2) == serial == [(tree / "rgb_l8" / "b" / "b1", "unreadable frame 00000001.jpg (empty file)")]


def test_submit_dry_run_refuses_with_one_line(tree, tmp_path, capsys):
    from mkdcore.cli.main import main

    argv = ["submit", str(SMOKE), "--dry-run", "--set", f"data.root={tree}", "--set", "data.split=mine",
            "--set", "data.synth=null", "--set", f"runtime.runs_dir={tmp_path / 'runs'}",
            "--set", "modalities.names=[rgb]", "--set", f"student.pretrained={tmp_path / 'gone.pth'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {SMOKE}: 2 problems: fusion.module 'mfm'")
    assert f"student.pretrained: {tmp_path / 'gone.pth'} does not exist" in err[0]


def test_summary_is_one_line_with_a_count():
    assert summary(["a"]) == "a"
    assert summary([f"p{i}\nx" for i in range(7)]) == "7 problems: p0 x; p1 x; p2 x; p3 x; p4 x; and 2 more"
