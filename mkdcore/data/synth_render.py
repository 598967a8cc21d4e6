"""Draw one synthetic video: RGB frames plus its ground truth (depth, skeleton).

Everything random about a video (timing, body, camera, colours, background, clutter,
jitter, noise) comes from the one ``numpy.random.Generator`` passed in, so a video is a
pure function of its seed. Drawing uses OpenCV primitives on uint8 / float32 arrays
(anti-aliased, sub-pixel), which is fast enough to render hundreds of videos a minute on
one core. The actor is drawn far-to-near (painter's order) so nearer limbs hide farther
ones, in the RGB image and the depth map alike.

With ``next_frames`` a video also gets, for each sampled frame, the frame that follows it
in the (denser) original video it was sampled from: the pose a short time later
(:data:`ORIGINAL_FRAMES_PER_STEP`), the same camera jitter and fresh sensor noise. These
are what flow-like modalities compare a sampled frame with (``rgb_next_l8``). Their
randomness is drawn after everything else, so the sampled frames are byte-identical
with and without them.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

from mkdcore.data.synth_actions import BONES, JOINTS, Action, Body, J, skeleton

#: depth range (body heights from the camera) mapped onto the colormap: NEAR -> red, FAR -> blue
DEPTH_NEAR, DEPTH_FAR = 1.0, 10.0
_SHIFT = 4  # OpenCV sub-pixel bits
_ONE = 1 << _SHIFT
_SKELETON_PALETTE = [
    tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / len(BONES), 0.9, 1.0)) for i in range(len(BONES))
]
_LEFT = {J[n] for n in JOINTS if n.startswith("l_")}
#: the original video is this many times denser than the sampled frames: the next
#: original frame of sampled frame t lies 1/4 of the way (in time) to sampled frame t+1
ORIGINAL_FRAMES_PER_STEP = 4


@dataclass
class Frames:
    """One video's frames as uint8 RGB arrays ``(S, S, 3)``, one list per modality.

    ``rgb_next[t]`` is the original video's frame right after ``rgb[t]`` (empty unless
    asked for).
    """

    rgb: list[np.ndarray]
    depth: list[np.ndarray]
    skeleton: list[np.ndarray]
    rgb_next: list[np.ndarray] = field(default_factory=list)


def _pt(u: float, v: float) -> tuple[int, int]:
    return int(round(u * _ONE)), int(round(v * _ONE))


def _random_colour(rng: np.random.Generator, value_lo: float, value_hi: float, sat_hi: float = 1.0) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.2, sat_hi), rng.uniform(value_lo, value_hi)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _sample_times(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Frame times covering the whole action, with random start/end slack and speed warp,
    and the times of the original frames that follow them (same warp, a short step on)."""
    t0, t1 = rng.uniform(0.0, 0.06), rng.uniform(0.94, 1.0)
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    lin = np.linspace(0.0, 1.0, frames)
    step = 1.0 / (ORIGINAL_FRAMES_PER_STEP * max(frames - 1, 1))
    times = t0 + (t1 - t0) * lin**gamma
    next_times = t0 + (t1 - t0) * (lin + step) ** gamma
    return times, next_times, float(rng.uniform(0.0, 2 * np.pi)), float(rng.uniform(0.85, 1.15))


def _sample_body(rng: np.random.Generator) -> Body:
    base = Body()
    limb, width = rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.2)
    return Body(
        torso=base.torso * rng.uniform(0.9, 1.1),
        neck=base.neck,
        head_r=base.head_r * rng.uniform(0.85, 1.2),
        shoulder=base.shoulder * width,
        hip=base.hip * width,
        upper_arm=base.upper_arm * limb,
        forearm=base.forearm * limb,
        thigh=base.thigh * limb,
        shin=base.shin * limb,
    )


