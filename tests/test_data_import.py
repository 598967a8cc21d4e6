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
    assert import_video(jobs[0], frames=8) in {"done", "skipped"}
