"""AlphaPose result files (``alphapose-results.json``) as the skeleton modality's people.

The paper derived skeletons with AlphaPose (MVIG-SJTU/AlphaPose; academic, non-commercial
licence). mkd does not run it: users run AlphaPose themselves, once per video, on the
dataset's own RGB frames (``--indir <root>/rgb_l8/<class>/<video>
--outdir <results>/<class>/<video>``), and mkd draws what it found like every other
skeleton backend. Facts on the file are from
``../shared/fixtures/expert-networks/README.md`` section 4.

Accepted layouts of the file:

* the default format: a JSON array of ``{"image_id", "keypoints": [x, y, c] * K,
  "score", "box", "idx", "category_id"}``, one entry per kept person per image. K = 17
  (COCO) or any of the whole-body layouts that start with the COCO 17 (Halpe 26,
  COCO-WholeBody 133, Halpe 136): their first 17 joints are used.
* ``--format cmu`` / ``--format open``: an object keyed by image id with ``bodies[].joints``
  or ``people[].pose_keypoints_2d`` in the 18-joint OpenPose order, mapped to COCO.

Frames are matched to entries by file name: ``image_id`` is the image's basename (folder
input); names are compared without extension and leading zeros, so ``00000001.jpg``
also matches ``00000001.png`` and the integer ids ``--eval`` writes. A frame without an
entry has nobody in it (a black image); a file none of whose ids matches any frame is an
error naming both (AlphaPose was run on other frames, e.g. on the video file itself,
whose ids ``<k>.jpg`` are original frame indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mkdcore.errors import DataError
from mkdcore.fileio import read_json
from mkdcore.names import safe_join

RESULT_FILE = "alphapose-results.json"
#: OpenPose/CMU 18-joint order index of each COCO-17 joint (nose, eyes, ears, shoulders, ...)
OPENPOSE18_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
#: joint counts whose first 17 joints are the COCO 17 in COCO order
COCO_PREFIXED = (17, 26, 133, 136)
REMEDY = (f"run AlphaPose on the video's RGB frames with --outdir <results>/<class>/<video> "
          f"(it writes {RESULT_FILE} there) and set the skeleton option results=<results>")


def frame_id(name: str | int) -> str:
    """The comparable form of a frame name or image id: no folder, no extension, no leading zeros."""
    stem = Path(str(name)).name.rsplit(".", 1)[0] if not isinstance(name, int) else str(name)
    return (stem.lstrip("0") or "0") if stem.isdigit() else stem


def _coco(flat: Sequence[float], path: Path, openpose: bool = False) -> np.ndarray:
    values = np.asarray(flat, dtype=np.float32)
    if values.ndim != 1 or values.size % 3:
        raise DataError(f"{path}: keypoints must be a flat list of x, y, score triples, got {values.size} numbers")
    joints = values.reshape(-1, 3)
    if openpose:
        if len(joints) != 18:
            raise DataError(f"{path}: the cmu/open format has 18 joints, got {len(joints)}")
        return joints[list(OPENPOSE18_TO_COCO)]
    if len(joints) not in COCO_PREFIXED:
        raise DataError(f"{path}: {len(joints)} joints per person is not a body layout starting with the COCO 17 "
                        f"(17, 26, 133 or 136); use AlphaPose's COCO or Halpe body models")
    return joints[:17]


def read_results(path: Path) -> dict[str, list[tuple[float, np.ndarray]]]:
    """``frame_id -> [(person score, (17, 3) x/y/score)]`` of one AlphaPose result file."""
    data = read_json(path, "AlphaPose result file", REMEDY, expect=None)
    if not isinstance(data, (list, dict)):
        raise DataError(f"{path} holds a {type(data).__name__}, not an AlphaPose result list or object; {REMEDY}")
    people: dict[str, list[tuple[float, np.ndarray]]] = {}
    try:
        if isinstance(data, list):
            for entry in data:
                kp = _coco(entry["keypoints"], path)
                people.setdefault(frame_id(entry["image_id"]), []).append((float(entry.get("score", kp[:, 2].mean())), kp))
        else:
            for image_id, entry in data.items():
                bodies = entry.get("bodies") or entry.get("people") or []
                for body in bodies:
                    kp = _coco(body.get("joints", body.get("pose_keypoints_2d", [])), path, openpose=True)
                    people.setdefault(frame_id(image_id), []).append((float(kp[:, 2].mean()), kp))
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not an AlphaPose result file ({type(exc).__name__}: {exc}); {REMEDY}") from None
    return people


class AlphaPoseResults:
    """The skeleton estimator of ``backend=alphapose``: people per frame from the result files."""

    def __init__(self, results: Path | None, max_people: int = 5) -> None:
        self.results = results
        self.max_people = max_people

    def setup(self, device: str = "cpu") -> None:
        from mkdcore.errors import ConfigError

        if self.results is None:
            raise ConfigError(f"skeleton: backend 'alphapose' needs the option results (a folder of "
                              f"<class>/<video>/{RESULT_FILE}); {REMEDY}")
        if not Path(self.results).expanduser().is_dir():
            raise ConfigError(f"skeleton: results folder {self.results} (option results) does not exist; {REMEDY}")

    def result_file(self, key: tuple[str, str]) -> Path:
        return safe_join(Path(self.results or ".").expanduser(), key[0], key[1], what="video") / RESULT_FILE

    def people(self, key: tuple[str, str] | None, names: Sequence[str]) -> list[list[np.ndarray]]:
        """Per frame name: its people (at most ``max_people``, best person score first)."""
        if key is None:
            raise DataError("skeleton: backend 'alphapose' reads results by video; the clip has no (class, video) key")
        path = self.result_file(key)
        found = read_results(path)
        ids = [frame_id(n) for n in names]
        if found and not set(found) & set(ids):
            raise DataError(f"{path}: no image_id matches a frame of {key[0]}/{key[1]} (ids like {sorted(found)[:3]}, "
                            f"frames like {names[:3]}); {REMEDY}")
        out: list[list[np.ndarray]] = []
        for i in ids:
            ranked = sorted(found.get(i, []), key=lambda p: -p[0])[: self.max_people]
            out.append([kp for _, kp in ranked])
        return out