def _background(rng: np.random.Generator, canvas: int, horizon: float) -> np.ndarray:
    """Wall and floor gradients, low-frequency texture and static clutter shapes (float RGB)."""
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
    angle = rng.uniform(0, 2 * np.pi)
    g = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    wall = _random_colour(rng, 0.2, 0.95, 0.7) * (1 - g) + _random_colour(rng, 0.2, 0.95, 0.7) * g
    floor_c = _random_colour(rng, 0.15, 0.8, 0.6)
    depth_frac = np.clip((yy * canvas - horizon) / max(canvas - horizon, 1.0), 0, 1)[..., None]
    floor = floor_c * (0.75 + 0.35 * depth_frac)
    img = np.where((yy * canvas)[..., None] >= horizon, floor, wall).astype(np.float32)
    k = int(rng.integers(3, 10))
    texture = cv2.resize(rng.random((k, k, 3), dtype=np.float32), (canvas, canvas), interpolation=cv2.INTER_CUBIC)
    img += (texture - 0.5) * rng.uniform(15, 45)
    for _ in range(int(rng.integers(1, 6))):
        colour = tuple(float(c) for c in _random_colour(rng, 0.1, 1.0))
        cx, cy = (float(c) for c in rng.uniform(0, canvas, 2))
        a, b = (float(c) for c in rng.uniform(0.03, 0.14, 2) * canvas)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(img, _pt(cx - a, cy - b), _pt(cx + a, cy + b), colour, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            cv2.ellipse(img, _pt(cx, cy), _pt(a, b), float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)
        else:
            pts = np.array([_pt(cx + a * np.cos(q), cy + b * np.sin(q)) for q in rng.uniform(0, 2 * np.pi, 3)], np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, _SHIFT)
    return img


def _background_depth(canvas: int, horizon: float, ground_v: float, dist: float, wall: float) -> np.ndarray:
    """Depth of the wall (constant) and floor (nearer toward the image bottom)."""
    rows = np.arange(canvas, dtype=np.float32)
    floor = wall + (dist - wall) * (rows - horizon) / max(ground_v - horizon, 1.0)
    col = np.where(rows >= horizon, np.clip(floor, DEPTH_NEAR, wall), wall).astype(np.float32)
    return np.repeat(col[:, None], canvas, axis=1)


def colour_depth(depth: np.ndarray) -> np.ndarray:
    """Depth (body heights) to a jet-coloured RGB image: near red, far blue."""
    level = np.clip((DEPTH_FAR - depth) / (DEPTH_FAR - DEPTH_NEAR), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[..., ::-1])


def render_video(action: Action, rng: np.random.Generator, size: int, frames: int, next_frames: bool = False) -> Frames:
    """Render one video of ``action``: ``frames`` frames of ``size`` x ``size`` pixels
    (and, with ``next_frames``, the original frame after each: ``Frames.rgb_next``)."""
    times, next_times, phase, amp = _sample_times(rng, frames)
    if next_frames:  # poses of the sampled frames first, then of their next frames
        times = np.concatenate([times, next_times])
    pose = action(times, phase, amp)
    pose["yaw"] = pose["yaw"] + rng.uniform(-30, 30)
    body = _sample_body(rng)
    joints = skeleton(pose, body)  # (T, N, 3)

    # camera: perspective, placed so the whole clip stays in view
    dist = rng.uniform(3.0, 5.0)
    hpx = rng.uniform(0.55, 0.8) * size
    depth = dist - joints[..., 2]
    scale = hpx * dist / depth
    u, v = scale * joints[..., 0], -scale * (joints[..., 1] - 0.5)
    margin = body.head_r * hpx + 0.04 * hpx + 1
    sampled = slice(0, frames)  # the camera frames the sampled poses (next frames do not move it)
    span = max(float(u[sampled].max() - u[sampled].min()), float(v[sampled].max() - v[sampled].min())) + 2 * margin
    if span > 0.96 * size:  # a long walk or a jump at a large scale: zoom out
        shrink = 0.96 * size / span
        hpx, u, v, scale, margin = hpx * shrink, u * shrink, v * shrink, scale * shrink, margin * shrink
    u_lo, u_hi, v_lo, v_hi = u[sampled].min(), u[sampled].max(), v[sampled].min(), v[sampled].max()
    uc = rng.uniform(margin - u_lo, max(size - margin - u_hi, margin - u_lo))
    vc = rng.uniform(margin - v_lo, max(size - margin - v_hi, margin - v_lo))
    pad = max(1, int(round(0.04 * size)))
    canvas = size + 2 * pad
    u, v = u + uc + pad, v + vc + pad
    ground_v = vc + pad + 0.5 * hpx
    horizon = ground_v - rng.uniform(0.05, 0.35) * hpx

    background = _background(rng, canvas, horizon)
    wall = dist + rng.uniform(1.5, 4.0)
    background_depth = _background_depth(canvas, horizon, ground_v, dist, wall)

    # actor appearance, contrasting with the background
    dark = float(background.mean()) > 128
    lo, hi = (0.05, 0.4) if dark else (0.6, 1.0)
    limb_c, torso_c, head_c = (_random_colour(rng, lo, hi) for _ in range(3))
    left_c = np.clip(limb_c * 0.8 + (40 if dark else -10), 0, 255)
    nose_c = 255.0 - head_c
    thick = max(1, int(round(rng.uniform(0.045, 0.08) * hpx)))
    torso_thick = max(thick + 1, int(round(thick * 1.7)))
    head_r = body.head_r * scale[:, J["head"]]

    distractor = None
    if rng.random() < 0.5:
        start = rng.uniform(0, canvas, 2)
        velocity = rng.uniform(-0.5, 0.5, 2) * size / max(frames - 1, 1)
        distractor = (start, velocity, rng.uniform(0.03, 0.07) * size, _random_colour(rng, 0.1, 1.0), dist + rng.uniform(0.5, 1.5))

    sigma = rng.uniform(2.0, 6.0)
    offsets = pad + rng.integers(-pad, pad + 1, size=(frames, 2))
    noise = rng.standard_normal((frames, size, size, 3), dtype=np.float32) * sigma
    if next_frames:  # drawn last: the sampled frames do not depend on next_frames
        noise = np.concatenate([noise, rng.standard_normal((frames, size, size, 3), dtype=np.float32) * sigma])

    bone_thick = max(1, int(round(size / 45)))
    joint_r = max(1.0, size / 56)
    out = Frames([], [], [])
    for k in range(len(times)):  # k < frames: sampled frame k; else the next frame of k - frames
        is_next = k >= frames
        t = k - frames if is_next else k
        img = background.copy()
        dep = background_depth.copy()
        if distractor is not None:
            start, velocity, radius, colour, d = distractor
            c = _pt(*(start + velocity * (t + (1.0 / ORIGINAL_FRAMES_PER_STEP if is_next else 0.0))))
            cv2.circle(img, c, int(radius * _ONE), tuple(colour.tolist()), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(dep, c, int(radius * _ONE), (float(d),), -1, cv2.LINE_8, _SHIFT)
        items = []  # (depth, kind, data)
        for a, b in BONES:
            colour = torso_c if (a, b) == (J["neck"], J["pelvis"]) else (left_c if b in _LEFT else limb_c)
            width = torso_thick if (a, b) == (J["neck"], J["pelvis"]) else thick
            items.append((0.5 * (depth[k, a] + depth[k, b]), "line", (a, b, colour, width)))
        items.append((depth[k, J["head"]], "disc", (J["head"], head_c, head_r[k])))
        items.append((depth[k, J["nose"]], "disc", (J["nose"], nose_c, max(1.0, 0.3 * head_r[k]))))
        items.sort(key=lambda item: -item[0])
        for d, kind, data in items:
            if kind == "line":
                a, b, colour, width = data
                pa, pb = _pt(u[k, a], v[k, a]), _pt(u[k, b], v[k, b])
                cv2.line(img, pa, pb, tuple(colour.tolist()), width, cv2.LINE_AA, _SHIFT)
                cv2.line(dep, pa, pb, (float(d),), width, cv2.LINE_8, _SHIFT)
            else:
                j, colour, radius = data
                c = _pt(u[k, j], v[k, j])
                cv2.circle(img, c, int(round(radius * _ONE)), tuple(colour.tolist()), -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(dep, c, int(round(radius * _ONE)), (float(d),), -1, cv2.LINE_8, _SHIFT)

        oy, ox = offsets[t]  # a next frame keeps its sampled frame's camera jitter
        crop = np.s_[oy : oy + size, ox : ox + size]
        rgb = np.clip(img[crop] + noise[k], 0, 255).round().astype(np.uint8)
        if is_next:
            out.rgb_next.append(rgb)
            continue  # no ground truth for next frames: only flow-like modalities read them
        skel = np.zeros((canvas, canvas, 3), np.uint8)
        for (a, b), colour in zip(BONES, _SKELETON_PALETTE):
            cv2.line(skel, _pt(u[k, a], v[k, a]), _pt(u[k, b], v[k, b]), colour, bone_thick, cv2.LINE_AA, _SHIFT)
        for j in range(len(JOINTS)):
            r = joint_r * (2.0 if j == J["head"] else 1.0)
            cv2.circle(skel, _pt(u[k, j], v[k, j]), int(round(r * _ONE)), (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
        out.rgb.append(rgb)
        out.depth.append(colour_depth(dep[crop]))
        out.skeleton.append(np.ascontiguousarray(skel[crop]))
    return out
