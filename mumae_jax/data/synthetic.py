"""A deterministic, procedurally generated multimodal action dataset with MMAct's structure.

A 3D stick figure (pelvis, torso, head with a nose, two arms, two legs) is driven by one motion program
per class: time functions of joint angles and of the root motion over normalised time u in [0, 1].
Video frames and the four wearable sensors are both computed from the same motion:

- video: each camera projects the figure (perspective) and rasterises limbs as thick anti-aliased
  lines on a ray-cast textured room (floor tiles, walls, and the scene's objects, which occlude);
- `acc_watch`: specific force (a + (0, 0, 9.81)) at the right wrist in the forearm frame (forearm roll,
  invisible to the camera, rotates gravity in this frame); `acc_phone`: the same at the right thigh
  (trouser pocket) in the thigh frame; `gyro`: angular velocity of the right thigh in its frame;
  `orientation`: the right thigh's orientation angles (azimuth, pitch, roll in degrees).

Programs (`PROGRAMS`) are written with a small term language: `chan(channel, *terms)` and
`both(side_channel, *terms)` with terms `C` (constant), `Sn` (sine), `Pl` (smooth pulse train), `Bp`
(bump), `Rp` (ramp), `Hd` (rise-hold-fall) and `Tr` (travel); `_gait` builds walking-like programs. Each
recording perturbs amplitudes, phases, timings and posture; each subject has its own body and colours;
each camera its viewpoint and light.

Everything is a pure function of (seed, class, subject, scene, session, camera); `num_subjects` etc. only
decide which clips are listed. Layout follows MMAct: 33 classes (23 base / 10 novel, docs/official_code.md §1.3), scenes
1-4 (desk classes only in scene 3), cameras 1-4 at the four corners, one sensor recording per
(subject, scene, session, action) instance shared by all of its cameras. numpy only.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from mumae_jax.data.splits import MUMAE_SPLIT3_BASE, MUMAE_SPLIT3_NOVEL
from mumae_jax.data.synthetic_render import AXIS_AZ, JOINTS, ROOM_HEIGHT, _J, View  # noqa: F401 (JOINTS re-exported)
from mumae_jax.data import synthetic_render as raster

# ----------------------------------------------------------------------------------------------------
# Classes, sensors, layout
# ----------------------------------------------------------------------------------------------------

# The Mu-MAE split 3 class lists (docs/official_code.md §1.3) are defined once, in splits.py.
BASE_CLASSES = MUMAE_SPLIT3_BASE
NOVEL_CLASSES = MUMAE_SPLIT3_NOVEL
CLASSES = tuple(sorted(BASE_CLASSES + NOVEL_CLASSES))  # index = global class id (carrying=0 … waving_hand=32)
CLASS_TO_ID = {name: i for i, name in enumerate(CLASSES)}

SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
SENSOR_RATES_HZ = {"acc_phone": 100, "acc_watch": 100, "gyro": 50, "orientation": 50}

SCENES = (1, 2, 3, 4)  # 1 free space, 2 occlusion (pillars), 3 desk work, 4 station entrance (gates)
DESK_SCENE = 3
OPEN_SCENES = (1, 2, 4)
DESK_CLASSES = ("drinking", "pocket_in", "pocket_out", "sitting", "sitting_down", "standing_up", "using_pc")
TWO_SCENE_CLASSES = ("talking_on_phone", "using_phone")  # open scenes and (about 1 in 4) the desk scene

MAX_CAMERAS = 4
GRAVITY = 9.81
BASE_DURATION_S = 2.8  # clip duration at speed 1; sessions scale speed by 0.7-1.4 (2.0-4.0 s)



@dataclasses.dataclass(frozen=True, order=True)
class InstanceRef:
    """One recording: (action, subject, scene, session). All cameras of it share one sensor file."""
    action: str
    subject: int
    scene: int
    session: int

    @property
    def name(self) -> str:
        """MMAct sensor-file stem, `subject{N}_scene{S}_session{T}_{action}`."""
        return f"subject{self.subject}_scene{self.scene}_session{self.session}_{self.action}"

    @property
    def label(self) -> int:
        return CLASS_TO_ID[self.action]


@dataclasses.dataclass(frozen=True, order=True)
class ClipRef:
    """One video clip: an instance seen by one camera."""
    action: str
    subject: int
    scene: int
    session: int
    camera: int

    @property
    def instance(self) -> InstanceRef:
        return InstanceRef(self.action, self.subject, self.scene, self.session)

    @property
    def name(self) -> str:
        """MMAct clip stem, `subject{N}_cam{K}_scene{S}_session{T}_{action}`."""
        return f"subject{self.subject}_cam{self.camera}_scene{self.scene}_session{self.session}_{self.action}"

    @property
    def label(self) -> int:
        return CLASS_TO_ID[self.action]


# ----------------------------------------------------------------------------------------------------
# Seeding
# ----------------------------------------------------------------------------------------------------

def _key(x) -> int:
    if isinstance(x, str):
        return zlib.crc32(x.encode("utf-8"))
    return int(x) & 0xFFFFFFFFFFFFFFFF


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_key(k) for k in keys]))


# ----------------------------------------------------------------------------------------------------
# Motion programs: channels, waveform terms, the 33 programs
# ----------------------------------------------------------------------------------------------------

# Root: fwd/lat/up in metres (scaled by body height / 1.75), in the instance's facing frame; yaw and
# body_pitch in degrees. All other channels are joint angles in degrees (positive: distal end forward /
# away from the body; knee positive = bends back).
_SIDE_CH = ("sh_flex", "sh_abd", "sh_rot", "elbow", "roll", "hip_flex", "hip_abd", "hip_rot", "knee")
CHANNELS = (("fwd", "lat", "up", "yaw", "body_pitch", "torso_pitch", "torso_yaw", "torso_roll",
             "head_yaw", "head_pitch")
            + tuple(f"r_{c}" for c in _SIDE_CH) + tuple(f"l_{c}" for c in _SIDE_CH))
_CH = {name: i for i, name in enumerate(CHANNELS)}

# Terms: (shape, amplitude, *params). u is normalised time. env = (e0, e1, e2, e3): smooth rise over
# [e0, e1], smooth fall over [e2, e3] (e1 <= e2).
_ALWAYS = (-1.0, -0.5, 1.5, 2.0)


def C(v):
    """Constant."""
    return ("c", float(v))


def Sn(a, cycles, phase=0.0, env=_ALWAYS):
    """a·sin(2π(cycles·u + phase + φ))·env(u); φ = per-instance start phase."""
    return ("s", float(a), float(cycles), float(phase), tuple(env))


def Pl(a, cycles, phase=0.0, env=_ALWAYS):
    """Smooth pulse train a·((1 - cos 2π(cycles·u + phase + φ)) / 2)²·env(u); peaks at half cycles."""
    return ("p", float(a), float(cycles), float(phase), tuple(env))


def Bp(a, center, width):
    """C2 bump of half-width `width` centred at `center`."""
    return ("b", float(a), float(center), float(width))


def Rp(a, t0, t1):
    """C2 (quintic smoothstep) ramp from 0 to a over [t0, t1]."""
    return ("r", float(a), float(t0), float(t1))


def Hd(a, t0, t1, t2, t3):
    """Hold: rise to a over [t0, t1], stay, fall back to 0 over [t2, t3]."""
    return ("h", float(a), float(t0), float(t1), float(t2), float(t3))


def Tr(d, env=_ALWAYS):
    """Travel: position whose velocity ∝ env(u); covers distance d over [0, 1]."""
    return ("t", float(d), tuple(env))


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def _smooth_int(x):
    """∫_0^x smooth(s) ds (x may exceed [0, 1])."""
    xc = np.clip(x, 0.0, 1.0)
    return xc ** 6 - 3.0 * xc ** 5 + 2.5 * xc ** 4 + np.maximum(x - 1.0, 0.0)


def _ramp(u, t0, t1):
    return _smooth((u - t0) / (t1 - t0))


def _ramp_int(u, t0, t1):
    return (t1 - t0) * _smooth_int((u - t0) / (t1 - t0))


def _env(u, e):
    return _ramp(u, e[0], e[1]) - _ramp(u, e[2], e[3])


def _env_int(u, e):
    return _ramp_int(u, e[0], e[1]) - _ramp_int(u, e[2], e[3])


def _bump(u, c, w):
    x = np.clip((u - c) / w, -1.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * x))) ** 2


def _merge(*parts: Mapping[str, Sequence]) -> dict:
    out: dict[str, list] = {}
    for part in parts:
        for ch, terms in part.items():
            if ch not in _CH:
                raise KeyError(f"unknown channel {ch!r}")
            out.setdefault(ch, []).extend(terms)
    return out


def chan(name, *terms):
    return {name: list(terms)}


def both(name, *terms):
    return {f"r_{name}": list(terms), f"l_{name}": list(terms)}


def _gait(k, hip, knee, arm, dist, back=False, env=_ALWAYS, arm_swing=True):
    """Alternating legs (k cycles over the clip), counter-swinging arms, travel `dist` forward/back."""
    kr, kl = (0.0, 0.5) if back else (0.55, 0.05)  # knee flexes in the swing phase
    parts = [chan("r_hip_flex", Sn(hip, k, 0.0, env)), chan("l_hip_flex", Sn(hip, k, 0.5, env)),
             chan("r_knee", C(4), Pl(knee, k, kr, env)), chan("l_knee", C(4), Pl(knee, k, kl, env)),
             chan("torso_yaw", Sn(4, k, 0.5, env)), chan("torso_roll", Sn(2, k, 0.25, env)),
             chan("fwd", Tr(-dist if back else dist, env))]
    if arm_swing:
        parts += [chan("r_sh_flex", Sn(arm, k, 0.5, env)), chan("l_sh_flex", Sn(arm, k, 0.0, env)),
                  chan("r_elbow", Pl(0.4 * arm, k, 0.25, env)), chan("l_elbow", Pl(0.4 * arm, k, 0.75, env))]
    return _merge(*parts)


_SEATED = _merge(both("hip_flex", C(88)), both("knee", C(88)), chan("torso_pitch", C(4)))


@dataclasses.dataclass(frozen=True)
class MotionProgram:
    """One class's motion: channel -> terms; `facing` in {'random', 'door_in', 'door_out', 'desk'};
    `face_path`: body yaw follows the direction of travel."""
    channels: Mapping[str, tuple]
    facing: str = "random"
    face_path: bool = False


def _program(*parts, facing="random", face_path=False) -> MotionProgram:
    merged = _merge(*parts)
    return MotionProgram({k: tuple(v) for k, v in merged.items()}, facing, face_path)


def _build_programs() -> dict[str, MotionProgram]:
    P = {}
    E = (0.12, 0.3, 0.68, 0.86)  # a generic raise-hold-lower envelope
    # --- locomotion ---------------------------------------------------------------------------------
    P["walking"] = _program(_gait(2.2, 20, 40, 20, 2.2))
    P["running"] = _program(
        _gait(3.4, 32, 80, 35, 3.0), both("elbow", C(80)), chan("torso_pitch", C(10)),
        chan("up", Pl(0.05, 6.8, 0.3)))
    P["carrying"] = _program(  # walk with a box held in front: no arm swing, forearms rolled palm-up
        _gait(2.2, 18, 30, 0, 2.2, arm_swing=False),
        both("sh_flex", C(28), Sn(2, 4.4)), both("elbow", C(80)), both("sh_abd", C(6)),
        both("roll", C(-60)), chan("torso_pitch", C(-6)))
    P["loitering"] = _program(  # slow wandering S-curve, body follows the path, hands behind the back
        _gait(1.6, 14, 22, 6, 1.4), chan("lat", Sn(0.35, 0.5)), chan("head_yaw", Sn(35, 1.1, 0.3)),
        both("sh_flex", C(-14)), both("elbow", C(35)), face_path=True)
    env_in = (-0.2, -0.1, 0.55, 0.72)  # walks in through the door and stops, then looks around
    P["entering"] = _program(
        _gait(2.0, 20, 35, 18, 2.0, env=env_in), chan("head_yaw", Bp(35, 0.84, 0.12)), facing="door_in")
    env_out = (0.12, 0.3, 1.2, 1.3)  # stands, glances back, starts walking out through the door
    P["exiting"] = _program(
        _gait(2.0, 20, 35, 18, 2.0, env=env_out), chan("head_yaw", Bp(-25, 0.08, 0.08)), facing="door_out")
    # pushing vs pulling: the same arms-forward posture and steps; pushing walks forwards leaning in with
    # elbow-extension strokes, pulling walks backwards leaning back with elbow-flexion strokes
    P["pushing"] = _program(
        _gait(2.0, 14, 25, 0, 1.2, arm_swing=False), both("sh_flex", C(55)),
        both("elbow", C(30), Pl(-20, 2.0, 0.25)), both("roll", C(-10)), chan("torso_pitch", C(10)))
    P["pulling"] = _program(
        _gait(2.0, 14, 25, 0, 1.2, back=True, arm_swing=False), both("sh_flex", C(58)),
        both("elbow", C(15), Pl(30, 2.0, 0.25)), both("roll", C(-10)), chan("torso_pitch", C(-8)))
    # --- whole body ---------------------------------------------------------------------------------
    P["jumping"] = _program(  # two jumps: crouch, flight (arms swing up), landing
        both("knee", Pl(55, 2, 0.0), Pl(35, 2, -0.35)), both("hip_flex", Pl(45, 2, 0.0)),
        chan("torso_pitch", Pl(20, 2, 0.0)), chan("up", Pl(0.28, 2, -0.18)),
        both("sh_flex", Pl(110, 2, -0.15)), both("elbow", Pl(20, 2, -0.15)))
    P["fall"] = _program(  # falls forward onto the hands and lies there
        chan("body_pitch", Rp(82, 0.3, 0.52)), both("sh_flex", Rp(100, 0.3, 0.48)),
        both("elbow", Rp(15, 0.3, 0.48)), both("hip_flex", Rp(10, 0.3, 0.52)), both("knee", Rp(25, 0.3, 0.5)),
        chan("head_pitch", Rp(-35, 0.35, 0.55)), chan("torso_roll", Rp(8, 0.32, 0.5)))
    Ec = (0.1, 0.32, 0.72, 0.92)
    P["crouching"] = _program(
        both("hip_flex", Hd(100, *Ec)), both("knee", Hd(125, *Ec)), chan("torso_pitch", Hd(35, *Ec)),
        both("sh_flex", Hd(50, *Ec)), both("elbow", Hd(20, *Ec)), chan("head_pitch", Hd(-15, *Ec)))
    P["kicking"] = _program(  # chamber, extend, retract the right leg; arms counterbalance
        chan("r_hip_flex", Bp(80, 0.5, 0.13)), chan("r_knee", Bp(85, 0.42, 0.1), Bp(35, 0.6, 0.08)),
        chan("torso_pitch", Bp(-12, 0.5, 0.15)), chan("l_knee", Bp(12, 0.5, 0.15)),
        chan("l_sh_flex", Bp(35, 0.5, 0.15)), chan("r_sh_flex", Bp(-25, 0.5, 0.15)),
        both("sh_abd", Bp(20, 0.5, 0.15)))
    P["throwing"] = _program(  # overhead throw: wind-up, torso twist, step, release with pronation
        chan("r_sh_abd", Bp(85, 0.45, 0.18)), chan("r_sh_rot", Bp(80, 0.42, 0.14)),
        chan("r_sh_flex", Bp(-30, 0.4, 0.1), Bp(100, 0.56, 0.1)),
        chan("r_elbow", Bp(90, 0.42, 0.12), Bp(-10, 0.58, 0.06)), chan("r_roll", Bp(60, 0.57, 0.07)),
        chan("torso_yaw", Bp(-30, 0.42, 0.12), Bp(35, 0.57, 0.1)), chan("torso_pitch", Bp(15, 0.58, 0.1)),
        chan("l_hip_flex", Bp(28, 0.5, 0.14)), chan("l_knee", Bp(20, 0.5, 0.14)),
        chan("l_sh_flex", Bp(50, 0.45, 0.15)), chan("fwd", Tr(0.35, (0.42, 0.52, 0.52, 0.62))))

    # picking_up vs setting_down: the same bend; the object is in the hand after vs before it, and the
    # grasp / release twists the forearm in opposite directions
    def bend(e):
        return _merge(
            chan("torso_pitch", Hd(65, *e)), both("hip_flex", Hd(25, *e)), both("knee", Hd(45, *e)),
            chan("r_sh_flex", Hd(85, *e)), chan("l_sh_flex", Hd(60, *e)), chan("l_elbow", Hd(10, *e)),
            chan("head_pitch", Hd(-10, *e)))

    P["picking_up"] = _program(
        bend((0.15, 0.38, 0.5, 0.72)), chan("r_sh_flex", Rp(20, 0.55, 0.75)),
        chan("r_elbow", Rp(70, 0.55, 0.75)), chan("r_roll", Bp(-45, 0.44, 0.08)))
    P["setting_down"] = _program(
        bend((0.25, 0.45, 0.6, 0.8)), chan("r_sh_flex", C(20), Rp(-20, 0.3, 0.45)),
        chan("r_elbow", C(70), Rp(-70, 0.32, 0.45)), chan("r_roll", Bp(45, 0.52, 0.08)))
    # --- in place, legs still (the thigh sensors see nothing) ---------------------------------------
    P["standing"] = _program(  # idle: weight shifts, a little arm and head motion
        chan("r_hip_abd", Sn(3, 0.5)), chan("l_hip_abd", Sn(-3, 0.5)), chan("lat", Sn(0.03, 0.5)),
        chan("r_sh_flex", Sn(4, 0.7)), chan("head_yaw", Sn(8, 0.4)))
    # torso and head yaw: plain to the camera; thigh sensors see nothing, the watch little (a yaw about
    # the vertical keeps gravity fixed in the forearm frame)
    P["looking_around"] = _program(
        chan("torso_yaw", Sn(30, 1.0)), chan("head_yaw", Sn(40, 1.0, 0.08)), chan("head_pitch", Sn(8, 1.6)))
    # gesturing mostly by forearm roll (palms turning): strong on the watch, subtle on video
    P["talking"] = _program(
        both("sh_flex", C(18)), chan("r_elbow", C(65), Sn(12, 2.2)), chan("l_elbow", C(65), Sn(10, 1.9, 0.4)),
        chan("r_roll", Sn(50, 1.7)), chan("l_roll", Sn(40, 1.4, 0.3)), chan("head_pitch", Sn(6, 3.1)),
        chan("head_yaw", Sn(12, 0.8)))
    P["talking_on_phone"] = _program(  # right hand at the ear, left hand gesturing a little
        chan("r_sh_flex", C(30)), chan("r_sh_abd", C(30)), chan("r_elbow", C(135)), chan("r_roll", C(-40)),
        chan("head_yaw", Sn(10, 0.7)), chan("head_pitch", C(5), Sn(5, 1.1)), chan("l_elbow", Sn(10, 1.2)),
        chan("l_sh_flex", Sn(8, 1.2)))
    P["using_phone"] = _program(  # both hands hold the phone in front of the chest, head down, thumbs
        both("sh_flex", C(22)), both("elbow", C(100)), both("roll", C(-50)), both("sh_abd", C(-4)),
        chan("head_pitch", C(30), Sn(3, 0.8)), chan("r_elbow", Sn(3, 5.0)), chan("l_elbow", Sn(2, 4.3, 0.5)))
    # raise the right forearm and roll it watch-face-up: the roll is invisible on a stick figure
    Er = (0.22, 0.36, 0.62, 0.76)
    P["checking_time"] = _program(
        chan("r_sh_flex", Hd(25, *E)), chan("r_sh_abd", Hd(12, *E)), chan("r_elbow", Hd(95, *E)),
        chan("r_roll", Hd(-85, *Er)), chan("head_pitch", Hd(25, *Er)), chan("head_yaw", Hd(-12, *Er)))
    P["pointing"] = _program(  # straight arm at shoulder height, moving to a second target
        chan("r_sh_flex", Hd(85, *E)), chan("r_elbow", Hd(-10, *E)),
        chan("r_sh_abd", Hd(15, *E), Bp(-20, 0.48, 0.12)), chan("head_yaw", Hd(-20, *E)))
    Ew, Ewave = (0.08, 0.22, 0.82, 0.95), (0.22, 0.3, 0.74, 0.82)
    P["waving_hand"] = _program(  # upper arm out to the side, forearm up, swaying in the frontal plane
        chan("r_sh_abd", Hd(75, *Ew)), chan("r_sh_rot", Hd(90, *Ew)),
        chan("r_elbow", Hd(70, *Ew), Sn(25, 3.2, 0.0, Ewave)), chan("r_roll", Sn(15, 3.2, 0.25, Ewave)),
        chan("head_yaw", Hd(-10, *Ew)))
    P["transferring_object"] = _program(  # hold an object in front and sweep it from left to right
        both("sh_flex", C(35), Bp(15, 0.18, 0.1), Bp(15, 0.82, 0.1)), both("elbow", C(50)),
        both("roll", C(-60)), chan("torso_yaw", C(35), Rp(-70, 0.25, 0.75)),
        chan("head_yaw", C(30), Rp(-60, 0.22, 0.72)),
        chan("torso_pitch", C(15), Bp(10, 0.2, 0.1), Bp(10, 0.8, 0.1)))
    # opening vs closing a door in front: reach, turn the handle, pull back vs reach and push away
    P["opening"] = _program(
        chan("r_sh_flex", Rp(70, 0.08, 0.28), Rp(-35, 0.42, 0.64), Rp(-35, 0.76, 0.94)),
        chan("r_elbow", Rp(10, 0.08, 0.28), Rp(70, 0.42, 0.64), Rp(-80, 0.76, 0.94)),
        chan("r_roll", Hd(-70, 0.28, 0.38, 0.6, 0.7)), chan("fwd", Tr(-0.3, (0.42, 0.53, 0.53, 0.64))),
        chan("torso_pitch", Bp(-6, 0.53, 0.15)))
    P["closing"] = _program(
        chan("r_sh_flex", Rp(35, 0.08, 0.28), Rp(40, 0.34, 0.58), Rp(-75, 0.74, 0.94)),
        chan("r_elbow", Rp(75, 0.08, 0.28), Rp(-70, 0.34, 0.58), Rp(-5, 0.74, 0.94)),
        chan("fwd", Tr(0.3, (0.34, 0.46, 0.46, 0.58))), chan("torso_pitch", Bp(10, 0.46, 0.15)))
    # --- desk scene (facing the desk) ---------------------------------------------------------------
    P["sitting"] = _program(
        _SEATED, both("sh_flex", C(30)), both("elbow", C(60)), chan("head_yaw", Sn(12, 0.6)),
        chan("head_pitch", Sn(6, 0.9, 0.2)), chan("l_elbow", Sn(6, 0.8)), chan("torso_pitch", Sn(3, 0.5)),
        facing="desk")
    P["sitting_down"] = _program(
        both("hip_flex", Rp(88, 0.25, 0.65)), both("knee", Rp(88, 0.25, 0.65)),
        chan("torso_pitch", Bp(35, 0.47, 0.2)), both("sh_flex", Bp(25, 0.45, 0.2), Rp(20, 0.6, 0.8)),
        both("elbow", Rp(55, 0.6, 0.8)), chan("head_pitch", Bp(-10, 0.47, 0.2)), facing="desk")
    P["standing_up"] = _program(
        both("hip_flex", C(88), Rp(-88, 0.3, 0.7)), both("knee", C(88), Rp(-88, 0.3, 0.7)),
        chan("torso_pitch", Bp(35, 0.45, 0.2)), both("sh_flex", C(20), Rp(-20, 0.1, 0.3), Bp(20, 0.45, 0.2)),
        both("elbow", C(55), Rp(-55, 0.1, 0.3)), facing="desk")
    P["drinking"] = _program(  # seated; lift the cup to the mouth, tip it (forearm roll), head back
        _SEATED, chan("l_sh_flex", C(30)), chan("l_elbow", C(60)),
        chan("r_sh_flex", C(25), Hd(30, 0.15, 0.35, 0.62, 0.82)),
        chan("r_elbow", C(55), Hd(80, 0.15, 0.35, 0.62, 0.82)),
        chan("r_sh_abd", Hd(10, 0.15, 0.35, 0.62, 0.82)),
        chan("r_roll", Hd(-35, 0.33, 0.42, 0.55, 0.63)), chan("head_pitch", Hd(-20, 0.33, 0.42, 0.55, 0.63)),
        facing="desk")
    P["using_pc"] = _program(  # seated typing (small fast forearm motion), a reach for the mouse
        _SEATED, both("sh_flex", C(35)), both("elbow", C(75)), both("roll", C(-80)),
        chan("r_elbow", Sn(3, 9.0)), chan("l_elbow", Sn(3, 8.3, 0.5)), chan("r_roll", Sn(6, 6.0)),
        chan("head_pitch", C(10), Sn(4, 0.6)), chan("r_sh_abd", Bp(15, 0.6, 0.12)), facing="desk")
    # pocket_in vs pocket_out: the same path of the right hand between the chest (phone held, screen up)
    # and the trouser pocket, in opposite directions; the leg shifts as the hand works the pocket
    P["pocket_in"] = _program(
        chan("r_sh_flex", C(25), Rp(-33, 0.35, 0.6)), chan("r_sh_abd", Rp(10, 0.35, 0.6)),
        chan("r_elbow", C(80), Rp(-65, 0.35, 0.6)),
        chan("r_roll", C(-60), Rp(60, 0.35, 0.55), Bp(-25, 0.64, 0.06)),
        chan("head_pitch", C(25), Rp(-20, 0.35, 0.6)), chan("torso_roll", Bp(-6, 0.62, 0.08)),
        chan("r_hip_flex", Bp(6, 0.63, 0.08)), facing="desk")
    P["pocket_out"] = _program(
        chan("r_sh_flex", C(-8), Rp(33, 0.4, 0.65)), chan("r_sh_abd", C(10), Rp(-10, 0.4, 0.65)),
        chan("r_elbow", C(15), Rp(65, 0.4, 0.65)), chan("r_roll", Bp(-25, 0.3, 0.06), Rp(-60, 0.45, 0.65)),
        chan("head_pitch", C(5), Rp(20, 0.45, 0.65)), chan("torso_roll", Bp(-6, 0.32, 0.08)),
        chan("r_hip_flex", Bp(6, 0.31, 0.08)), facing="desk")
    assert set(P) == set(CLASSES), set(CLASSES) ^ set(P)
    return P


PROGRAMS = _build_programs()

# Added to every program: a relaxed stance with a little idle sway (root translation only, so a
# class with still legs has an exactly still thigh).
_BASE_POSE = _merge(both("sh_abd", C(8)), both("elbow", C(12)), both("knee", C(3)),
                    chan("lat", Sn(0.008, 0.37, 0.1)), chan("torso_roll", Sn(1.2, 0.45, 0.2)),
                    chan("r_sh_flex", Sn(2, 0.6)), chan("l_sh_flex", Sn(2, 0.55, 0.3)))


def _compile_terms(program: MotionProgram, rng: np.random.Generator, amp: float, phase: float, shift: float):
    """Applies per-instance nuisance to a program's terms. Returns [(channel index, shape, params)]."""
    terms = []
    offsets = {  # idiosyncratic posture of this instance (degrees)
        "r_sh_abd": rng.uniform(-4, 4), "l_sh_abd": rng.uniform(-4, 4), "r_elbow": rng.uniform(-6, 6),
        "l_elbow": rng.uniform(-6, 6), "torso_pitch": rng.uniform(-3, 3), "head_pitch": rng.uniform(-5, 5),
        "r_hip_rot": rng.uniform(-8, 8), "l_hip_rot": rng.uniform(-8, 8), "r_roll": rng.uniform(-10, 10),
        "l_roll": rng.uniform(-10, 10)}
    for name, v in offsets.items():
        terms.append((_CH[name], "c", (float(v),)))

    def sh(e):
        return tuple(x + shift for x in e)

    for name, chterms in list(_BASE_POSE.items()) + list(program.channels.items()):
        for term in chterms:
            shape, a = term[0], term[1]
            jit = rng.uniform(0.9, 1.1)
            if shape == "c":
                terms.append((_CH[name], shape, (a * rng.uniform(0.93, 1.07),)))
                continue
            a = a * amp * jit
            if shape in ("s", "p"):
                _, _, cyc, ph, env = term
                terms.append((_CH[name], shape, (a, cyc, ph + phase, sh(env))))
            elif shape == "b":
                terms.append((_CH[name], shape, (a, term[2] + shift, term[3])))
            elif shape == "r":
                terms.append((_CH[name], shape, (a, term[2] + shift, term[3] + shift)))
            elif shape == "h":
                terms.append((_CH[name], shape, (a,) + sh(term[2:6])))
            elif shape == "t":
                terms.append((_CH[name], shape, (a, sh(term[2]))))
            else:  # pragma: no cover
                raise ValueError(shape)
    return terms


