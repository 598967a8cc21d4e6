"""`mkd predict` and `mkd support build` on the session's finished smoke experiment.

Clips are written here with OpenCV (a coloured shape moving one way per class); the
smoke dataset's frame folders serve to prove that predict reads clips exactly as the
pipeline's test-time loader does. Commands go through the console entry point, so bad
input is checked as a user sees it: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mkdcore.testing import run_cli

#: class -> (BGR colour, shape, direction): appearance and motion both tell them apart
SHAPES = {"blue_bar": ((255, 0, 0), "bar", (1, 1)), "green_square": ((0, 255, 0), "square", (0, 1)),
          "red_circle": ((0, 0, 255), "circle", (1, 0))}
#: unequal shots per class, on purpose
SHOTS = {"blue_bar": 2, "green_square": 1, "red_circle": 3}
QUERIES = 2


def write_clip(path: Path, colour: tuple[int, int, int], shape: str, direction: tuple[int, int], seed: int,
               frames: int = 12, size: int = 48) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8, (size, size))
    x0, y0 = (int(v) for v in rng.integers(6, 18, 2))
    for t in range(frames):
        img = np.full((size, size, 3), 30, np.uint8)
        x, y = x0 + direction[0] * 2 * t, y0 + direction[1] * 2 * t
        if shape == "circle":
            cv2.circle(img, (x, y), 7, colour, -1)
        elif shape == "square":
            cv2.rectangle(img, (x - 6, y - 6), (x + 6, y + 6), colour, -1)
        else:
            cv2.rectangle(img, (x - 10, y - 3), (x + 10, y + 3), colour, -1)
        writer.write(img)
    writer.release()
    return path


@dataclass
class Setup:
    ws: object  # tests.faults.workspace.Workspace
    support: Path
    queries: list[Path]
    tmp: Path

    def stage(self, name: str) -> Path:
        return self.ws.stage(name)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def setup(smoke_template: Path, tmp_path_factory) -> Setup:
    from tests.faults.workspace import fresh

    tmp = tmp_path_factory.mktemp("predict")
    support, queries, seed = tmp / "support", [], 0
    for cls, (colour, shape, direction) in SHAPES.items():
        (support / cls).mkdir(parents=True)
        for i in range(SHOTS[cls]):
            seed += 1
            write_clip(support / cls / f"ex{i}.avi", colour, shape, direction, seed)
        for i in range(QUERIES):
            seed += 1
            queries.append(write_clip(tmp / f"{cls}_{i}.avi", colour, shape, direction, seed))
    return Setup(fresh(smoke_template), support, queries, tmp)


def predictions(*args: object) -> list[dict]:
    code, out, err = run_cli("predict", *args, "--json", "--device", "cpu")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def one_error_line(*args: object) -> str:
    code, _, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


# ----------------------------------------------------------------- predictions
@pytest.mark.slow
def test_trained_model_ranks_opencv_clips_above_chance(setup: Setup):
    """The smoke rgb teacher (trained 4 tasks) on video files with unequal shots: top-1
    well above chance (1/3). (The smoke *student* is at chance on any clips: its 4 training
    tasks leave BatchNorm's running statistics at their initial values and its features
    nearly constant; see test_predict_equals_the_pipelines_forward for the student.)"""
    got = predictions(setup.stage("teacher:rgb"), *setup.queries, "--support", setup.support, "--top-k", "3")
    assert [p["query"] for p in got] == [str(q) for q in setup.queries]
    for p in got:
        assert sorted(t["class"] for t in p["top"]) == sorted(SHAPES)
        assert abs(sum(t["score"] for t in p["top"]) - 1) < 1e-5  # softmax over all 3 classes
        assert [t["score"] for t in p["top"]] == sorted((t["score"] for t in p["top"]), reverse=True)
    right = sum(Path(p["query"]).name.startswith(p["top"][0]["class"]) for p in got)
    assert right >= 4, got  # chance: 2 of 6


@pytest.mark.slow
def test_predict_equals_the_pipelines_forward(setup: Setup):
    """Frame folders of a frozen test episode: predict's logits are the model's own
    forward on the clips the pipeline's test loader makes (same sampling, resize, crop)."""
    from mkdcore.config import load_config
    from mkdcore.data.episodes import load_episodes
    from mkdcore.data.loader import EpisodeDataset
    from mkdcore.models.folder import load_model
    from mkdcore.predict.clips import read_clip
    from mkdcore.predict.model import load_predictor
    from mkdcore.predict.predict import encode_query
    from mkdcore.predict.support import build_support
    from mkdcore.stages.dataset import layout_of, transform_of

    ws = setup.ws
    cfg = load_config(ws.cfg, [])  # type: ignore[attr-defined]
    layout = layout_of(cfg)
    ep = load_episodes(ws.episodes)[0][0]  # type: ignore[attr-defined]
    folder = setup.tmp / "episode_support"
    for key in ep.support:
        shutil.copytree(layout.video_dir("rgb", key), folder / key.class_name / key.video)
    student = setup.stage("student:lite-mkd")
    predictor = load_predictor(student, "cpu")
    support = build_support(predictor, folder)
    ours = torch.cat([predictor.head(support.features, support.labels,
                                     encode_query(predictor, layout.video_dir("rgb", k)), support.way) for k in ep.query])

    item = EpisodeDataset(layout, None, [ep], ["rgb"], transform_of(cfg, train=False), frames=cfg.data.frames)[0]
    model, _ = load_model(student / "model", "cpu")
    with torch.no_grad():
        theirs = model(item["support_frames"], item["support_labels"], item["query_frames"])["logits"]
    # the very tensors the test loader makes (the smoke student's logits barely depend on
    # its input, so the clips themselves are compared, exactly)
    for i, key in enumerate(ep.query):
        ours_clip = predictor.contract.transform()({"x": read_clip(layout.video_dir("rgb", key), cfg.data.frames)})["x"]
        assert torch.equal(ours_clip, item["query_frames"][i]), key
    order = [ep.classes.index(c) for c in support.classes]  # our labels are sorted class names
    torch.testing.assert_close(ours, theirs[:, order], atol=1e-5, rtol=1e-4)

    code, out, err = run_cli("predict", student, layout.video_dir("rgb", ep.query[0]), setup.queries[0],
                             "--support", folder, "--top-k", "2")
    assert code == 0, err
    lines = out.splitlines()  # per query: its path, then "  1. class  score" lines
    assert lines[0] == str(layout.video_dir("rgb", ep.query[0])) and lines[1].lstrip().startswith("1. ")
    assert len(lines) == 6 and lines[3] == str(setup.queries[0])


