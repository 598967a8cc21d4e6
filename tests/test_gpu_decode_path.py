"""The GPU data path (issue 14), run on the CPU: workers read JPEG bytes and draw the
random parameters, the main process decodes the episode in one batched call and applies
the transform there. With ``device="cpu"`` it must give exactly today's tensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mkdcore.data import VideoKey
from mkdcore.data.device_decode import EncodedClips, decode_item, resolve_decode
from mkdcore.data.episodes import EpisodeSampler
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.loader import EpisodeDataset, OrderedEpisodes
from mkdcore.data.splits import load_split
from mkdcore.data.transforms import ClipTransform
from mkdcore.errors import DataError
from mkdcore.stages.scoring import chunk_frames, extract_backbone_features
from mkdcore.testing import tiny_dataset

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12-frame videos (so training jitters the frame indices), depth frames as PNG (they
    stay on the CPU path inside an episode whose RGB is decoded on the device)."""
    root = tiny_dataset(tmp_path_factory.mktemp("gpu_decode"), classes=3, videos=3, frames=12, size=40, next_frames=False)
    for jpg in sorted((root / "depth_l8").rglob("*.jpg")):
        with Image.open(jpg) as img:
            img.save(jpg.with_suffix(".png"))
        jpg.unlink()
    return root


def datasets(root: Path, train: bool, normalize: str = "none", modalities: tuple[str, ...] = ("rgb", "depth")) -> tuple[EpisodeDataset, EpisodeDataset]:
    layout = DatasetLayout(root)
    index = load_split(layout, layout.default_split(), "train")
    transform = ClipTransform(resize=36, crop=32, train=train, normalize=normalize)  # 40 px -> 36: resampling matters

    def make(decode: str) -> EpisodeDataset:
        sampler = EpisodeSampler(index, way=2, shot=2, query=1, seed=3)
        return EpisodeDataset(layout, index, sampler, list(modalities), transform, frames=8, num_episodes=20, seed=3, decode=decode)  # type: ignore[arg-type]

    return make("cpu"), make("cuda")


def assert_same_item(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for m, sides in a["frames"].items():
        for side, x in sides.items():
            y = b["frames"][m][side]
            assert x.shape == y.shape and x.dtype == y.dtype
            assert torch.equal(x, y), f"{m}/{side} differs by {float((x - y).abs().max())}"
    assert torch.equal(a["support_frames"], b["support_frames"]) and torch.equal(a["query_frames"], b["query_frames"])
    assert torch.equal(a["support_labels"], b["support_labels"]) and a["support_keys"] == b["support_keys"]


@pytest.mark.parametrize("train,normalize", [(True, "none"), (True, "imagenet"), (False, "none")])
def test_bytes_then_decode_equals_the_cpu_path(data: Path, train: bool, normalize: str) -> None:
    cpu, enc = datasets(data, train, normalize)
    for i in (0, 1, 5):
        raw = enc[i]
        assert "frames" not in raw
        parts = raw["encoded"].parts
        assert isinstance(parts["rgb"]["support"], EncodedClips)  # JPEG: bytes only in the worker
        assert parts["depth"]["support"].dtype == torch.float32  # PNG: decoded in the worker
        assert_same_item(cpu[i], decode_item(raw, CPU))


def test_training_draws_differ_between_episodes_and_follow_the_seed(data: Path) -> None:
    """The comparison above is not trivially true: crops, flips and frame indices vary."""
    _, enc = datasets(data, train=True)
    params = {p for i in range(6) for p in enc[i]["encoded"].parts["rgb"]["support"].params}
    assert len({p[:2] for p in params}) > 3 and {p[2] for p in params} == {True, False}
    again = datasets(data, train=True)[1]
    assert enc[4]["encoded"].parts["rgb"]["query"].params == again[4]["encoded"].parts["rgb"]["query"].params


def test_ordered_episodes_decode_on_their_device_through_a_worker(data: Path) -> None:
    """Items cross a worker process (pickled) and come back decoded by OrderedEpisodes."""
    cpu, enc = datasets(data, train=True, modalities=("rgb",))
    reader = OrderedEpisodes(enc, num_workers=1, device=CPU)
    for i in (2, 3):
        assert_same_item(cpu[i], reader.get(i))


def test_apply_many_equals_apply_per_clip() -> None:
    g = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=g) for h, w in ((40, 48), (40, 48), (30, 44), (40, 48))]
    params = [(0.1, 0.9, True), (0.5, 0.5, False), (0.7, 0.2, True), (1.0, 0.0, False)]
    t = ClipTransform(resize=28, crop=24, train=True, normalize="imagenet")
    want = torch.stack([t.apply(c, *p) for c, p in zip(clips, params)])
    assert torch.equal(t.apply_many(clips, params), want)


