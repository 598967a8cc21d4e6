"""Distilling from released teacher files (`teacher: {features, checkpoint}`): a fake
released tree (random features in the original's `<class>/<video>/feature.npy` layout, an
original-format MFM checkpoint) trains and evaluates a Lite-MKD student with no derive,
teacher or fuse stage; bad trees are one line; replacing the files makes it stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mkdcore.config import config_from_dict
from mkdcore.data.layout import DatasetLayout
from mkdcore.data.splits import load_split
from mkdcore.errors import ConfigError, DataError
from mkdcore.stages.dag import plan
from mkdcore.testing import TRAIN_CLASSES, tiny_dataset
from tests.original_checkpoints import original_state, save_original

DIM, OUT, FRAMES = 16, 8, 8
TEACHER_KINDS = {"derive", "teacher", "features", "fuse", "mm_features"}


def released_tree(tmp_path: Path) -> Path:
    """A tiny dataset with the seed's released files: feature/mm_features (one
    (1, 8, 16) float32 feature.npy per train and test video, as the original extracts:
    not val) and teacher_model/checkpoint25000.pt (a scaled original MFM checkpoint)."""
    root = tiny_dataset(tmp_path, classes=TRAIN_CLASSES, videos=2, frames=FRAMES, size=40)
    rng = np.random.default_rng(0)
    for which in ("train", "test"):
        for key in load_split(DatasetLayout(root), "synth", which).keys():
            folder = root / "feature" / "mm_features" / key.class_name / key.video
            folder.mkdir(parents=True)
            np.save(folder / "feature.npy", rng.standard_normal((1, FRAMES, DIM)).astype(np.float32))
    (root / "teacher_model").mkdir()
    save_original(root / "teacher_model" / "checkpoint25000.pt", original_state("teacher_mfm", DIM, OUT), "teacher", 25000)
    return root


def config(root: Path, runs: Path, **teacher: str):
    training = {"lr": 0.001, "tasks": 2, "tasks_per_batch": 1, "checkpoint_every": 2, "val_every": 2, "val_episodes": 2}
    return config_from_dict({
        "name": "released",
        "data": {"root": str(root), "split": "synth", "frames": FRAMES, "resize": 36, "crop": 32},
        "episodes": {"way": 2, "shot": 1, "query_train": 1, "query_test": 1},
        "teacher": {"query_train": 1, **(teacher or {"features": "feature/mm_features", "checkpoint": "teacher_model"})},
        "fusion": {"query_train": 1},
        "student": {"backbone": {"name": "mobilenetv3_small", "options": {"projection": "2fc", "out_dim": DIM}},
                    "head": {"name": "trx", "options": {"temporal_set": [2], "out_dim": OUT}}},
        "distillation": {"distiller": {"name": "d2m"}, "baseline": None},
        "training": training,
        "evaluation": {"episodes": 4, "batch_frames": 64},
        "runtime": {"device": "cpu", "runs_dir": str(runs)},
    })


def test_student_trains_and_evaluates_from_released_files_with_no_teacher_stage(tmp_path) -> None:
    from mkdcore.stages.runner import run_experiment

    root = released_tree(tmp_path)
    cfg = config(root, tmp_path / "runs")
    names = [n.name for n in plan(cfg)]
    assert names == ["data", "student:lite-mkd", "evaluate", "report"]
    nodes, ran = run_experiment(cfg, echo=lambda _: None)
    assert not {n.kind for n in nodes.values()} & TEACHER_KINDS
    student = nodes["student:lite-mkd"]
    metrics = [line for line in student.files.metrics.read_text().splitlines() if '"kd"' in line]
    assert metrics, "D2M logged no KD term: the teacher was not read"
    log = student.files.log.read_text()
    assert "checkpoint25000.pt on 8 released train features" in log  # 4 train classes x 2 videos
    results = (nodes["evaluate"].files.results).read_text()
    assert '"student:lite-mkd"' in results
    assert student.freshness(nodes).fresh

    # replacing one released feature makes the student (and what read it) stale
    some = next((root / "feature" / "mm_features").rglob("feature.npy"))
    np.save(some, np.zeros((1, FRAMES, DIM), np.float32))
    again = {n.name: n for n in plan(cfg)}
    why = again["student:lite-mkd"].freshness(again).reason
    assert why.startswith("the teacher files changed"), why
    assert not again["evaluate"].freshness(again).fresh


def test_head_from_the_original_checkpoint_equals_the_converted_teachers(tmp_path) -> None:
    """`teacher.checkpoint` may be the original file (its TRX head read directly) or the
    folder `mkd convert` wrote: the same frozen head either way."""
    from mkdcore.convert.convert import convert_file
    from mkdcore.convert.released import teacher_head

    ckpt = save_original(tmp_path / "checkpoint15000.pt", original_state("teacher_mfm", DIM, OUT), "teacher", 15000)
    convert_file(ckpt, tmp_path / "mfm")
    torch.manual_seed(0)
    s, q, labels = torch.randn(4, FRAMES, DIM), torch.randn(2, FRAMES, DIM), torch.tensor([0, 0, 1, 1])
    a, b = teacher_head(ckpt, FRAMES), teacher_head(tmp_path / "mfm", FRAMES)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    out_a, out_b = a(s, labels, q), b(s, labels, q)
    torch.testing.assert_close(out_a["logits"], out_b["logits"])
    torch.testing.assert_close(out_a["relations"], out_b["relations"])


def test_missing_and_bad_features_fail_up_front_in_one_line(tmp_path) -> None:
    from mkdcore.testing import run_cli

    root = released_tree(tmp_path)
    tree = root / "feature" / "mm_features"
    train = load_split(DatasetLayout(root), "synth", "train").keys()
    for key in train[:4]:
        (tree / key.class_name / key.video / "feature.npy").unlink()
    np.save(tree / train[4].class_name / train[4].video / "feature.npy", np.zeros((FRAMES, DIM + 1), np.float32))
    np.save(tree / train[5].class_name / train[5].video / "feature.npy", np.zeros((FRAMES, DIM), np.int64))
    cfg_file = tmp_path / "released.yaml"
    cfg_file.write_text(config(root, tmp_path / "runs").to_yaml())
    code, out, err = run_cli("run", cfg_file)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    line = errors[0]
    first = ", ".join(f"{k.class_name}/{k.video}" for k in train[:3])
    assert f"4 of 8 videos have no feature ({first}, and 1 more)" in line, line
    assert "2 features are not float (8, 16) or (1, 8, 16)" in line and "(8, 17)" in line and "dtype int64" in line, line
    assert not any((tmp_path / "runs").rglob("checkpoints")), "it trained before checking"


def test_features_need_a_checkpoint_and_the_paths_key_the_student(tmp_path) -> None:
    with pytest.raises(ConfigError, match="teacher.features needs teacher.checkpoint"):
        config(tmp_path, tmp_path, features="f")
    a = {n.name: n.key for n in plan(config(tmp_path, tmp_path, features="f1", checkpoint="c"))}
    b = {n.name: n.key for n in plan(config(tmp_path, tmp_path, features="f2", checkpoint="c"))}
    assert a["data"] == b["data"] and a["student:lite-mkd"] != b["student:lite-mkd"]


def test_a_folder_of_several_checkpoints_asks_which(tmp_path) -> None:
    from mkdcore.convert.released import teacher_head

    for n in (15000, 25000):
        save_original(tmp_path / f"checkpoint{n}.pt", original_state("teacher_mfm", DIM, OUT), "teacher", n)
    with pytest.raises(Exception, match="holds 2 checkpoints \\(checkpoint15000.pt, checkpoint25000.pt\\)"):
        teacher_head(tmp_path, FRAMES)
    student = save_original(tmp_path / "s" , original_state("student_mobilenetv3_small", DIM, OUT))
    with pytest.raises(Exception, match="holds a student model, not a teacher"):
        teacher_head(student, FRAMES)
    assert DataError  # imported for the one-line errors above (MkdError subclasses)


def test_the_seed_layout_works_with_a_two_line_config(tmp_path) -> None:
    """`base:` a paper config and the released base, plus `data.root`: the paper's
    student, no teacher stage, the released files found under the root."""
    from mkdcore.config import load_config
    from mkdcore.convert.released import teacher_files

    paper = Path(__file__).resolve().parents[1] / "configs" / "paper"
    (tmp_path / "mine.yaml").write_text(
        f"base: [{paper / 'ucf101_resnet18.yaml'}, {paper / 'base' / 'released.yaml'}]\n"
        f"data: {{root: {tmp_path / 'data' / 'ucf'}}}\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert not {n.kind for n in plan(cfg)} & TEACHER_KINDS
    assert cfg.student.backbone.name == "resnet18" and cfg.training.tasks == 70010
    features, checkpoint = teacher_files(cfg)
    assert features == tmp_path / "data" / "ucf" / "feature" / "mm_features"
    assert checkpoint == tmp_path / "data" / "ucf" / "teacher_model"
