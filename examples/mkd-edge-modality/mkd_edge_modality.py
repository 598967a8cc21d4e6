"""mkd plugin: the ``edge`` modality, edge magnitude of every RGB frame.

Install (``pip install ./mkd-edge-modality``), check (``mkd plugins --kind modality``),
derive (``mkd data derive ROOT --modality edge -o method=canny``), then train with
``modalities: {names: [rgb, edge]}``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mkdcore.hookspecs import hookimpl
from mkdcore.modalities import Clip, Modality


class EdgeOptions(BaseModel):
    """Every option has a default; unknown options are errors (extra="forbid")."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["sobel", "canny"] = Field("sobel", description="gradient magnitude or binary Canny edges")
    blur: int = Field(3, ge=0, description="Gaussian blur kernel (px, odd; 0 = none) before edges")
    low: int = Field(50, ge=0, le=255, description="Canny lower threshold")
    high: int = Field(150, ge=0, le=255, description="Canny upper threshold")


class Edge(Modality):
    """Edge magnitude (Sobel or Canny) of each frame, stored as a grey image."""

    name = "edge"
    channels = ("edge", "edge", "edge")

    def __init__(self, method: str = "sobel", blur: int = 3, low: int = 50, high: int = 150) -> None:
        self.method, self.blur, self.low, self.high = method, blur, low, high

    def edges(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self.blur > 0:
            k = self.blur | 1  # kernel sizes must be odd
            grey = cv2.GaussianBlur(grey, (k, k), 0)
        if self.method == "canny":
            return cv2.Canny(grey, self.low, self.high)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        return np.clip(cv2.magnitude(gx, gy) / 4.0, 0, 255).astype(np.uint8)  # /4: Sobel 3x3 gain

    def derive(self, clip: Clip) -> list[np.ndarray]:
        return [cv2.cvtColor(self.edges(f), cv2.COLOR_GRAY2RGB) for f in clip.frames]


@hookimpl
def register_modalities(register):
    register("edge", Edge, options=EdgeOptions)
