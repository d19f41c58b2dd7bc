"""The synthetic dataset's world (`data/synthetic.py`): rotations, each subject's body and colours, each scene and
camera, each recording's perturbed motion (`Instance`) and the forward kinematics that turns it into joint
positions and segment frames (from which both the video and the wearable sensors are computed). numpy only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from mumae_jax.data.synthetic_motion import _CH, _SIDE_CH, _eval_terms, _rng
from mumae_jax.data.synthetic_render import AXIS_AZ, JOINTS, ROOM_HEIGHT, _J

DESK_SCENE = 3  # the scene with a desk (synthetic.DESK_CLASSES are recorded there)
GRAVITY = 9.81

# ----------------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------------

def _rot(axis: int, a: np.ndarray) -> np.ndarray:
    """Rotation matrices [T, 3, 3] by angles a [T] (radians) about axis 0/1/2 (x/y/z)."""
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def _mv(R: np.ndarray, v) -> np.ndarray:
    """R [T, 3, 3] times a constant vector v [3] → [T, 3] (faster than matmul for this shape)."""
    return R[..., 0] * v[0] + R[..., 1] * v[1] + R[..., 2] * v[2]


def _euler_zxy(R: np.ndarray) -> np.ndarray:
    """R = Rz(a)·Rx(r)·Ry(p) → degrees [T, 3] = (azimuth in [0, 360), pitch p, roll r).

    This order is singular only when the segment's lateral axis is vertical, which a thigh never reaches.
    """
    r = np.arcsin(np.clip(R[:, 2, 1], -1.0, 1.0))
    a = np.arctan2(-R[:, 0, 1], R[:, 1, 1])
    p = np.arctan2(-R[:, 2, 0], R[:, 2, 2])
    return np.stack([np.mod(np.degrees(a), 360.0), np.degrees(p), np.degrees(r)], -1)


def _const_rot(angles_deg) -> np.ndarray:
    ax, ay, az = np.radians(np.asarray(angles_deg, dtype=np.float64))[:, None]
    return (_rot(2, az) @ _rot(1, ay) @ _rot(0, ax))[0]


# ----------------------------------------------------------------------------------------------------
# Per-subject body, per-instance motion, per-camera view
# ----------------------------------------------------------------------------------------------------

def _hsv(h, s, v) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


@dataclasses.dataclass(frozen=True)
class _Body:
    height: float
    torso: float
    neck: float
    head_r: float
    shoulder_w: float
    shoulder_drop: float
    upper_arm: float
    forearm: float
    hip_w: float
    thigh: float
    shin: float
    radius: Mapping[str, float]  # limb radius (m) per colour group
    colors: Mapping[str, np.ndarray]


# The clothing every subject's colours are pulled towards by `clothing_variety` < 1 (a uniform-like palette).
_COMMON_COLORS = {"shirt": (0.42, 0.45, 0.52), "trousers": (0.22, 0.23, 0.28), "skin": (0.78, 0.6, 0.48)}


def _make_body(seed: int, subject: int, clothing_variety: float = 1.0) -> _Body:
    r = _rng(seed, "body", subject)
    H = r.uniform(1.55, 1.90)
    legs, torso, arms, width, head = r.uniform(0.92, 1.08, 5)
    thick = r.uniform(0.85, 1.2)
    shirt = _hsv(r.uniform(), r.uniform(0.3, 0.9), r.uniform(0.35, 0.95))
    trousers = _hsv(r.uniform(), r.uniform(0.2, 0.8), r.uniform(0.15, 0.7))
    skin = np.array([0.95, 0.76, 0.62], np.float32) * np.float32(r.uniform(0.45, 1.05))
    skin = np.clip(skin + r.uniform(-0.04, 0.04, 3).astype(np.float32), 0, 1)
    v = np.float32(clothing_variety)
    shirt, trousers, skin = ((v * c + (1 - v) * np.asarray(_COMMON_COLORS[k], np.float32)).astype(np.float32)
                             for k, c in (("shirt", shirt), ("trousers", trousers), ("skin", skin)))
    sleeve = shirt if r.uniform() < 0.5 else skin  # long or short sleeves
    colors = {"shirt": shirt, "trousers": trousers, "skin": skin, "sleeve": sleeve,
              "nose": skin * np.float32(0.55)}
    radius = {"torso": 0.075 * H * width * thick, "pelvis": 0.055 * H * width * thick,
              "shoulders": 0.04 * H * thick, "upper_arm": 0.028 * H * thick, "forearm": 0.023 * H * thick,
              "thigh": 0.037 * H * thick, "shin": 0.029 * H * thick, "neck": 0.022 * H * thick,
              "nose": 0.012 * H}
    return _Body(height=H, torso=0.30 * H * torso, neck=0.09 * H * head, head_r=0.062 * H * head,
                 shoulder_w=0.115 * H * width, shoulder_drop=0.035 * H, upper_arm=0.175 * H * arms,
                 forearm=0.16 * H * arms, hip_w=0.055 * H * width, thigh=0.245 * H * legs,
                 shin=0.25 * H * legs, radius=radius, colors=colors)


@dataclasses.dataclass(frozen=True)
class _Scene:
    door_az: float  # radians: direction (from the room centre) of the door people enter/exit through
    desk_az: float  # radians: direction of the desk (desk scene)
    boxes: tuple  # ((lo xyz, hi xyz, rgb), ...) solid objects that occlude the figure
    floor_colors: np.ndarray  # [2, 3]
    tile: float
    wall_colors: np.ndarray  # [4, 3]
    stripe: float
    features: tuple  # ((wall, s0, s1, z0, z1, rgb), ...)
    floor_waves: np.ndarray  # [4, 4]: kx, ky, phase, amplitude


@dataclasses.dataclass(frozen=True)
class _Camera:
    pos: np.ndarray
    right: np.ndarray
    up: np.ndarray
    fwd: np.ndarray
    tan_half_vfov: float
    gain: np.ndarray  # rgb light gain (includes tint)


CAMERA_ELEVATION_DEG = (12.0, 28.0)  # degrees above the horizontal
_CAM_AZ = (0.25 * np.pi, 0.75 * np.pi, 1.25 * np.pi, 1.75 * np.pi)  # four corners, like MMAct


def _make_scene(seed: int, scene: int) -> _Scene:
    r = _rng(seed, "scene", scene)
    door_i = int(r.integers(4))
    desk_i = int((door_i + 1 + r.integers(3)) % 4)
    door_az, desk_az = AXIS_AZ[door_i], AXIS_AZ[desk_i]
    boxes = []
    base = _hsv(r.uniform(), r.uniform(0.05, 0.35), r.uniform(0.45, 0.8))
    if scene == DESK_SCENE:  # a desk 0.85 m in front of the room centre
        d = np.array([np.cos(desk_az), np.sin(desk_az)])
        c = 0.85 * d
        half = np.abs(d) * 0.3 + np.abs(d[::-1]) * 0.7
        boxes.append((np.array([*(c - half), 0.0]), np.array([*(c + half), 0.74]),
                      _hsv(r.uniform(0.05, 0.12), r.uniform(0.3, 0.6), r.uniform(0.3, 0.6))))
    elif scene == 2:  # pillars between some cameras and the actor
        for cam in r.choice(4, size=2, replace=False):
            az = _CAM_AZ[cam] + np.radians(r.uniform(8, 18) * r.choice([-1, 1]))
            dist = r.uniform(2.0, 2.8)
            c = dist * np.array([np.cos(az), np.sin(az)])
            boxes.append((np.array([*(c - 0.22), 0.0]), np.array([*(c + 0.22), ROOM_HEIGHT]),
                          _hsv(r.uniform(), r.uniform(0.0, 0.2), r.uniform(0.5, 0.85))))
    elif scene == 4:  # ticket gates either side of the path to the door
        d = np.array([np.cos(door_az), np.sin(door_az)])
        n = d[::-1] * np.array([-1.0, 1.0])
        for side in (-1, 1):
            c = 1.9 * d + side * 0.75 * n
            half = np.abs(d) * 0.45 + np.abs(n) * 0.12
            boxes.append((np.array([*(c - half), 0.0]), np.array([*(c + half), 1.0]),
                          _hsv(r.uniform(), r.uniform(0.1, 0.5), r.uniform(0.3, 0.7))))
    floor = np.stack([_hsv(r.uniform(), r.uniform(0.05, 0.4), r.uniform(0.35, 0.75))] * 2)
    floor[1] = np.clip(floor[1] * r.uniform(0.85, 0.95), 0, 1)
    walls = np.stack([np.clip(base * r.uniform(0.85, 1.15, 3), 0, 1) for _ in range(4)]).astype(np.float32)
    features = []
    # the door (brown, 1.6 m wide) on the wall at door_az
    door_rgb = np.array([0.45, 0.3, 0.18], np.float32) * np.float32(r.uniform(0.7, 1.2))
    features.append((door_i, -0.8, 0.8, 0.0, 2.2, door_rgb))
    for _ in range(int(r.integers(3, 7))):
        s0 = r.uniform(-6.5, 5.0)
        z0 = r.uniform(0.3, 2.0)
        features.append((int(r.integers(4)), s0, s0 + r.uniform(0.4, 2.0), z0, z0 + r.uniform(0.4, 1.6),
                         _hsv(r.uniform(), r.uniform(0.1, 0.9), r.uniform(0.2, 0.95))))
    waves = np.stack([r.uniform(-2.5, 2.5, 4), r.uniform(-2.5, 2.5, 4), r.uniform(0, 2 * np.pi, 4),
                      r.uniform(0.01, 0.05, 4)], -1)
    return _Scene(door_az=door_az, desk_az=desk_az, boxes=tuple(boxes), floor_colors=floor.astype(np.float32),
                  tile=float(r.uniform(0.4, 1.0)), wall_colors=walls, stripe=float(r.uniform(0.0, 0.05)),
                  features=tuple(features), floor_waves=waves)


def _make_camera(seed: int, scene: int, camera: int) -> _Camera:
    r = _rng(seed, "camera", scene, camera)
    az = _CAM_AZ[camera - 1] + np.radians(r.uniform(-10, 10))
    el = np.radians(r.uniform(*CAMERA_ELEVATION_DEG))
    dist = r.uniform(4.6, 6.0)
    target = np.array([r.uniform(-0.2, 0.2), r.uniform(-0.2, 0.2), 0.85])
    pos = target + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    fwd = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    roll = np.radians(r.uniform(-2, 2))
    right, up = np.cos(roll) * right + np.sin(roll) * up, -np.sin(roll) * right + np.cos(roll) * up
    gain = (r.uniform(0.8, 1.15) * r.uniform(0.92, 1.08, 3)).astype(np.float32)
    tan_half_vfov = float(np.tan(np.radians(r.uniform(34, 40)) / 2))
    return _Camera(pos=pos, right=right, up=up, fwd=fwd, tan_half_vfov=tan_half_vfov, gain=gain)


@dataclasses.dataclass(frozen=True)
class _Instance:
    ref: Any  # synthetic.InstanceRef
    duration: float
    warp: float  # time warp u -> u + warp·sin(πu) (monotone): the pace varies within the clip
    terms: list
    face_path: bool
    facing: float  # radians
    start: np.ndarray  # world xy of the root at u = 0
    body: _Body
    light: float  # per-recording light gain
    watch_mount: np.ndarray  # [3, 3] watch frame in the forearm frame
    phone_mount: np.ndarray  # [3, 3] phone frame in the thigh frame (how it sits in the pocket)
    noise: Mapping[str, tuple]  # sensor -> (std, bias [3])


def kinematics(inst: _Instance, t: np.ndarray) -> dict:
    """Forward kinematics at times t [T] (s): world joints [T, J, 3] and segment frames [T, 3, 3]."""
    b = inst.body
    u = np.asarray(t, np.float64) / inst.duration
    u = u + inst.warp * np.sin(np.pi * u)
    ch = _eval_terms(inst.terms, u)
    deg = np.radians
    scale = b.height / 1.75
    T = u.shape[0]
    yaw = deg(ch[_CH["yaw"]])
    if inst.face_path:
        du = 1e-4
        p = _eval_terms(inst.terms, np.concatenate([u - du, u + du]), (_CH["fwd"], _CH["lat"]))
        yaw = yaw + np.arctan2(p[_CH["lat"], T:] - p[_CH["lat"], :T], p[_CH["fwd"], T:] - p[_CH["fwd"], :T])
    R_root = _rot(2, inst.facing + yaw) @ _rot(1, deg(ch[_CH["body_pitch"]]))
    R_torso = (R_root @ _rot(2, deg(ch[_CH["torso_yaw"]])) @ _rot(1, deg(ch[_CH["torso_pitch"]]))
               @ _rot(0, deg(ch[_CH["torso_roll"]])))
    neck = _mv(R_torso, [0.0, 0.0, b.torso])
    R_head = R_torso @ _rot(2, deg(ch[_CH["head_yaw"]])) @ _rot(1, deg(ch[_CH["head_pitch"]]))
    head = neck + _mv(R_head, [0.0, 0.0, b.neck])
    nose = head + _mv(R_head, [1.45 * b.head_r, 0.0, 0.0])
    J = np.zeros((T, len(JOINTS), 3))
    J[:, _J["neck"]], J[:, _J["head"]], J[:, _J["nose"]] = neck, head, nose
    frames = {}
    for s, sign in (("r", -1.0), ("l", 1.0)):
        a = {c: deg(ch[_CH[f"{s}_{c}"]]) for c in _SIDE_CH}
        sh = neck + _mv(R_torso, [0.0, sign * b.shoulder_w, -b.shoulder_drop])
        R_ua = R_torso @ _rot(1, -a["sh_flex"]) @ _rot(0, sign * a["sh_abd"]) @ _rot(2, sign * a["sh_rot"])
        elbow = sh + _mv(R_ua, [0.0, 0.0, -b.upper_arm])
        R_fa = R_ua @ _rot(1, -a["elbow"]) @ _rot(2, sign * a["roll"])
        wrist = elbow + _mv(R_fa, [0.0, 0.0, -b.forearm])
        hip = _mv(R_root, [0.0, sign * b.hip_w, 0.0])
        R_th = (R_root @ _rot(1, -a["hip_flex"]) @ _rot(0, sign * a["hip_abd"])
                @ _rot(2, sign * a["hip_rot"]))
        knee = hip + _mv(R_th, [0.0, 0.0, -b.thigh])
        ankle = knee + _mv((R_th @ _rot(1, a["knee"])), [0.0, 0.0, -b.shin])
        for name, v in (("shoulder", sh), ("elbow", elbow), ("wrist", wrist), ("hip", hip), ("knee", knee),
                        ("ankle", ankle)):
            J[:, _J[f"{s}_{name}"]] = v
        frames[f"{s}_forearm"], frames[f"{s}_thigh"] = R_fa, R_th
    # ground contact: the lowest body point (soft minimum, so accelerations stay smooth) on the floor
    z = J[:, :, 2].copy()
    z[:, _J["head"]] -= b.head_r
    z = np.delete(z, _J["nose"], axis=1)
    tau = 0.025
    zmin = z.min(axis=1, keepdims=True)
    soft = zmin[:, 0] - tau * np.log(np.exp(-(z - zmin) / tau).sum(axis=1))
    root = np.zeros((T, 3))
    cf, sf = np.cos(inst.facing), np.sin(inst.facing)
    fwd, lat = ch[_CH["fwd"]] * scale, ch[_CH["lat"]] * scale
    root[:, 0] = inst.start[0] + cf * fwd - sf * lat
    root[:, 1] = inst.start[1] + sf * fwd + cf * lat
    root[:, 2] = -soft + tau * np.log(2.0) + ch[_CH["up"]] * scale
    J += root[:, None, :]
    return {"joints": J, "forearm": frames["r_forearm"], "thigh": frames["r_thigh"],
            "phone_pos": J[:, _J["r_hip"]] + _mv(frames["r_thigh"], [0.07 * scale, 0.0, -0.4 * b.thigh])}



def sensor_values(inst: _Instance, t: np.ndarray, h: float = 2e-3) -> dict[str, np.ndarray]:
    """The noiseless wearable signals at times t [n] (s), by central differences of step h: {'acc_watch',
    'acc_phone' (specific force, m/s², in the watch / phone frame), 'gyro' (phone angular velocity, rad/s),
    'orientation' (phone azimuth, pitch, roll, degrees)}: float64 [n, 3] each."""
    kin = kinematics(inst, np.concatenate([t - h, t, t + h]))
    n_all = t.shape[0]

    def split(x):
        return x[:n_all], x[n_all:2 * n_all], x[2 * n_all:]

    g = np.array([0.0, 0.0, GRAVITY])
    wm, wp_, wpp = split(kin["joints"][:, _J["r_wrist"]])
    f_watch = (wpp - 2 * wp_ + wm) / h ** 2 + g
    R_watch = kin["forearm"][n_all:2 * n_all] @ inst.watch_mount
    pm, pp_, ppp = split(kin["phone_pos"])
    f_phone = (ppp - 2 * pp_ + pm) / h ** 2 + g
    Rm, R0, Rp_ = split(kin["thigh"] @ inst.phone_mount)
    W = np.swapaxes(R0, 1, 2) @ (Rp_ - Rm) / (2 * h)
    omega = 0.5 * np.stack([W[:, 2, 1] - W[:, 1, 2], W[:, 0, 2] - W[:, 2, 0], W[:, 1, 0] - W[:, 0, 1]], -1)
    return {"acc_watch": np.einsum("tji,tj->ti", R_watch, f_watch), "acc_phone": np.einsum("tji,tj->ti", R0, f_phone),
            "gyro": omega, "orientation": _euler_zxy(R0)}
