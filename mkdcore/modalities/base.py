"""The modality contract: how a modality turns the RGB frames of a video into images.

A *modality* is anything the teacher can look at that is computed from the RGB frames
(optical flow, depth, skeleton, edges...). It is stored the way the original Lite-MKD
stored it (spec 1.2): one ordinary 3-channel image per RGB frame, in
``<root>/<name>_l8/<class>/<video>/`` with the RGB file names, so every loader reads every
modality the same way. A new modality is one small class plus an entry point::

    from mkdcore.hookspecs import hookimpl
    from mkdcore.modalities import Clip, Modality

    class Edge(Modality):
        name = "edge"
        channels = ("edge", "edge", "edge")

        def derive(self, clip: Clip) -> list[np.ndarray]:
            return [sobel(frame) for frame in clip.frames]

    @hookimpl
    def register_modalities(register):
        register("edge", Edge, options=EdgeOptions)

The derive runner (:mod:`mkdcore.data.derive`) does the rest: walking the dataset,
skipping finished videos, writing each video atomically, process pools for CPU
methods and batching for GPU models. :mod:`mkdcore.testing` has the helpers to test a
modality (a tiny dataset, the output contract, a derive-and-train run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch is only needed to decode for training
    import torch


@dataclass
class Clip:
    """The frames of one video, as the derive runner hands them to :meth:`Modality.derive`.

    Built by :func:`mkdcore.data.derive.read_clip` (decoded with OpenCV, converted to RGB).

    ``frames``
        numpy uint8 ``(T, H, W, 3)``, channels in **RGB** order (not OpenCV's BGR). One
        entry per image file of the video's RGB folder ``<root>/rgb_l8/<class>/<video>/``,
        in file-name order: T is however many files the dataset stores (8 in the
        Lite-MKD seed layout and the synthetic dataset; the loader samples training frames
        from them later). These are *sampled* frames: frame t+1 may be far later in the
        original video than frame t.
    ``next_frames``
        ``None``, or numpy uint8 ``(T, H, W, 3)`` RGB with the same shape as ``frames``:
        ``next_frames[t]`` is the frame that directly follows ``frames[t]`` in the
        original video (one original frame later, *not* ``frames[t + 1]``). The runner
        fills it when the dataset has the folder ``<root>/rgb_next_l8/<class>/<video>/``
        beside ``rgb_l8`` with the same file names (the synthetic dataset writes it by
        default; a video whose folder lacks a name fails); otherwise it is ``None``. Only
        motion modalities need it (flow pairs ``frames[t] -> next_frames[t]``); one that
        cannot work without it sets ``needs_neighbours = True`` and the runner fails such
        videos without calling derive.
    ``key``
        ``(class_name, video)`` of the video, for messages; ``None`` for a clip built by hand.
    ``names``
        the T file names in order (``00000001.jpg`` ...): ``names[t]`` is the file of
        ``frames[t]``, of ``next_frames[t]`` and of the image derived from them.
    """

    frames: np.ndarray
    next_frames: np.ndarray | None = None
    key: tuple[str, str] | None = None
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"Clip.frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        if self.next_frames is not None and self.next_frames.shape != self.frames.shape:
            raise ValueError(f"Clip.next_frames {self.next_frames.shape} must match frames {self.frames.shape}")


class Modality:
    """Base class of every modality (subclass it, or duck-type the same attributes).

    Class attributes:

    * ``name``: the modality name; its images live in ``<root>/<name>_l8``.
    * ``channels``: what the 3 stored channels hold, e.g. ``("r", "g", "b")`` or
      ``("dx", "dy", "magnitude")``; informational, shown in docs and listings.
    * ``needs_neighbours``: ``True`` if :meth:`derive` needs ``clip.next_frames`` (the
      runner then fails a video without them instead of calling derive).
    * ``uses_device``: ``True`` for neural models: the runner calls :meth:`setup` with the
      chosen device and derives in-process, in batches of videos
      (:meth:`derive_batch`). ``False`` (CPU algorithms): the runner may spread videos
      over a process pool (``--workers``).
    * ``existing_only``: ``True`` for a backend that accepts images already on disk (e.g.
      a synthetic dataset's ground truth): derive then only verifies them.
    """

    name: ClassVar[str] = ""
    channels: ClassVar[tuple[str, ...]] = ("r", "g", "b")
    needs_neighbours: bool = False
    uses_device: bool = False
    existing_only: bool = False
    #: JPEG quality (0-100) the runner writes this modality's ``.jpg`` images with.
    jpeg_quality: int = 95

    def setup(self, device: str = "cpu") -> None:
        """Load models onto ``device`` ("cpu", "cuda", "cuda:1"). Called once per process
        before the first :meth:`derive`; raise :class:`mkdcore.errors.MkdError` (one line)
        for a missing checkpoint or library. Default: nothing to load."""

    def derive(self, clip: Clip) -> list[np.ndarray]:
        """One uint8 ``(H, W, 3)`` RGB image per frame of ``clip`` (same H, W as the frames)."""
        raise NotImplementedError(f"modality {self.name!r} does not implement derive()")

    def derive_batch(self, clips: Sequence[Clip]) -> list[list[np.ndarray]]:
        """Derive several videos at once. GPU models override this to batch frames of
        several videos into one forward pass; the default loops over :meth:`derive`."""
        return [self.derive(clip) for clip in clips]

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images uint8 ``(T, 3, H, W)`` -> float ``(T, C, H, W)`` for training.

        Default: the image itself, scaled to [0, 1] (C = 3): colour-coded modalities
        (flow wheel, depth colour map, skeleton drawings) are looked at as pictures, as
        in the original Lite-MKD.
        """
        return images.float().div_(255.0)

    def describe(self) -> dict[str, Any]:
        """What was derived and how (for logs and manifests)."""
        return {"name": self.name, "channels": list(self.channels)}


def check_images(modality: str, clip: Clip, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a modality's output against its clip: one uint8 (H, W, 3) image per frame.

    A plugin bug (wrong count, shape or dtype) must fail loudly here rather than write
    a dataset that only breaks at training time.
    """
    t, h, w, _ = clip.frames.shape
    if len(images) != t:
        raise ValueError(f"modality {modality!r} returned {len(images)} images for {t} frames")
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.shape != (h, w, 3):
            raise ValueError(
                f"modality {modality!r} image {i} is {img.dtype} {img.shape}, expected uint8 {(h, w, 3)}"
            )
        out.append(np.ascontiguousarray(img))
    return out
