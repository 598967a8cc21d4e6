"""``mkd data import``: tiny PyAV-made videos, a corrupt file, resumability."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mkdcore.cli.data_import import import_videos as import_cmd
from mkdcore.data.importer import (
    find_videos,
    import_video,
    import_videos,
    uniform_indices,
)


def make_video(path: Path, n: int, w: int = 32, h: int = 24, codec: str = "mpeg4") -> None:
    """Frame i is a flat grey of value 10*i, so the sampled indices can be read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "1"} if codec == "mpeg4" else {}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def videos(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "wave hand" / "a.avi", 20)
    make_video(src / "jump" / "b.mp4", 12)
    (src / "jump" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return src


def test_import_samples_uniformly_and_lists_failures(videos, tmp_path):
    out = tmp_path / "root"
    res = CliRunner().invoke(import_cmd, [str(videos), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 1
    assert "broken.mp4" in res.output and "2 imported" in res.output
    frames = sorted((out / "rgb_l8" / "wave_hand" / "a").iterdir())
    assert [f.name for f in frames] == [f"{k:08d}.jpg" for k in range(1, 9)]
    greys = [int(np.asarray(Image.open(f)).mean().round()) for f in frames]
    expected = [10 * i for i in uniform_indices(20, 8)]
    assert max(abs(g - e) for g, e in zip(greys, expected)) <= 3
    assert not (out / "rgb_l8" / "jump" / "broken").exists()
    assert not [p for p in (out / "rgb_l8" / "jump").iterdir() if p.name.startswith(".")]


def test_resumable_and_partial_folder_redone(videos, tmp_path):
    out = tmp_path / "root"
    first = import_videos(videos, out)
    assert sorted(first.done) == ["jump/b", "wave_hand/a"] and len(first.failed) == 1
    (out / "rgb_l8" / "jump" / "b" / "00000008.jpg").unlink()  # a half-written video
    second = import_videos(videos, out)
    assert second.skipped == ["wave_hand/a"] and second.done == ["jump/b"]
    assert len(list((out / "rgb_l8" / "jump" / "b").iterdir())) == 8


def test_size_and_workers(videos, tmp_path):
    out = tmp_path / "root"
    result = import_videos(videos, out, frames=4, workers=2, size=12)
    assert len(result.done) == 2
    img = Image.open(out / "rgb_l8" / "jump" / "b" / "00000004.jpg")
    assert img.size == (16, 12)


def test_find_videos_classes(videos, tmp_path):
    jobs = find_videos(videos, tmp_path / "o")
    assert sorted((j.class_name, j.video) for j in jobs) == [("jump", "b"), ("jump", "broken"), ("wave_hand", "a")]
    assert import_video(jobs[0], frames=8).status in {"done", "skipped"}


def _main_error(argv: list[str], capsys) -> tuple[int, str]:
    """Run the ``mkd`` entry point in-process; (exit code, stderr)."""
    from mkdcore.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_folder_without_videos_is_an_error_naming_it(tmp_path, capsys):
    src = tmp_path / "videos"
    (src / "jump").mkdir(parents=True)
    (src / "jump" / "notes.txt").write_text("no video here")
    code, err = _main_error(["data", "import", str(src), "--out", str(tmp_path / "root")], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"error: no videos found under {src} (looked for <class>/<video> with suffix "
                                        ".avi, .mp4, .webm, .mkv, .mov, .m4v, .mpg, .mpeg)"]
    assert not (tmp_path / "root").exists()


def test_short_video_warns_and_min_frames_refuses(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "jump" / "short.avi", 5)
    make_video(src / "jump" / "long.avi", 12)
    out = tmp_path / "root"
    res = CliRunner().invoke(import_cmd, [str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {src / 'jump' / 'short.avi'}: only 5 frames decode; 3 of the 8 written frames "
                        "are repeats (refuse such videos with --min-frames)"]
    assert len(list((out / "rgb_l8" / "jump" / "short").iterdir())) == 8

    out2 = tmp_path / "root2"
    res = CliRunner().invoke(import_cmd, [str(src), "--out", str(out2), "--min-frames", "8"])
    assert res.exit_code == 1
    assert f"failed: {src / 'jump' / 'short.avi'}: only 5 frames decode, fewer than --min-frames 8" in res.stderr
    assert not (out2 / "rgb_l8" / "jump" / "short").exists()
    assert len(list((out2 / "rgb_l8" / "jump" / "long").iterdir())) == 8


def test_truncated_video_warning_names_what_the_container_claimed(tmp_path):
    """A file cut short: its header still claims every frame, fewer decode."""
    src = tmp_path / "videos"
    path = src / "jump" / "cut.avi"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:  # noise frames: the data, not the header, is most of the file
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for _ in range(20):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    result = import_videos(src, tmp_path / "root")
    assert result.done == ["jump/cut"], result.failed
    [(source, why)] = result.warnings
    assert source == str(path) and "(its container says 20)" in why and "repeats" in why
