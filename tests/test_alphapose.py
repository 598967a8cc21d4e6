"""skeleton backend alphapose: AlphaPose result files written here are drawn, checked at the keypoints."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mkdcore import testing
from mkdcore.data.derive import derive_dataset
from mkdcore.errors import ConfigError, DataError
from mkdcore.modalities.alphapose import OPENPOSE18_TO_COCO, frame_id, read_results
from mkdcore.modalities.base import Clip
from plugins.modality_skeleton import Skeleton

#: a standing person in a 64 px frame: COCO-17 (x, y); left ankle (15) is the hidden joint
POSE = np.array([(32, 8), (30, 6), (34, 6), (28, 7), (36, 7), (26, 16), (38, 16), (22, 24), (42, 24), (20, 32),
                 (44, 32), (28, 34), (36, 34), (27, 44), (37, 44), (4, 60), (38, 54)], np.float32)
HIDDEN = 15


def entry(image_id: str, pose: np.ndarray = POSE, hidden: int = HIDDEN, score: float = 2.5) -> dict:
    conf = np.full(17, 0.9, np.float32)
    conf[hidden] = 0.1  # below AlphaPose's drawing threshold 0.4
    kps = np.concatenate([pose, conf[:, None]], 1).reshape(-1)
    return {"image_id": image_id, "category_id": 1, "keypoints": [float(v) for v in kps], "score": score,
            "box": [0.0, 0.0, 64.0, 64.0], "idx": [0]}


def assert_drawn(img: np.ndarray, pose: np.ndarray, tol: int = 0) -> None:
    for j, (x, y) in enumerate(pose.astype(int)):
        px = img[y, x].astype(int)
        if j == HIDDEN:
            assert px.max() <= tol, f"hidden joint {j} drawn: {px}"
        else:
            assert px.min() >= 255 - tol, f"joint {j} at ({x}, {y}) is {px}, not white"


def test_frame_ids_match_names_extensions_and_eval_integers():
    assert frame_id("00000007.jpg") == frame_id("00000007.png") == frame_id(7) == frame_id("7.jpg") == "7"
    assert frame_id("0.jpg") == "0" and frame_id("img_a.jpg") == "img_a"


def test_default_format_drawn_at_the_keypoints(tmp_path):
    results = tmp_path / "res"
    (results / "run" / "v1").mkdir(parents=True)
    (results / "run" / "v1" / "alphapose-results.json").write_text(json.dumps([entry("00000001.jpg")]))
    mod = Skeleton(method="alphapose", results=results, thickness=1)
    mod.setup()
    clip = Clip(frames=np.zeros((2, 64, 64, 3), np.uint8), key=("run", "v1"), names=["00000001.jpg", "00000002.jpg"])
    first, second = mod.derive(clip)
    assert_drawn(first, POSE)
    assert not second.any()  # no entry for this frame: nobody, a black image
    # the limb nose -> left eye is drawn in its colour between the two joints, not the limb to the hidden ankle
    assert first[7, 31].any() and not first[52:58, 6:12].any()


def test_openpose_format_maps_18_joints_to_coco(tmp_path):
    op = np.zeros((18, 3), np.float32)
    for coco, o in enumerate(OPENPOSE18_TO_COCO):
        op[o] = (*POSE[coco], 0.1 if coco == HIDDEN else 0.9)
    op[1] = (32, 16, 0.9)  # the neck, which COCO does not have
    path = tmp_path / "alphapose-results.json"
    path.write_text(json.dumps({"3.jpg": {"version": "AlphaPose v0.3", "people": [{"pose_keypoints_2d": op.reshape(-1).tolist()}]}}))
    (_, kp), = read_results(path)["3"]
    np.testing.assert_array_equal(kp[:, :2], POSE)


def test_whole_body_layouts_use_the_first_17_and_others_are_one_line(tmp_path):
    halpe = entry("1.jpg")
    halpe["keypoints"] += [1.0, 1.0, 0.9] * 9  # Halpe-26: COCO 17 first
    path = tmp_path / "a.json"
    path.write_text(json.dumps([halpe]))
    (_, kp), = read_results(path)["1"]
    np.testing.assert_array_equal(kp[:, :2], POSE)
    hand = {"image_id": "1.jpg", "keypoints": [0.0] * 63}
    path.write_text(json.dumps([hand]))
    with pytest.raises(DataError, match="21 joints per person"):
        read_results(path)
    path.write_text("[{\"image_id\": ")
    with pytest.raises(Exception) as err:
        read_results(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mkd_data_derive_with_alphapose_results(tmp_path):
    root = testing.tiny_dataset(tmp_path, classes=3, videos=1, frames=2, size=64)
    results = tmp_path / "alphapose"
    videos = sorted(p for p in (root / "rgb_l8").glob("*/*") if p.is_dir())
    for v in videos:
        out = results / v.parent.name / v.name
        out.mkdir(parents=True)
        names = sorted(p.name for p in v.iterdir())
        (out / "alphapose-results.json").write_text(json.dumps([entry(names[0])]))
    code, out, err = testing.run_cli("data", "derive", root, "-m", "skeleton", "-o", "method=alphapose",
                                     "-o", f"results={results}", "-o", "thickness=1", "-o", "jpeg_quality=100")
    assert code == 0, out + err
    for v in videos:
        names = sorted(p.name for p in v.iterdir())
        first = cv2.cvtColor(cv2.imread(str(root / "skeleton_l8" / v.parent.name / v.name / names[0])), cv2.COLOR_BGR2RGB)
        assert_drawn(first, POSE, tol=40)  # JPEG, even at quality 100, moves a few levels
        rest = cv2.imread(str(root / "skeleton_l8" / v.parent.name / v.name / names[1]))
        assert rest.max() <= 40

    # ids of other frames (AlphaPose run on the video file): that video fails, naming the file
    bad = results / videos[0].parent.name / videos[0].name / "alphapose-results.json"
    bad.write_text(json.dumps([entry("917.jpg")]))
    summary = derive_dataset(root, "skeleton", {"method": "alphapose", "results": str(results), "thickness": 2}, progress=False)
    assert len(summary.failures) == 1 and "no image_id matches" in summary.failures[0][1] and "\n" not in summary.failures[0][1]


def test_missing_results_option_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="needs the option results"):
        Skeleton(backend="alphapose").setup()
    code, _, err = testing.run_cli("data", "derive", testing.tiny_dataset(tmp_path), "-m", "skeleton",
                                   "-o", "method=alphapose", "-o", f"results={tmp_path / 'nope'}")
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err, err
