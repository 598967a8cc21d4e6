"""Episode sampler properties and frozen episode files."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from mkdcore.cli.data_episodes import episodes as episodes_cmd
from mkdcore.data import VideoKey
from mkdcore.data.episodes import EpisodeSampler, load_episodes, save_episodes
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.splits import SplitIndex, load_split
from mkdcore.data.treebuild import build_tree
from mkdcore.errors import DataError


def make_index(classes: int, videos: int, prefix: str = "c") -> SplitIndex:
    names = [f"{prefix}{i:02d}" for i in range(classes)]
    return SplitIndex(names, {c: [VideoKey(c, f"{c}_v{j:03d}") for j in range(videos)] for c in names})


@pytest.mark.parametrize("way,shot,query", [(5, 1, 1), (5, 5, 5), (3, 2, 4)])
def test_k_plus_q_distinct_and_labels_by_class(way, shot, query):
    sampler = EpisodeSampler(make_index(12, 12), way=way, shot=shot, query=query, seed=3)
    for i in range(40):
        ep = sampler.episode(i)
        assert len(set(ep.classes)) == way
        assert len(ep.support) == way * shot and len(ep.query) == way * query
        # labels are defined by class, whatever the (shuffled) position
        for key, lab in zip(ep.support + ep.query, ep.support_labels + ep.query_labels):
            assert key.class_name == ep.classes[lab]
        assert Counter(ep.support_labels) == {c: shot for c in range(way)}
        assert Counter(ep.query_labels) == {c: query for c in range(way)}
        for c in ep.classes:
            chosen = [k for k in ep.support + ep.query if k.class_name == c]
            assert len(set(chosen)) == shot + query
        assert not set(ep.support) & set(ep.query)


def test_shuffled_positions_are_not_class_major():
    sampler = EpisodeSampler(make_index(10, 10), way=5, shot=5, query=2, seed=0)
    assert any(sampler.episode(i).support_labels != sorted(sampler.episode(i).support_labels) for i in range(10))


def test_same_seed_same_episodes_other_seed_differs():
    index = make_index(20, 15)
    a = EpisodeSampler(index, 5, 5, 1, seed=7)
    b = EpisodeSampler(index, 5, 5, 1, seed=7)
    assert [a.sample() for _ in range(20)] == b.take(20)
    assert EpisodeSampler(index, 5, 5, 1, seed=8).take(20) != b.take(20)
    assert a.episode(17) == b.episode(17)  # random access equals the sequence


def test_classes_come_from_the_split_only(tmp_path):
    sd = tmp_path / "src"
    sd.mkdir()
    for which, prefix in [("train", "tr"), ("val", "va"), ("test", "te")]:
        (sd / f"{which}list03.txt").write_text("".join(f"{prefix}{c}/{prefix}{c}_{v}\n" for c in range(6) for v in range(4)))
    root = build_tree(tmp_path / "root", sorted(sd.glob("*.txt")), "s", frames=0)
    layout = DatasetLayout(root)
    seen = {}
    for which in ("train", "val", "test"):
        index = load_split(layout, which=which, split="s")
        sampler = EpisodeSampler(index, way=5, shot=2, query=2, seed=0)
        seen[which] = {c for i in range(30) for c in sampler.episode(i).classes}
        assert seen[which] <= set(index.classes)
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_impossible_episode_shapes_are_errors():
    with pytest.raises(DataError, match="6-way episodes need 6 classes, the split has 5"):
        EpisodeSampler(make_index(5, 10), way=6)
    with pytest.raises(DataError, match="class c00 has 4 videos"):
        EpisodeSampler(make_index(5, 4), way=5, shot=3, query=2)


def test_save_load_roundtrip_and_bad_file(tmp_path):
    eps = EpisodeSampler(make_index(8, 8), 5, 2, 1, seed=1).take(5)
    path = save_episodes(tmp_path / "e.json", eps, {"seed": 1})
    loaded, meta = load_episodes(path)
    assert loaded == eps and meta == {"seed": 1, "n": 5}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        load_episodes(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(DataError, match="not an mkd episode file"):
        load_episodes(tmp_path / "other.json")


def test_episodes_command_freezes_reproducibly(tmp_path):
    sd = tmp_path / "src"
    sd.mkdir()
    for which in ("train", "val", "test"):
        (sd / f"{which}list03.txt").write_text("".join(f"{which}{c}/v{v}\n" for c in range(5) for v in range(3)))
    root = build_tree(tmp_path / "root", sorted(sd.glob("*.txt")), "s", frames=0)
    outs = []
    for name in ("a.json", "b.json"):
        res = CliRunner().invoke(episodes_cmd, [str(root), "--split", "test", "--n", "50", "--seed", "0", "--out", str(tmp_path / name), "--shot", "2"])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    eps, meta = load_episodes(tmp_path / "a.json")
    assert len(eps) == 50 and meta["way"] == 5 and meta["shot"] == 2 and meta["query"] == 1 and meta["split"] == "test"
    assert meta["dataset"] == "root" and meta["split_name"] == "s" and meta["n"] == 50
    assert all(k.class_name.startswith("test") for e in eps for k in e.support + e.query)
