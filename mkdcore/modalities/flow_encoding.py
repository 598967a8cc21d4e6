"""Storing optical flow as ordinary 3-channel images, and reading it back.

Flow ``(H, W, 2)`` in pixels (dx to the right, dy downwards) is first divided by a
*scale* in pixels (see :func:`clip_scale`), so that a magnitude of ``scale`` px maps to
the full range; larger motions saturate. Two encodings:

``wheel`` (default)
    The standard Middlebury colour wheel (Baker et al., "A Database and Evaluation
    Methodology for Optical Flow", IJCV 2011; the same wheel as FlowNet2's and
    ``torchvision.utils.flow_to_image``): hue = direction, saturation = magnitude
    (white = no motion, fully saturated colour = ``scale`` px), darkened to 75 % beyond
    the scale. This is what the original Lite-MKD teacher looked at.

``raw2``
    Channel 0 = ``128 + 127 * dx / scale``, channel 1 = ``128 + 127 * dy / scale``
    (128 = zero, clipped to [1, 255]), channel 2 = ``255 * min(|flow| / scale, 1)``.
    One grey level is ``scale / 127`` px, e.g. 0.157 px for ``scale = 20``.

Both decode back to pixels with :func:`decode_wheel` / :func:`decode_raw2` given the
same scale (up to the 8-bit quantisation and, for JPEG files, compression).
"""

from __future__ import annotations

import numpy as np

# Middlebury wheel: number of hues in each segment (red-yellow, yellow-green, ...).
_RY, _YG, _GC, _CB, _BM, _MR = 15, 6, 4, 11, 13, 6


def make_colorwheel() -> np.ndarray:
    """The 55 Middlebury wheel colours, float ``(55, 3)`` RGB in [0, 255]."""
    ncols = _RY + _YG + _GC + _CB + _BM + _MR
    wheel = np.zeros((ncols, 3))
    col = 0
    for n, (ch_up, ch_const, ch_down) in zip(
        (_RY, _YG, _GC, _CB, _BM, _MR),
        ((1, 0, None), (None, 1, 0), (2, 1, None), (None, 2, 1), (0, 2, None), (None, 0, 2)),
    ):
        ramp = np.floor(255 * np.arange(n) / n)
        if ch_up is not None:  # constant channel at 255, the other rises
            wheel[col : col + n, ch_const] = 255
            wheel[col : col + n, ch_up] = ramp
        else:  # constant channel at 255, the other falls
            wheel[col : col + n, ch_const] = 255
            wheel[col : col + n, ch_down] = 255 - ramp
        col += n
    return wheel


_WHEEL = make_colorwheel()
_WHEEL_UNIT = (_WHEEL / 255.0).astype(np.float32)


def clip_scale(flows: np.ndarray, mode: str = "clip", max_flow: float = 20.0, min_scale: float = 1.0) -> float:
    """The scale (px) that a clip's flows are divided by before encoding.

    ``mode="clip"``: the largest flow magnitude in the whole clip (all frames), so the
    fastest motion of the video is fully saturated and frames of one video stay
    comparable; never below ``min_scale`` px, so a static video's sub-pixel noise is not
    blown up to full colour. ``mode="fixed"``: ``max_flow`` px for every video, so
    magnitudes are comparable across videos and decodable back to pixels.
    """
    if mode == "fixed":
        return float(max_flow)
    if mode != "clip":
        raise ValueError(f"unknown flow normalisation {mode!r}; use 'clip' or 'fixed'")
    mag = np.sqrt((np.asarray(flows, dtype=np.float64) ** 2).sum(-1))
    return float(max(mag.max(initial=0.0), min_scale))


def encode_wheel(flow: np.ndarray, scale: float) -> np.ndarray:
    """Flow ``(H, W, 2)`` px -> uint8 RGB ``(H, W, 3)`` on the Middlebury wheel."""
    scaled = np.asarray(flow, dtype=np.float32) / np.float32(scale)  # float32: ~2x faster, as torchvision
    rad = np.sqrt((scaled**2).sum(-1))[..., None]
    col = _wheel_colour(scaled)
    inside = rad <= 1
    col = np.where(inside, 1 - rad * (1 - col), col * np.float32(0.75))
    return (255 * col).astype(np.uint8)  # truncation = floor for non-negative values


def _wheel_lut(n: int = 1440) -> tuple[np.ndarray, np.ndarray]:
    """(angles, 1 - colour) for ``n`` directions, to invert the wheel."""
    u = -np.cos(np.linspace(-np.pi, np.pi, n, endpoint=False))
    v = -np.sin(np.linspace(-np.pi, np.pi, n, endpoint=False))
    unit = np.stack([u, v], -1)[None]  # rad = 1
    col = 1 - _wheel_colour(unit)[0]
    return unit[0], col


def _wheel_colour(flow: np.ndarray) -> np.ndarray:
    """Fully saturated wheel colour (float RGB in [0, 1]) of each flow vector's direction."""
    wheel = _WHEEL_UNIT if flow.dtype == np.float32 else _WHEEL / 255.0
    angle = np.arctan2(-flow[..., 1], -flow[..., 0]) / np.pi
    ncols = wheel.shape[0]
    fk = (angle + 1) * ((ncols - 1) / 2)
    k0 = fk.astype(np.int32)  # fk >= 0: truncation = floor
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = (fk - k0)[..., None]
    return (1 - f) * wheel[k0] + f * wheel[k1]


_LUT_DIRS, _LUT_COLS = _wheel_lut()
_LUT_NORMS = np.linalg.norm(_LUT_COLS, axis=1)


def decode_wheel(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 wheel image ``(H, W, 3)`` -> flow ``(H, W, 2)`` px (magnitudes up to ``scale``).

    Inverts ``pixel = 1 - r * (1 - colour(direction))``: the direction is the wheel colour
    whose ``1 - colour`` is most parallel to ``1 - pixel``; ``r`` is the length ratio.
    Saturated (beyond-scale) pixels decode to magnitude ``scale`` at best.
    """
    h, w, _ = image.shape
    p = 1 - image.reshape(-1, 3).astype(np.float64) / 255.0
    out = np.zeros((p.shape[0], 2))
    for start in range(0, p.shape[0], 16384):  # bounded memory: 16k pixels x 1440 directions
        chunk = p[start : start + 16384]
        sims = chunk @ _LUT_COLS.T / _LUT_NORMS
        best = sims.argmax(1)
        r = np.linalg.norm(chunk, axis=1) / _LUT_NORMS[best]
        out[start : start + 16384] = _LUT_DIRS[best] * np.minimum(r, 1.0)[:, None]
    return (out * scale).reshape(h, w, 2).astype(np.float32)


def encode_raw2(flow: np.ndarray, scale: float) -> np.ndarray:
    """Flow ``(H, W, 2)`` px -> uint8 ``(H, W, 3)``: dx, dy around 128, magnitude."""
    scaled = flow / scale
    dxdy = np.clip(np.rint(128 + 127 * scaled), 1, 255)
    mag = np.clip(np.rint(255 * np.sqrt((scaled**2).sum(-1))), 0, 255)
    return np.concatenate([dxdy, mag[..., None]], axis=-1).astype(np.uint8)


def decode_raw2(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 raw2 image ``(H, W, 3)`` -> flow ``(H, W, 2)`` px."""
    return ((image[..., :2].astype(np.float32) - 128.0) / 127.0 * scale).astype(np.float32)