def _eval_terms(terms, u: np.ndarray, channels: Iterable[int] | None = None) -> np.ndarray:
    """Evaluates compiled terms at normalised times u [T] → [len(CHANNELS), T] (degrees / metres)."""
    out = np.zeros((len(CHANNELS), u.shape[0]))
    keep = None if channels is None else set(channels)
    for c, shape, p in terms:
        if keep is not None and c not in keep:
            continue
        if shape == "c":
            out[c] += p[0]
        elif shape == "s":
            out[c] += p[0] * np.sin(2 * np.pi * (p[1] * u + p[2])) * _env(u, p[3])
        elif shape == "p":
            out[c] += p[0] * (0.5 * (1.0 - np.cos(2 * np.pi * (p[1] * u + p[2])))) ** 2 * _env(u, p[3])
        elif shape == "b":
            out[c] += p[0] * _bump(u, p[1], p[2])
        elif shape == "r":
            out[c] += p[0] * _ramp(u, p[1], p[2])
        elif shape == "h":
            out[c] += p[0] * (_ramp(u, p[1], p[2]) - _ramp(u, p[3], p[4]))
        elif shape == "t":
            e = p[1]
            i0, i1 = _env_int(0.0, e), _env_int(1.0, e)
            out[c] += p[0] * (_env_int(u, e) - i0) / (i1 - i0)
    return out


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
    ref: InstanceRef
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


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------