@pytest.mark.slow
def test_support_file_gives_the_same_predictions_and_refuses_another_model(setup: Setup):
    teacher, npz = setup.stage("teacher:rgb"), setup.tmp / "support.npz"
    code, out, err = run_cli("support", "build", setup.support, "--model", teacher, "-o", npz, "--device", "cpu")
    assert code == 0, err
    assert "3 classes, 6 clips (blue_bar 2, green_square 1, red_circle 3)" in out
    assert predictions(teacher, *setup.queries, "--support", npz) == \
        predictions(teacher, *setup.queries, "--support", setup.support)
    line = one_error_line("predict", setup.stage("student:lite-mkd"), setup.queries[0], "--support", npz)
    assert "computed by another model" in line and "mkd support build" in line
    (setup.tmp / "garbage.npz").write_bytes(b"not a zip file")
    assert "cannot be read" in one_error_line("predict", teacher, setup.queries[0], "--support", setup.tmp / "garbage.npz")


@pytest.mark.slow
def test_onnx_export_ranks_like_the_eager_model(setup: Setup):
    pytest.importorskip("onnxruntime")
    teacher, out = setup.stage("teacher:rgb"), setup.tmp / "onnx"
    code, _, err = run_cli("export", teacher, "--format", "onnx", "--way", "3", "--shot", "2", "-o", out)
    assert code == 0, err
    eager = predictions(teacher, *setup.queries, "--support", setup.support, "--top-k", "3")
    onnx = predictions(out, *setup.queries, "--support", setup.support, "--top-k", "3")
    for e, o in zip(eager, onnx, strict=True):
        assert [t["class"] for t in e["top"]] == [t["class"] for t in o["top"]]
        assert np.allclose([t["score"] for t in e["top"]], [t["score"] for t in o["top"]], atol=1e-6)


# ----------------------------------------------------------------- bad input
@pytest.mark.slow
def test_bad_input_is_one_line_each(setup: Setup):
    teacher, tmp, q = setup.stage("teacher:rgb"), setup.tmp / "bad", setup.queries[0]
    blue = setup.support / "blue_bar"

    def support_of(name: str, classes: dict[str, list[Path]]) -> Path:
        root = tmp / name
        for cls, clips in classes.items():
            (root / cls).mkdir(parents=True)
            for clip in clips:
                (shutil.copytree if clip.is_dir() else shutil.copy)(clip, root / cls / clip.name)
        return root

    def error(*args: object) -> str:
        return one_error_line("predict", teacher, *args)

    one = support_of("one", {"blue_bar": [blue / "ex0.avi"]})
    assert "needs at least 2 class folders, found only 'blue_bar'" in error(q, "--support", one)
    empty = support_of("empty", {"blue_bar": [blue / "ex0.avi"], "nothing": []})
    assert "nothing has no example clips" in error(q, "--support", empty)
    broken = support_of("broken", {"blue_bar": [blue / "ex0.avi"], "red": [blue / "ex1.avi"]})
    (broken / "red" / "ex1.avi").write_bytes(b"\x00garbage, not a video" * 50)
    assert "cannot decode video" in error(q, "--support", broken) and "ex1.avi" in error(q, "--support", broken)
    unsafe = support_of("unsafe", {"blue_bar": [blue / "ex0.avi"], "bad\tname": [blue / "ex1.avi"]})
    assert "class name 'bad\\tname' is not allowed" in error(q, "--support", unsafe)
    # the model reads 4 frames; a frame folder with 2 cannot be sampled
    short = tmp / "short"
    short.mkdir()
    src = sorted((setup.ws.data / "rgb_l8").glob("*/*/00000001.jpg"))[0].parent  # type: ignore[attr-defined]
    for name in ("00000001.jpg", "00000002.jpg"):
        shutil.copy(src / name, short / name)
    assert "has 2 frames, needs at least 4" in error(short, "--support", setup.support)
    nocard = tmp / "nocard"
    nocard.mkdir()
    assert "no model.json" in one_error_line("predict", nocard, q, "--support", setup.support)
    assert "does not exist" in error(tmp / "missing.mp4", "--support", setup.support)
