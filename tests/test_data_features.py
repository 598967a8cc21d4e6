"""FeatureStore spellings and errors; the episode loader with frames and features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkdcore.data import VideoKey
from mkdcore.data.episodes import EpisodeSampler
from mkdcore.data.features import FeatureStore
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.loader import EpisodeDataset, episode_loader
from mkdcore.data.splits import load_split
from mkdcore.data.transforms import ClipTransform
from mkdcore.data.treebuild import build_tree
from mkdcore.errors import DataError

KEY = VideoKey("jump", "v1")


def test_both_spellings_squeeze_and_atomic_save(tmp_path):
    store = FeatureStore(tmp_path, frames=8, dim=4)
    arr = np.arange(32, dtype=np.float32).reshape(1, 8, 4)
    (tmp_path / "jump" / "v1").mkdir(parents=True)
    np.save(tmp_path / "jump" / "v1" / "f.npy", arr)
    assert store.load(KEY).shape == (8, 4)
    path = store.save(KEY, arr[0] + 1)
    assert path == tmp_path / "jump" / "v1.npy" and store.path(KEY) == path
    assert np.array_equal(store.load(KEY), arr[0] + 1)
    assert [p.name for p in (tmp_path / "jump").iterdir() if p.name.startswith(".")] == []


def test_missing_and_misshaped_name_the_video(tmp_path):
    store = FeatureStore(tmp_path, frames=8, dim=4)
    with pytest.raises(DataError, match="no feature for video jump/v1"):
        store.load(KEY)
    (tmp_path / "jump").mkdir()
    np.save(tmp_path / "jump" / "v1.npy", np.zeros((7, 4)))
    with pytest.raises(DataError, match=r"video jump/v1 has shape \(7, 4\), expected \(8, 4\)"):
        store.load(KEY)
    with pytest.raises(DataError, match="jump/v1"):
        store.save(KEY, np.zeros((8, 5)))
    (tmp_path / "jump" / "v1.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="unreadable"):
        store.load(KEY)


@pytest.fixture
def tree(tmp_path):
    sd = tmp_path / "src"
    sd.mkdir()
    (sd / "trainlist03.txt").write_text("".join(f"c{c}/v{c}_{v}\n" for c in range(4) for v in range(4)))
    root = build_tree(tmp_path / "root", [sd / "trainlist03.txt"], "s", frames=10, size=16, modalities=("depth",), link=False)
    layout = DatasetLayout(root)
    index = load_split(layout, "s", "train")
    store = FeatureStore(root / "feature" / "mm", frames=8, dim=6)
    for k in index.keys():  # noqa: SIM118 (SplitIndex.keys is a method, not a dict)
        store.save(k, np.full((8, 6), hash(k) % 97, np.float32))
    return layout, index, store


def test_episode_dataset_item(tree):
    layout, index, store = tree
    sampler = EpisodeSampler(index, way=3, shot=2, query=1, seed=0)
    ds = EpisodeDataset(layout, index, sampler, ["rgb", "depth"], ClipTransform(16, 12, train=True), {"mm": store}, num_episodes=4)
    item = ds[0]
    assert item["support_frames"].shape == (6, 8, 3, 12, 12) and item["query_frames"].shape == (3, 8, 3, 12, 12)
    assert torch.equal(item["frames"]["depth"]["support"], item["frames"]["rgb"]["support"])  # same image, same crop
    assert item["support_labels"].dtype == torch.long and item["query_labels"].tolist() == sampler.episode(0).query_labels
    assert item["features"]["mm"]["support"].shape == (6, 8, 6)
    for k, f in zip(item["query_keys"], item["features"]["mm"]["query"]):
        assert float(f[0, 0]) == hash(k) % 97  # features follow the key, not the position
    assert len(ds) == 4 and item["classes"] == sampler.episode(0).classes


def test_loader_reproducible_for_any_worker_count(tree):
    layout, index, _ = tree
    def run(workers):
        sampler = EpisodeSampler(index, way=2, shot=1, query=1, seed=5)
        ds = EpisodeDataset(layout, index, sampler, ["rgb"], ClipTransform(16, 8, train=True), num_episodes=4)
        return [(b["support_keys"], b["support_frames"]) for b in episode_loader(ds, num_workers=workers)]
    a, b = run(0), run(2)
    assert [k for k, _ in a] == [k for k, _ in b]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_short_video_in_an_episode_is_an_error(tree):
    layout, index, _ = tree
    for f in sorted((layout.rgb_dir / "c0" / "v0_0").iterdir())[5:]:
        f.unlink()
    ds = EpisodeDataset(layout, index, [EpisodeSampler(index, 4, 4, 0, seed=0).episode(0)], ["rgb"])
    with pytest.raises(DataError, match="c0/v0_0 has 5 frames, needs at least 8"):
        ds[0]
