"""The actions of the synthetic dataset: a stick figure's pose as a function of time.

An action maps normalised time ``t`` (array in [0, 1]) to a *pose*: a dict of arrays of
joint angles (degrees) and root motion (body heights). :func:`skeleton` turns a pose into
3D joint positions. Actions are built so that the dataset needs temporal order and
cannot be read off one frame:

* many classes share their poses and differ only in order (``stand_up`` is exactly
  ``squat_down`` played backwards, ``lower_both_arms`` is ``raise_both_arms`` backwards),
  which :func:`reverse` guarantees by construction;
* left/right classes are exact mirror images (:func:`mirror`), so only the side moves.

Angles of a limb segment are absolute in the torso (arms) or pelvis (legs) frame:
``abd`` swings the segment out to the side (0 = hanging, 90 = horizontal, 180 = up),
``flex`` swings it forward toward the camera. Body frame: x = the actor's left,
y = up, z = the direction the actor faces (toward the camera at yaw 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Pose = dict[str, np.ndarray]
#: ``action(t, phase, amp) -> Pose``; ``phase`` (radians) shifts periodic motion and
#: ``amp`` (about 1) scales its amplitude, both drawn per video.
Action = Callable[[np.ndarray, float, float], Pose]

SIDES = ("l", "r")
LIMB_KEYS = ("arm_abd", "arm_flex", "fore_abd", "fore_flex", "thigh_abd", "thigh_flex", "shin_abd", "shin_flex")
BODY_KEYS = ("bow", "lean", "yaw", "root_x", "hop")

#: joint names in the order of the arrays :func:`skeleton` returns
JOINTS = (
    "head", "neck", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    "pelvis", "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle", "nose",
)  # fmt: skip
J = {name: i for i, name in enumerate(JOINTS)}
#: bones (joint index pairs) drawn as limbs; the head is drawn as a disc on ``head``
BONES = (
    (J["neck"], J["pelvis"]),
    (J["neck"], J["head"]),
    (J["neck"], J["l_shoulder"]), (J["l_shoulder"], J["l_elbow"]), (J["l_elbow"], J["l_wrist"]),
    (J["neck"], J["r_shoulder"]), (J["r_shoulder"], J["r_elbow"]), (J["r_elbow"], J["r_wrist"]),
    (J["pelvis"], J["l_hip"]), (J["l_hip"], J["l_knee"]), (J["l_knee"], J["l_ankle"]),
    (J["pelvis"], J["r_hip"]), (J["r_hip"], J["r_knee"]), (J["r_knee"], J["r_ankle"]),
)  # fmt: skip


# ------------------------------------------------------------------------ helpers
def ramp(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """Smooth 0 -> 1 between times ``a`` and ``b`` (cosine ease)."""
    x = np.clip((t - a) / (b - a), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def bump(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 over [a, b] (a time-symmetric movement)."""
    x = np.clip((t - a) / (b - a), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(2 * np.pi * x)


def osc(t: np.ndarray, cycles: float, phase: float) -> np.ndarray:
    """``cycles`` sine periods over the clip, shifted by ``phase`` radians."""
    return np.sin(2 * np.pi * cycles * t + phase)


def rest_pose(t: np.ndarray) -> Pose:
    """Standing, arms slightly away from the body, facing the camera."""
    z = np.zeros_like(t, dtype=np.float64)
    pose: Pose = {key: z.copy() for key in BODY_KEYS}
    for s in SIDES:
        for key in LIMB_KEYS:
            pose[f"{key}_{s}"] = z.copy()
        pose[f"arm_abd_{s}"] += 10.0
        pose[f"fore_abd_{s}"] += 8.0
        pose[f"fore_flex_{s}"] += 8.0
        pose[f"thigh_abd_{s}"] += 4.0
        pose[f"shin_abd_{s}"] += 3.0
    return pose


# ------------------------------------------------------------------- combinators
def reverse(action: Action) -> Action:
    """The same action played backwards: ``reverse(a)(t) == a(1 - t)``."""

    def reversed_action(t: np.ndarray, phase: float, amp: float) -> Pose:
        return action(1.0 - t, phase, amp)

    return reversed_action


def mirror_pose(pose: Pose) -> Pose:
    """Swap left and right and reflect the motion across the image's vertical axis."""
    out: Pose = {}
    for key, value in pose.items():
        if key.endswith("_l"):
            out[key[:-2] + "_r"] = value
        elif key.endswith("_r"):
            out[key[:-2] + "_l"] = value
        elif key in ("lean", "yaw", "root_x"):
            out[key] = -value
        else:
            out[key] = value
    return out


def mirror(action: Action) -> Action:
    """The mirror image of an action (left <-> right)."""

    def mirrored(t: np.ndarray, phase: float, amp: float) -> Pose:
        return mirror_pose(action(t, phase, amp))

    return mirrored


# ------------------------------------------------------------------------ actions
# Each is written for the actor's left side or direction; mirror() makes the right one.
def wave_left_hand(t, phase, amp):
    p = rest_pose(t)
    up = ramp(t, 0.0, 0.3)
    p["arm_abd_l"] = 10 + 125 * up
    p["fore_abd_l"] = 8 + 150 * up + 32 * amp * up * osc(t, 2.2, phase)
    return p


def raise_left_arm(t, phase, amp):
    p = rest_pose(t)
    s = ramp(t, 0.05, 0.95)
    p["arm_abd_l"] = 10 + 160 * s
    p["fore_abd_l"] = 8 + 165 * s
    return p


def raise_both_arms(t, phase, amp):
    p = raise_left_arm(t, phase, amp)
    p["arm_abd_r"], p["fore_abd_r"] = p["arm_abd_l"], p["fore_abd_l"]
    return p


def squat_down(t, phase, amp):
    p = rest_pose(t)
    s = ramp(t, 0.08, 0.92)
    for side in SIDES:
        p[f"thigh_flex_{side}"] = 85 * s * amp
        p[f"shin_flex_{side}"] = -70 * s * amp
        p[f"arm_flex_{side}"] = 85 * s
        p[f"fore_flex_{side}"] = 8 + 80 * s
    p["bow"] = 25 * s
    return p


def sit_down(t, phase, amp):
    p = rest_pose(t)
    s = ramp(t, 0.08, 0.92)
    for side in SIDES:
        p[f"thigh_flex_{side}"] = 90 * s
        p[f"shin_flex_{side}"] = -5 * s
        p[f"arm_flex_{side}"] = 15 * s
        p[f"fore_flex_{side}"] = 8 + 60 * s
        p[f"thigh_abd_{side}"] = 4 + 8 * s
    p["bow"] = -8 * s
    return p


def jump(t, phase, amp):
    p = rest_pose(t)
    crouch = bump(t, 0.0, 0.4) + bump(t, 0.6, 1.0)
    air = np.clip(1.0 - ((t - 0.5) / 0.22) ** 2, 0.0, 1.0)
    for side in SIDES:
        p[f"thigh_flex_{side}"] = 55 * crouch
        p[f"shin_flex_{side}"] = -55 * crouch
        p[f"arm_abd_{side}"] = 10 + 60 * air
        p[f"fore_abd_{side}"] = 8 + 80 * air
        p[f"arm_flex_{side}"] = -25 * crouch
    p["bow"] = 15 * crouch
    p["hop"] = 0.25 * amp * air
    return p


def walk_left(t, phase, amp):
    p = rest_pose(t)
    stride = osc(t, 1.5, phase)
    p["yaw"] = -90 + 0 * t
    p["root_x"] = (0.3 - 0.6 * t) * amp
    p["thigh_flex_l"] = 28 * stride
    p["thigh_flex_r"] = -28 * stride
    p["shin_flex_l"] = 28 * stride - 25 * np.clip(-stride, 0, 1)
    p["shin_flex_r"] = -28 * stride - 25 * np.clip(stride, 0, 1)
    p["arm_flex_l"] = -25 * stride
    p["arm_flex_r"] = 25 * stride
    p["fore_flex_l"] = 20 - 15 * stride
    p["fore_flex_r"] = 20 + 15 * stride
    p["hop"] = 0.015 * np.abs(osc(t, 3.0, 2 * phase))
    return p


def crouch_walk_left(t, phase, amp):
    p = walk_left(t, phase, amp)
    stride = osc(t, 1.5, phase)
    p["root_x"] = (0.22 - 0.44 * t) * amp
    p["thigh_flex_l"] = 45 + 22 * stride
    p["thigh_flex_r"] = 45 - 22 * stride
    p["shin_flex_l"] = -45 + 10 * stride
    p["shin_flex_r"] = -45 - 10 * stride
    p["bow"] = 30 + 0 * t
    return p


def turn_left(t, phase, amp):
    p = rest_pose(t)
    p["yaw"] = -90 * ramp(t, 0.05, 0.95)
    for side in SIDES:
        p[f"arm_abd_{side}"] = 10 + 15 * bump(t, 0.05, 0.95)
    return p


def spin(t, phase, amp):
    p = rest_pose(t)
    p["yaw"] = 360 * ramp(t, 0.0, 1.0)
    for side in SIDES:
        p[f"arm_abd_{side}"] = 10 + 70 * bump(t, 0.0, 1.0)
        p[f"fore_abd_{side}"] = 8 + 75 * bump(t, 0.0, 1.0)
    return p


def clap(t, phase, amp):
    p = rest_pose(t)
    lift = ramp(t, 0.0, 0.25)
    open_ = 0.5 + 0.5 * np.cos(2 * np.pi * 2.0 * t + phase)
    for side in SIDES:
        p[f"arm_flex_{side}"] = 80 * lift
        p[f"arm_abd_{side}"] = 10 + (20 + 25 * open_) * lift
        p[f"fore_flex_{side}"] = 8 + 82 * lift
        p[f"fore_abd_{side}"] = 8 + (-40 + 70 * open_ * amp) * lift
    return p


def kick_left(t, phase, amp):
    p = rest_pose(t)
    k = bump(t, 0.15, 0.85)
    p["thigh_abd_l"] = 4 + 55 * k * amp
    p["shin_abd_l"] = 3 + 65 * k * amp
    p["lean"] = -14 * k
    p["arm_abd_r"] = 10 + 50 * k
    p["fore_abd_r"] = 8 + 60 * k
    return p


def bow(t, phase, amp):
    p = rest_pose(t)
    b = bump(t, 0.05, 0.95)
    p["bow"] = 65 * b * amp
    for side in SIDES:
        p[f"arm_flex_{side}"] = -40 * b
        p[f"fore_flex_{side}"] = 8 - 40 * b
    return p


def punch_left(t, phase, amp):
    p = rest_pose(t)
    hit = bump(t, 0.2, 0.8)
    for side in SIDES:  # boxing guard: fists in front of the chest
        p[f"arm_abd_{side}"] = 25 + 0 * t
        p[f"arm_flex_{side}"] = 35 + 0 * t
        p[f"fore_abd_{side}"] = -10 + 0 * t
        p[f"fore_flex_{side}"] = 150 + 0 * t
    p["arm_abd_l"] = 25 + 65 * hit
    p["arm_flex_l"] = 35 - 35 * hit
    p["fore_abd_l"] = -10 + 100 * hit
    p["fore_flex_l"] = 150 - 150 * hit
    p["lean"] = -8 * hit
    return p


def jumping_jacks(t, phase, amp):
    p = rest_pose(t)
    c = 0.5 - 0.5 * np.cos(2 * np.pi * 2.0 * t + 0.3 * phase)
    for side in SIDES:
        p[f"arm_abd_{side}"] = 10 + 155 * c
        p[f"fore_abd_{side}"] = 8 + 165 * c
        p[f"thigh_abd_{side}"] = 4 + 18 * c * amp
        p[f"shin_abd_{side}"] = 3 + 18 * c * amp
    p["hop"] = 0.05 * np.abs(np.sin(2 * np.pi * 2.0 * t + 0.3 * phase))
    return p


def lean_left(t, phase, amp):
    p = rest_pose(t)
    s = ramp(t, 0.05, 0.95)
    p["lean"] = 30 * s * amp
    p["arm_abd_r"] = 10 + 60 * s
    p["fore_abd_r"] = 8 + 80 * s
    return p


def arm_circles(t, phase, amp):
    p = rest_pose(t)
    a = 340 * ramp(t, 0.0, 1.0)
    for side in SIDES:
        p[f"arm_abd_{side}"] = 10 + a
        p[f"fore_abd_{side}"] = 8 + a
    return p


def march_in_place(t, phase, amp):
    p = rest_pose(t)
    step = osc(t, 1.5, phase)
    up_l, up_r = np.clip(step, 0, 1), np.clip(-step, 0, 1)
    p["thigh_flex_l"] = 80 * up_l * amp
    p["thigh_flex_r"] = 80 * up_r * amp
    p["shin_flex_l"] = -15 * up_l
    p["shin_flex_r"] = -15 * up_r
    p["arm_flex_l"] = 35 * up_r
    p["arm_flex_r"] = 35 * up_l
    return p


def touch_toes(t, phase, amp):
    p = rest_pose(t)
    b = bump(t, 0.0, 1.0)
    p["bow"] = 85 * b
    for side in SIDES:
        p[f"arm_flex_{side}"] = 20 * b
        p[f"fore_flex_{side}"] = 8 + 20 * b
        p[f"arm_abd_{side}"] = 10 - 8 * b
    return p


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Action
    #: the class this one is the time-reverse or mirror of, for documentation and tests
    reverse_of: str | None = None
    mirror_of: str | None = None


#: every action, in the order ``--classes C`` takes them (the first C). The first six
#: hold a mirror pair and a time-reverse pair, so even tiny test sets need temporal order.
ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("wave_left_hand", wave_left_hand),
    ActionSpec("wave_right_hand", mirror(wave_left_hand), mirror_of="wave_left_hand"),
    ActionSpec("squat_down", squat_down),
    ActionSpec("stand_up", reverse(squat_down), reverse_of="squat_down"),
    ActionSpec("walk_left", walk_left),
    ActionSpec("walk_right", mirror(walk_left), mirror_of="walk_left"),
    ActionSpec("jump", jump),
    ActionSpec("raise_both_arms", raise_both_arms),
    ActionSpec("lower_both_arms", reverse(raise_both_arms), reverse_of="raise_both_arms"),
    ActionSpec("clap", clap),
    ActionSpec("kick_left", kick_left),
    ActionSpec("kick_right", mirror(kick_left), mirror_of="kick_left"),
    ActionSpec("bow", bow),
    ActionSpec("turn_left", turn_left),
    ActionSpec("turn_right", mirror(turn_left), mirror_of="turn_left"),
    ActionSpec("spin", spin),
    ActionSpec("jumping_jacks", jumping_jacks),
    ActionSpec("punch_left", punch_left),
    ActionSpec("punch_right", mirror(punch_left), mirror_of="punch_left"),
    ActionSpec("sit_down", sit_down),
    ActionSpec("rise_from_sitting", reverse(sit_down), reverse_of="sit_down"),
    ActionSpec("raise_left_arm", raise_left_arm),
    ActionSpec("lower_left_arm", reverse(raise_left_arm), reverse_of="raise_left_arm"),
    ActionSpec("lean_left", lean_left),
    ActionSpec("lean_right", mirror(lean_left), mirror_of="lean_left"),
    ActionSpec("arm_circles", arm_circles),
    ActionSpec("march_in_place", march_in_place),
    ActionSpec("touch_toes", touch_toes),
    ActionSpec("crouch_walk_left", crouch_walk_left),
    ActionSpec("crouch_walk_right", mirror(crouch_walk_left), mirror_of="crouch_walk_left"),
)
ACTION_INDEX: dict[str, int] = {spec.name: i for i, spec in enumerate(ACTIONS)}