class SyntheticMMAct:
    """Procedural MMAct-like dataset (see the module docstring).

    Args:
      seed: generation seed; every clip is a pure function of (seed, class, subject, scene, session, camera).
      num_subjects, num_sessions, num_cameras (≤ 4): how many are listed by `clips()`.
      fps: video frame rate.
      noise_scale: multiplies all sensor noise and bias (0 gives the exact kinematics).
      framing: 'person' (default): each clip is a person-centred crop of its camera's view that covers the
        person's motion over the clip (like the people in MMAct's frames, or a person detector's box),
        rendered at full resolution; the standing body fills at most `person_fill` of the frame height.
        'room': the whole camera view (the person is a small figure in the room; the layout of
        mumae_jax <= 2026-11, kept for comparison).
      scene_contrast: the room's colours are pulled towards mid-grey, 0.5 + scene_contrast·(rgb - 0.5)
        (1: the full-contrast rooms of the 'room' layout). Low-contrast rooms keep every scene and camera
        distinct but let the person, not the floor/wall boundary, dominate the pixels.
      clothing_variety: each subject's clothing and skin colours are blended with a common palette,
        variety·own + (1 - variety)·common (1: every subject's own random colours).
      frame_cache_mb: keep up to this many MB of rendered frames (an LRU; 0: none). Rendering costs
        ~3 ms per 64² frame on one CPU core; a long pretraining run on a fixed clip set sees each frame
        many times, so a cache of its frames (~12 KB each at 64²) makes the input nearly free.
    The defaults (person, 0.3, 0.5) make the raw pixels of two clips of a novel class about 30 % 5-way
    1-shot (`python -m mumae_jax.evaluators.anchors`), against 21 % for ('room', 1, 1): see data/README.md.
    """

    FRAMINGS = ("person", "room")

    def __init__(self, seed: int = 0, num_subjects: int = 8, num_sessions: int = 2, num_cameras: int = 4,
                 fps: float = 30, noise_scale: float = 1.0, framing: str = "person", person_fill: float = 0.8,
                 scene_contrast: float = 0.3, clothing_variety: float = 0.5, frame_cache_mb: int = 0):
        if num_subjects < 1 or num_sessions < 1:
            raise ValueError("num_subjects and num_sessions must be >= 1")
        if not 1 <= num_cameras <= MAX_CAMERAS:
            raise ValueError(f"num_cameras must be in 1..{MAX_CAMERAS}, got {num_cameras}")
        if fps <= 0 or noise_scale < 0:
            raise ValueError("fps must be > 0 and noise_scale >= 0")
        if framing not in self.FRAMINGS:
            raise ValueError(f"framing={framing!r}; expected one of {', '.join(self.FRAMINGS)}")
        if not 0.1 <= person_fill <= 1.0:
            raise ValueError(f"person_fill={person_fill} must be in [0.1, 1]")
        if not (0.0 <= scene_contrast <= 1.0 and 0.0 <= clothing_variety <= 1.0):
            raise ValueError(f"scene_contrast={scene_contrast} and clothing_variety={clothing_variety} must be in [0, 1]")
        self.seed = int(seed)
        self.num_subjects = int(num_subjects)
        self.num_sessions = int(num_sessions)
        self.num_cameras = int(num_cameras)
        self.fps = float(fps)
        self.noise_scale = float(noise_scale)
        self.framing = framing
        self.person_fill = float(person_fill)
        self.scene_contrast = float(scene_contrast)
        self.clothing_variety = float(clothing_variety)
        self._lock = threading.Lock()
        self._cache: dict = {}
        self._backgrounds = raster.ByteLRU(self.BACKGROUND_CACHE_BYTES)
        self._frames = raster.ByteLRU(int(frame_cache_mb) << 20)

    def __repr__(self):
        return (f"SyntheticMMAct(seed={self.seed}, num_subjects={self.num_subjects}, num_sessions="
                f"{self.num_sessions}, num_cameras={self.num_cameras}, fps={self.fps:g}, framing={self.framing!r}, "
                f"scene_contrast={self.scene_contrast:g}, clothing_variety={self.clothing_variety:g})")

    def _cached(self, key, make):
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            return self._cache.setdefault(key, value)

    # ---- listing ------------------------------------------------------------------------------------

    def scene_of(self, action: str, subject: int, session: int) -> int:
        """The scene an (action, subject, session) was recorded in (desk classes: scene 3)."""
        if action in DESK_CLASSES:
            return DESK_SCENE
        r = _rng(self.seed, "scene_of", action, subject, session)
        if action in TWO_SCENE_CLASSES and r.uniform() < 0.25:
            return DESK_SCENE
        return int(OPEN_SCENES[int(r.integers(len(OPEN_SCENES)))])

    def clips(self, classes: Sequence[str] | None = None) -> list[ClipRef]:
        """All clips of `classes` (default all 33), ordered by (class id, subject, session, camera)."""
        names = CLASSES if classes is None else tuple(classes)
        bad = [c for c in names if c not in CLASS_TO_ID]
        if bad:
            raise ValueError(f"unknown classes {bad}")
        out = []
        for action in sorted(set(names), key=CLASS_TO_ID.__getitem__):
            for subject in range(1, self.num_subjects + 1):
                for session in range(1, self.num_sessions + 1):
                    scene = self.scene_of(action, subject, session)
                    for camera in range(1, self.num_cameras + 1):
                        out.append(ClipRef(action, subject, scene, session, camera))
        return out

    # ---- per-instance parameters ----------------------------------------------------------------------

    def _scene(self, scene: int) -> _Scene:
        return self._cached(("scene", scene), lambda: _make_scene(self.seed, scene))

    def _camera(self, scene: int, camera: int) -> _Camera:
        if not 1 <= camera <= MAX_CAMERAS:
            raise ValueError(f"camera must be in 1..{MAX_CAMERAS}, got {camera}")
        return self._cached(("camera", scene, camera), lambda: _make_camera(self.seed, scene, camera))

    def _instance(self, ref: InstanceRef) -> _Instance:
        if ref.action not in CLASS_TO_ID:
            raise ValueError(f"unknown action {ref.action!r}")
        if ref.scene not in SCENES:
            raise ValueError(f"scene must be one of {SCENES}, got {ref.scene}")
        return self._cached(("inst", ref), lambda: self._make_instance(ref))

    def _make_instance(self, ref: InstanceRef) -> _Instance:
        r = _rng(self.seed, "instance", ref.action, ref.subject, ref.scene, ref.session)
        prog = PROGRAMS[ref.action]
        speed = r.uniform(0.7, 1.4)
        amp = r.uniform(0.8, 1.2)
        phase = r.uniform(0.0, 1.0)
        shift = r.uniform(-0.07, 0.07)
        terms = _compile_terms(prog, r, amp, phase, shift)
        body = self._cached(("body", ref.subject), lambda: _make_body(self.seed, ref.subject,
                                                                             self.clothing_variety))
        scn = self._scene(ref.scene)
        base_az = {"random": r.uniform(0, 2 * np.pi), "door_in": scn.door_az + np.pi,
                   "door_out": scn.door_az, "desk": scn.desk_az}[prog.facing]
        facing = base_az + (np.radians(r.uniform(-20, 20)) if prog.facing != "random" else 0.0)
        # centre the path: the midpoint of the root's travel lands near the room centre
        ends = _eval_terms(terms, np.array([0.0, 1.0]), (_CH["fwd"], _CH["lat"]))
        mid = 0.5 * (ends[[_CH["fwd"], _CH["lat"]], 0] + ends[[_CH["fwd"], _CH["lat"]], 1]) * body.height / 1.75
        if prog.facing == "desk":
            centre = r.uniform(-0.12, 0.12, 2)
        elif prog.facing in ("door_in", "door_out"):
            centre = 0.6 * np.array([np.cos(scn.door_az), np.sin(scn.door_az)]) + r.uniform(-0.25, 0.25, 2)
        else:
            rad, ang = 0.7 * np.sqrt(r.uniform()), r.uniform(0, 2 * np.pi)
            centre = rad * np.array([np.cos(ang), np.sin(ang)])
        cf, sf = np.cos(facing), np.sin(facing)
        start = centre - np.array([cf * mid[0] - sf * mid[1], sf * mid[0] + cf * mid[1]])
        ns = self.noise_scale
        noise = {}
        for name, (lo, hi, bias) in {"acc_phone": (0.03, 0.12, 0.1), "acc_watch": (0.03, 0.15, 0.1),
                                     "gyro": (0.004, 0.02, 0.01), "orientation": (0.1, 0.6, 1.0)}.items():
            b = r.normal(0.0, bias, 3)
            if name == "orientation":
                b[0] = r.normal(0.0, 8.0)  # compass offset
            noise[name] = (ns * r.uniform(lo, hi), ns * b)
        return _Instance(ref=ref, duration=BASE_DURATION_S / speed, warp=float(r.uniform(-0.08, 0.08)),
                         terms=terms, face_path=prog.face_path,
                         facing=float(facing), start=start, body=body, light=float(r.uniform(0.9, 1.1)),
                         watch_mount=_const_rot([0.0, 0.0, r.uniform(-15, 15)]),
                         phone_mount=_const_rot(r.uniform(-15, 15, 3)), noise=noise)

    def duration(self, clip: ClipRef | InstanceRef) -> float:
        """Clip duration in seconds (2.0-4.0 s; one per instance)."""
        ref = clip.instance if isinstance(clip, ClipRef) else clip
        return self._instance(ref).duration

    def num_frames(self, clip: ClipRef) -> int:
        """Number of video frames: round(duration × fps)."""
        return max(1, int(round(self.duration(clip) * self.fps)))

    # ---- kinematics -------------------------------------------------------------------------------------

    def _kinematics(self, inst: _Instance, t: np.ndarray) -> dict:
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

    def joints(self, clip: ClipRef | InstanceRef, times_s) -> np.ndarray:
        """World joint positions (m, z up) at times_s [T] → float64 [T, len(JOINTS), 3]."""
        ref = clip.instance if isinstance(clip, ClipRef) else clip
        return self._kinematics(self._instance(ref), np.asarray(times_s, np.float64).reshape(-1))["joints"]

    # ---- sensors ----------------------------------------------------------------------------------------

    def sensors(self, clip: ClipRef | InstanceRef) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{name: (timestamps_s float64 [L], values float32 [L, 3])} for the 4 SENSORS.

        Timestamps run from 0 to the clip duration at each sensor's rate (small jitter, strictly
        increasing). Identical for every camera of an instance. Units: acc m/s², gyro rad/s,
        orientation degrees (azimuth in [0, 360), pitch, roll).
        """
        ref = clip.instance if isinstance(clip, ClipRef) else clip
        inst = self._instance(ref)
        h = 2e-3
        stamps, chunks = {}, []
        for name in SENSORS:
            rate = SENSOR_RATES_HZ[name]
            r = _rng(self.seed, "stamps", ref.action, ref.subject, ref.scene, ref.session, name)
            n = int(np.floor(inst.duration * rate + 1e-9)) + 1
            ts = np.arange(n) / rate + np.clip(r.normal(0.0, 0.04 / rate, n), -0.15 / rate, 0.15 / rate)
            stamps[name] = np.clip(ts, 0.0, inst.duration)
            chunks.append(stamps[name])
        t = np.concatenate(chunks)
        kin = self._kinematics(inst, np.concatenate([t - h, t, t + h]))
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
        values = {"acc_watch": np.einsum("tji,tj->ti", R_watch, f_watch),
                  "acc_phone": np.einsum("tji,tj->ti", R0, f_phone),
                  "gyro": omega, "orientation": _euler_zxy(R0)}
        out, o = {}, 0
        for name in SENSORS:
            n = stamps[name].shape[0]
            v = values[name][o:o + n].copy()
            o += n
            std, bias = inst.noise[name]
            if std > 0 or np.any(bias):
                r = _rng(self.seed, "noise", ref.action, ref.subject, ref.scene, ref.session, name)
                v = v + bias + r.normal(0.0, 1.0, v.shape) * std
                if name == "orientation":
                    v[:, 0] = np.mod(v[:, 0], 360.0)
            out[name] = (stamps[name], v.astype(np.float32))
        return out

    # ---- video ------------------------------------------------------------------------------------------

    def view(self, clip: ClipRef) -> View:
        """The window of the clip's camera that the frames show (`framing`; synthetic_render.View)."""
        cam = self._camera(clip.scene, clip.camera)
        if self.framing == "room":
            return View(0.0, 0.0, cam.tan_half_vfov)

        def make():
            inst = self._instance(clip.instance)
            joints = self._kinematics(inst, np.linspace(0.0, inst.duration, 13))["joints"]
            return raster.person_view(cam, joints, inst.body.height, fill=self.person_fill,
                                      rng=_rng(self.seed, "view", clip.name))
        return self._cached(("view", clip), make)

    BACKGROUND_CACHE_BYTES = 256 << 20

    def _background(self, clip: ClipRef, H: int, W: int):
        """(rgb, depth) of the empty scene through the clip's view (an LRU of BACKGROUND_CACHE_BYTES: a
        person-centred view is one per clip, so 224² backgrounds of every clip would not all fit)."""
        view = self.view(clip)

        def make():
            rgb, depth = raster.render_background(self._scene(clip.scene), self._camera(clip.scene, clip.camera),
                                                  view, H, W)
            if self.scene_contrast != 1.0:
                rgb = (0.5 + np.float32(self.scene_contrast) * (rgb - 0.5)).astype(np.float32)
            return rgb, depth
        return self._backgrounds.get((clip.scene, clip.camera, view, H, W), make)

    def _noise_tile(self, H: int, W: int) -> np.ndarray:
        def make():
            r = _rng(self.seed, "pixel_noise", H, W)
            return (r.normal(0.0, 0.012, (H + 16, W + 16, 3))).astype(np.float32)
        return self._cached(("noise", H, W), make)

    def render(self, clip: ClipRef, frame_indices, size=(112, 112), *, draw_figure: bool = True) -> np.ndarray:
        """Renders the requested frames only → uint8 [len(frame_indices), H, W, 3].

        frame_indices: ints in [0, num_frames(clip)). size: (H, W), e.g. 32-224 px. With
        draw_figure=False the frames show the empty scene under the same lighting and pixel noise.
        """
        H, W = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        if H < 8 or W < 8:
            raise ValueError(f"image size must be at least 8×8, got {(H, W)}")
        idx = np.asarray(frame_indices, np.int64).reshape(-1)
        n = self.num_frames(clip)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"frame indices must be in [0, {n}) for {clip.name}, got {idx.min()}..{idx.max()}")
        out = np.empty((idx.size, H, W, 3), np.uint8)
        keys = [(clip, int(fi), H, W, draw_figure) for fi in idx]
        todo = []
        for i, key in enumerate(keys):
            frame = self._frames.lookup(key)
            if frame is None:
                todo.append(i)
            else:
                out[i] = frame
        if todo:
            out[todo] = self._render_frames(clip, idx[todo], H, W, draw_figure)
            for i in todo:
                self._frames.put(keys[i], out[i].copy())
        return out

    def _render_frames(self, clip: ClipRef, idx: np.ndarray, H: int, W: int, draw_figure: bool) -> np.ndarray:
        """Renders frames idx [n] of clip → uint8 [n, H, W, 3] (no cache)."""
        inst = self._instance(clip.instance)
        cam = self._camera(clip.scene, clip.camera)
        bg_rgb, bg_depth = self._background(clip, H, W)
        view = self.view(clip)
        noise = self._noise_tile(H, W)
        out = np.empty((idx.size, H, W, 3), np.uint8)
        kin = self._kinematics(inst, idx / self.fps)
        body = inst.body
        light = cam.gain * np.float32(inst.light)
        colors = np.stack([body.colors[p[3]] * np.float32(p[4]) for p in raster.PRIMS]) * light
        radius = np.array([body.head_r if p[2] == "head" else body.radius[p[2]] for p in raster.PRIMS])
        for i, fi in enumerate(idx):
            img = bg_rgb * np.float32(inst.light)
            if draw_figure:
                raster.draw_figure(img, bg_depth, kin["joints"][i], cam, view, radius, colors.astype(np.float32))
            h = zlib.crc32(f"{self.seed}/{clip.name}/{int(fi)}".encode())
            oy, ox = h % 17, (h // 17) % 17
            img += noise[oy:oy + H, ox:ox + W]
            out[i] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out
