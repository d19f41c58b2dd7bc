"""Motion programs of the synthetic dataset (`data/synthetic.py`): joint-angle and root channels as sums of
waveform terms over normalised time u in [0, 1], one program per class, and their per-recording perturbation.

Terms: `C` (constant), `Sn` (sine), `Pl` (smooth pulse train), `Bp` (bump), `Rp` (ramp), `Hd` (rise-hold-fall),
`Tr` (travel); `chan(channel, *terms)` / `both(side_channel, *terms)` build a program, `_gait` walking-like ones.
numpy only.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from mumae_jax.data.splits import MUMAE_SPLIT3_BASE, MUMAE_SPLIT3_NOVEL

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
    classes = set(MUMAE_SPLIT3_BASE + MUMAE_SPLIT3_NOVEL)  # every class of the dataset has a program
    assert set(P) == classes, classes ^ set(P)
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