# ---------------------------------------------------------------------- skeleton
@dataclass(frozen=True)
class Body:
    """Segment lengths in body heights (a standing actor is about 1 tall)."""

    torso: float = 0.30
    neck: float = 0.05
    head_r: float = 0.065
    shoulder: float = 0.10
    hip: float = 0.055
    upper_arm: float = 0.16
    forearm: float = 0.15
    thigh: float = 0.24
    shin: float = 0.24


def _direction(abd: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
    """Unit vectors (T, 3) of a segment hanging down, swung out by ``abd`` and forward by ``flex``."""
    a, f = np.radians(abd), np.radians(flex)
    return np.stack([side * np.sin(a), -np.cos(a) * np.cos(f), np.cos(a) * np.sin(f)], axis=-1)


def skeleton(pose: Pose, body: Body = Body()) -> np.ndarray:
    """3D joints ``(T, len(JOINTS), 3)`` in world units: x right, y up (0 = ground), z toward the camera.

    The lower ankle touches the ground unless the pose lifts it (``hop``).
    """
    n = len(pose["yaw"])
    joints = np.zeros((n, len(JOINTS), 3))
    # upper body, in the torso frame (pelvis at the origin), then bowed / leaned
    neck = np.array([0.0, body.torso, 0.0])
    upper = np.zeros((n, 8, 3))
    upper[:, 0] = neck + [0.0, body.neck + body.head_r, 0.0]
    upper[:, 1] = neck
    for k, (side, sign) in enumerate((("l", 1.0), ("r", -1.0))):
        shoulder = neck + [sign * body.shoulder, -0.02, 0.0]
        elbow = shoulder + body.upper_arm * _direction(pose[f"arm_abd_{side}"], pose[f"arm_flex_{side}"], sign)
        wrist = elbow + body.forearm * _direction(pose[f"fore_abd_{side}"], pose[f"fore_flex_{side}"], sign)
        upper[:, 2 + 3 * k] = shoulder
        upper[:, 3 + 3 * k] = elbow
        upper[:, 4 + 3 * k] = wrist
    nose = upper[:, 0] + [0.0, 0.0, body.head_r]
    upper = np.concatenate([upper, nose[:, None]], axis=1)  # (n, 9, 3)
    b, l = np.radians(pose["bow"]), np.radians(pose["lean"])
    cb, sb, cl, sl = np.cos(b)[:, None], np.sin(b)[:, None], np.cos(l)[:, None], np.sin(l)[:, None]
    x, y, z = upper[..., 0], upper[..., 1], upper[..., 2]
    y, z = y * cb - z * sb, y * sb + z * cb  # bow: rotate toward +z about x
    x, y = x * cl + y * sl, -x * sl + y * cl  # lean: rotate toward +x about z
    upper = np.stack([x, y, z], axis=-1)
    joints[:, :8] = upper[:, :8]
    joints[:, J["nose"]] = upper[:, 8]
    # legs, in the pelvis frame
    for side, sign, base in (("l", 1.0, J["l_hip"]), ("r", -1.0, J["r_hip"])):
        hip = np.array([sign * body.hip, -0.02, 0.0])
        knee = hip + body.thigh * _direction(pose[f"thigh_abd_{side}"], pose[f"thigh_flex_{side}"], sign)
        ankle = knee + body.shin * _direction(pose[f"shin_abd_{side}"], pose[f"shin_flex_{side}"], sign)
        joints[:, base] = hip
        joints[:, base + 1] = knee
        joints[:, base + 2] = ankle
    # yaw about the vertical through the pelvis, then stand on the ground and move
    yaw = np.radians(pose["yaw"])[:, None]
    x, z = joints[..., 0], joints[..., 2]
    x, z = x * np.cos(yaw) + z * np.sin(yaw), -x * np.sin(yaw) + z * np.cos(yaw)
    joints[..., 0], joints[..., 2] = x, z
    lowest = np.minimum(joints[:, J["l_ankle"], 1], joints[:, J["r_ankle"], 1])
    joints[..., 1] += (-lowest + 0.02 + pose["hop"])[:, None]
    joints[..., 0] += pose["root_x"][:, None]
    return joints
