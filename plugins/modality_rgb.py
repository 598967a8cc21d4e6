"""Built-in plugin `modality_rgb`: the RGB frames themselves (the identity modality).

``rgb`` is a modality like the others so that loaders, teachers and fusion treat every
modality the same way; its images already are the dataset's ``rgb_l8`` frames, so
deriving it only verifies them.
"""

from __future__ import annotations

import numpy as np

from mkdcore.hookspecs import hookimpl
from mkdcore.modalities.base import Clip, Modality


class Rgb(Modality):
    """The RGB frames (identity; derive only verifies that they decode)."""

    name = "rgb"
    channels = ("r", "g", "b")
    existing_only = True

    def derive(self, clip: Clip) -> list[np.ndarray]:
        return list(clip.frames)


@hookimpl
def register_modalities(register):
    register("rgb", Rgb, description=Rgb.__doc__)
