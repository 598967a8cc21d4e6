"""Built-in plugin `modality_skeleton`: human pose drawn as joints and limbs in ``skeleton_l8``.

Backends:

* ``keypointrcnn`` (default): torchvision's Keypoint R-CNN (ResNet-50 FPN, COCO 17
  joints) with a local state dict (option ``weights``; the torchvision COCO file
  ``keypointrcnn_resnet50_fpn_coco-fc266e95.pth``), batched on the chosen device.
* ``mediapipe``: MediaPipe Pose 0.10.21 (``solutions.pose``, ``model_complexity=1``,
  whose model ships inside the wheel; no download). Optional, with its own install
  line because it pins numpy < 2 and brings its own OpenCV::

      pip install 'lite-mkd[pose]'
      pip uninstall -y opencv-python-headless
      pip install --force-reinstall --no-deps opencv-contrib-python==4.11.0.86

  Runs on CPU; one person per frame; its 33 landmarks are mapped to the COCO 17.
* ``alphapose`` (``method=alphapose`` is the same option): the paper's pose network,
  run by the user: per video an ``alphapose-results.json`` under
  ``results/<class>/<video>/`` (AlphaPose run on that video's RGB frames), drawn
  here (:mod:`mkdcore.modalities.alphapose`). No network, no device.
* ``existing``: the dataset already has ``skeleton_l8`` (the synthetic dataset's ground
  truth); derive only verifies it.

Drawing: a black image per frame with every detected person (person score >=
``score_threshold``, joints with confidence > ``keypoint_threshold``; for AlphaPose,
whose file holds only people it kept, at most ``max_people`` by person score, joints
above ``alphapose_threshold``, 0.4 as AlphaPose's own renderer): limbs in one
colour each, joints white. A frame with nobody is a black image, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mkdcore.errors import MkdError
from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.alphapose import AlphaPoseResults
from mkdcore.modalities.base import Clip, Modality
from mkdcore.modalities.pose import KeypointRCNNPose, MediaPipePose, draw_skeletons


class SkeletonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["keypointrcnn", "mediapipe", "alphapose", "existing"] = Field(
        "keypointrcnn", validation_alias=AliasChoices("backend", "method"), description="pose source (also spelt method=)")
    results: Path | None = Field(None, description="folder of <class>/<video>/alphapose-results.json (backend alphapose)")
    alphapose_threshold: float = Field(0.4, description="AlphaPose joint score to draw a joint (its renderer's 0.4)")
    weights: Path | None = Field(None, description="local keypointrcnn_resnet50_fpn state dict (backend keypointrcnn)")
    score_threshold: float = Field(0.7, ge=0, le=1, description="person detection score to draw a person")
    keypoint_threshold: float = Field(0.0, description="joint confidence to draw a joint (Keypoint R-CNN logit; MediaPipe visibility)")
    max_people: int = Field(5, ge=1)
    min_size: int = Field(800, ge=32, description="Keypoint R-CNN input: shorter side resized to this (px)")
    max_size: int = Field(1333, ge=32, description="Keypoint R-CNN input: longer side at most (px)")
    proposals: int = Field(1000, ge=1, description="Keypoint R-CNN region proposals per image (fewer = faster)")
    batch_size: int = Field(8, ge=1, description="frames per forward pass")
    thickness: int = Field(0, ge=0, description="limb width in px; 0 = image size / 80")
    jpeg_quality: int = Field(95, ge=1, le=100)


class Skeleton(Modality):
    """Human pose (Keypoint R-CNN from a local file, MediaPipe Pose, AlphaPose result files, or existing ground truth) drawn as limbs."""

    name = "skeleton"
    channels = ("limbs_r", "limbs_g", "limbs_b")

    def __init__(self, **options: Any) -> None:
        self.options = o = SkeletonOptions(**options)
        self.existing_only = o.backend == "existing"
        self.uses_device = o.backend == "keypointrcnn"
        self.jpeg_quality = o.jpeg_quality
        if o.backend == "mediapipe":
            self.estimator: Any = MediaPipePose()
        elif o.backend == "alphapose":
            self.estimator = AlphaPoseResults(o.results, o.max_people)
        else:
            self.estimator = KeypointRCNNPose(o.weights, o.score_threshold, o.min_size, o.max_size, o.batch_size, o.max_people, o.proposals)

    def setup(self, device: str = "cpu") -> None:
        if self.options.backend != "existing":
            self.estimator.setup(device)

    def draw(self, frames: np.ndarray, people: list[list[np.ndarray]]) -> list[np.ndarray]:
        _, h, w, _ = frames.shape
        o = self.options
        return [draw_skeletons(h, w, p, o.keypoint_threshold, o.thickness) for p in people]

    def derive(self, clip: Clip) -> list[np.ndarray]:
        if isinstance(self.estimator, AlphaPoseResults):
            _, h, w, _ = clip.frames.shape
            people = self.estimator.people(clip.key, clip.names)
            return [draw_skeletons(h, w, p, self.options.alphapose_threshold, self.options.thickness) for p in people]
        return self.draw(clip.frames, self.estimator(clip.frames))

    def derive_batch(self, clips: Sequence[Clip]) -> list[list[np.ndarray]]:
        if isinstance(self.estimator, AlphaPoseResults):
            try:
                return [self.derive(c) for c in clips]
            except MkdError as exc:
                # a bad result file fails its own video, not the run (an MkdError from a batch
                # stops the runner): a plain error makes it redo the batch video by video
                raise RuntimeError(str(exc)) from exc
        if not clips:
            return []
        people = self.estimator(np.concatenate([c.frames for c in clips])) if len({c.frames.shape[1:] for c in clips}) == 1 else None
        if people is None:
            return [self.derive(c) for c in clips]
        out, start = [], 0
        for c in clips:
            t = c.frames.shape[0]
            out.append(self.draw(c.frames, people[start : start + t]))
            start += t
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.options.model_dump(mode="json")}


@hookimpl
def register_modalities(register):
    register("skeleton", Skeleton, options=SkeletonOptions, description=Skeleton.__doc__)