def test_auto_picks_cpu_on_a_cpu_stage_and_cuda_falls_back_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_decode("auto", CPU) == "cpu"
    assert resolve_decode("cpu", CPU) == "cpu"
    assert resolve_decode("cuda", "cpu") == "cpu"
    assert resolve_decode("cuda", "cpu") == "cpu"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: runtime.decode: cuda, but the stage runs on cpu")


def test_runtime_decode_is_a_config_setting() -> None:
    from mkdcore.config import RuntimeConfig

    assert RuntimeConfig().decode == "auto"
    with pytest.raises(ValueError, match="decode"):
        RuntimeConfig(decode="gpu")  # type: ignore[arg-type]


def test_a_broken_jpeg_is_the_same_one_line_error_on_both_paths(data: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data, root)
    layout = DatasetLayout(root)
    for video in (root / "rgb_l8").glob("*/*"):  # eval indices of 12 frames use file 1 (of 0..11)
        frame = sorted(video.glob("*.jpg"))[1]
        frame.write_bytes(frame.read_bytes()[:300])
    cpu, enc = datasets(root, train=False, modalities=("rgb",))
    with pytest.raises(DataError) as on_cpu:
        cpu[0]
    raw = enc[0]  # the worker only reads bytes: the decoder finds the damage
    with pytest.raises(DataError) as on_device:
        decode_item(raw, CPU)
    message = str(on_cpu.value)
    assert message == str(on_device.value) and "\n" not in message
    assert message.startswith("cannot decode frame ") and str(root / "rgb_l8") in message
    key = VideoKey(*Path(message.split()[3].rstrip(":")).parts[-3:-1])
    assert layout.frame_paths("rgb", key)[1].name in message


class TinyBackbone(torch.nn.Module):
    out_dim = 3

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x.mean(dim=(2, 3)) * 2.0, "features_2": x.amax(dim=(2, 3))}


def test_extraction_bytes_path_equals_cpu_path_and_batches(data: Path) -> None:
    layout = DatasetLayout(data)
    keys = load_split(layout, layout.default_split(), "train").keys()
    t = ClipTransform(resize=36, crop=32, train=False)
    a = chunk_frames(layout, keys, "rgb", t, 8, CPU, "cpu")()
    b = chunk_frames(layout, keys, "rgb", t, 8, CPU, "cuda")()
    assert a.shape == (len(keys) * 8, 3, 32, 32) and torch.equal(a, b)
    seen: list[int] = []
    one = dict(extract_backbone_features(TinyBackbone(), layout, keys, "rgb", t, 8, CPU, batch_frames=16, on_video=seen.append))
    big = dict(extract_backbone_features(TinyBackbone(), layout, keys, "rgb", t, 8, CPU, batch_frames=1000))
    assert seen == [2] * (len(keys) // 2) + [1] * (len(keys) % 2)
    assert list(one) == keys
    for k in keys:
        for branch in ("features", "features_2"):
            assert one[k][branch].shape == (8, 3)
            np.testing.assert_array_equal(one[k][branch], big[k][branch])
    k = keys[1]
    np.testing.assert_allclose(one[k]["features"], (a[8:16].mean(dim=(2, 3)) * 2).numpy(), rtol=1e-6)


def test_gpu_decode_check_script_runs_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The script's main() in this process (torch is loaded already); the script as a
    process of its own runs in tests/test_speed.py's ``gpu_check.sh --cpu`` test."""
    spec = importlib.util.spec_from_file_location("gpu_decode_check", ROOT / "benchmarks" / "gpu_decode_check.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--episodes", "2", "--size", "48", "--frames", "4", "--way", "2", "--shot", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    cpu_line = next(line for line in lines if line.startswith("cpu decode:"))
    assert float(cpu_line.split()[2]) > 0 and "frames/s" in cpu_line
    if not torch.cuda.is_available():
        assert any(line.startswith("no CUDA") for line in lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_pixels_match_within_decoder_tolerance_and_bytes_arrive_pinned(data: Path) -> None:
    """nvJPEG and the CUDA resize differ from libjpeg-turbo and the CPU resize by rounding:
    1.4/255 on average on an H200 (2026-11-26), more at the stick figures' sharp edges."""
    from mkdcore.data.loader import episode_loader

    cuda = torch.device("cuda")
    assert resolve_decode("auto", cuda) == "cuda"
    cpu, enc = datasets(data, train=True, modalities=("rgb",))
    for i in (0, 1):
        a, b = cpu[i], decode_item(enc[i], cuda)
        assert b["support_frames"].device.type == "cuda"
        diff = (a["support_frames"] - b["support_frames"].cpu()).abs()
        assert float(diff.mean()) < 4 / 255
    raw = next(iter(episode_loader(enc, 1, cuda)))
    assert raw["encoded"].parts["rgb"]["support"].data.is_pinned()
