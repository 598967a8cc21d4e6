"""Colour maps for scalar modalities (depth): values in [0, 1] -> uint8 RGB images."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Colormap = Literal["jet", "turbo", "inferno", "magma", "viridis", "gray"]

_CV2_MAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
}


def apply_colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """``(H, W)`` floats in [0, 1] (1 = warm end, red for jet/turbo) -> uint8 ``(H, W, 3)`` RGB."""
    grey = np.clip(np.rint(np.asarray(values, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    if name == "gray":
        return np.repeat(grey[..., None], 3, axis=-1)
    bgr = cv2.applyColorMap(grey, _CV2_MAPS[name])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def minmax(values: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Scale to [0, 1] by the array's own min and max (a constant array gives zeros)."""
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi - lo > eps else np.zeros_like(values, dtype=np.float64)
