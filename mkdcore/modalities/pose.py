"""Human pose estimators and the joints-and-limbs drawing of the skeleton modality.

Every estimator maps uint8 RGB frames ``(N, H, W, 3)`` to, per frame, a list of people,
each a float array ``(17, 3)``: COCO keypoints ``(x px, y px, confidence)``. A frame
with nobody in it gives an empty list (drawn as a black image, never an error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mkdcore.errors import ConfigError

#: COCO-17 joint order (torchvision Keypoint R-CNN, AlphaPose COCO)
COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
#: limbs as joint index pairs
COCO_LIMBS = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)
#: MediaPipe Pose (33 landmarks) index of each COCO joint
MEDIAPIPE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

MEDIAPIPE_INSTALL = (
    "pip install 'lite-mkd[pose]' && pip uninstall -y opencv-python-headless && "
    "pip install --force-reinstall --no-deps opencv-contrib-python==4.11.0.86"
)
KEYPOINTRCNN_URL = "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth"


def _limb_colour(i: int, n: int) -> tuple[int, int, int]:
    hue = int(180 * i / n)
    bgr = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(c) for c in bgr)


_LIMB_COLOURS = [_limb_colour(i, len(COCO_LIMBS)) for i in range(len(COCO_LIMBS))]


def draw_skeletons(height: int, width: int, people: list[np.ndarray], threshold: float = 0.0, thickness: int = 0) -> np.ndarray:
    """Black RGB image with every person's limbs (one colour per limb) and joints (white).

    ``people``: arrays ``(17, 3)`` of (x, y, confidence); joints at or below
    ``threshold`` are left out with their limbs. ``thickness`` 0 = scale with image size.
    """
    img = np.zeros((height, width, 3), np.uint8)
    t = thickness or max(1, round(min(height, width) / 80))
    for kp in people:
        ok = kp[:, 2] > threshold
        pts = [(round(float(x)), round(float(y))) for x, y in kp[:, :2]]
        for colour, (a, b) in zip(_LIMB_COLOURS, COCO_LIMBS):
            if ok[a] and ok[b]:
                cv2.line(img, pts[a], pts[b], colour, t, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(img, pts[j], t + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return img


class KeypointRCNNPose:
    """torchvision ``keypointrcnn_resnet50_fpn`` with a local state dict, batched."""

    def __init__(self, weights: Path | None, score_threshold: float = 0.7, min_size: int = 800,
                 max_size: int = 1333, batch_size: int = 8, max_people: int = 5, proposals: int = 1000) -> None:
        self.weights = weights
        self.score_threshold = score_threshold
        self.min_size, self.max_size = min_size, max_size
        self.batch_size = batch_size
        self.max_people = max_people
        self.proposals = proposals
        self.device = "cpu"
        self.model: Any = None

    @staticmethod
    def hint() -> str:
        return (f"download {KEYPOINTRCNN_URL} and set the skeleton option weights=<that file> "
                "(config: modalities.derive.skeleton.options.weights; CLI: -o weights=FILE)")

    def setup(self, device: str) -> None:
        import torch
        from torchvision.models.detection import keypointrcnn_resnet50_fpn

        if self.weights is None:
            raise ConfigError(f"skeleton: backend 'keypointrcnn' needs the option weights; {self.hint()}")
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"skeleton: weights file {path} does not exist; {self.hint()}")
        # Filtering by score and count inside the model means the keypoint head only runs
        # on people that will be drawn (it is the costly part with many candidates).
        model = keypointrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, min_size=self.min_size, max_size=self.max_size,
            box_score_thresh=self.score_threshold, box_detections_per_img=self.max_people,
            rpn_pre_nms_top_n_test=self.proposals, rpn_post_nms_top_n_test=self.proposals,
        )
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(f"skeleton: {path} is not a keypointrcnn_resnet50_fpn state dict ({first}); {self.hint()}") from None
        self.device = device
        self.model = model.eval().to(device)

    def __call__(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        import torch

        if self.model is None:
            self.setup(self.device)
        out: list[list[np.ndarray]] = []
        with torch.inference_mode():
            for s in range(0, len(frames), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[s : s + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                for det in self.model(list(x)):
                    # already filtered by score_threshold and max_people inside the model
                    kps = det["keypoints"].float().cpu().numpy()  # (P, 17, 3): x, y, visibility
                    conf = det["keypoints_scores"].float().cpu().numpy()  # (P, 17) logits
                    out.append([np.concatenate([k[:, :2], c[:, None]], axis=1) for k, c in zip(kps, conf)])
        return out


class MediaPipePose:
    """MediaPipe Pose (0.10.21 legacy ``solutions.pose``, model_complexity=1: the weights ship in the wheel)."""

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        self.min_detection_confidence = min_detection_confidence
        self.pose: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"min_detection_confidence": self.min_detection_confidence, "pose": None}

    def setup(self, device: str = "cpu") -> None:
        try:
            import mediapipe as mp

            solutions = mp.solutions
        except (ImportError, AttributeError):
            raise ConfigError(f"skeleton: backend 'mediapipe' needs mediapipe 0.10.21 (legacy solutions.pose): {MEDIAPIPE_INSTALL}") from None
        # complexity 1 only: its model is inside the wheel, 0 and 2 would be downloaded
        self.pose = solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                        min_detection_confidence=self.min_detection_confidence)

    def __call__(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        if self.pose is None:
            self.setup()
        out = []
        for frame in frames:
            h, w, _ = frame.shape
            res = self.pose.process(np.ascontiguousarray(frame))
            if res.pose_landmarks is None:
                out.append([])
                continue
            lm = res.pose_landmarks.landmark
            kp = np.array([(lm[i].x * w, lm[i].y * h, lm[i].visibility) for i in MEDIAPIPE_TO_COCO], np.float32)
            out.append([kp])
        return out
