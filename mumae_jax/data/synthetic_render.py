"""Rasterisation of the synthetic dataset's frames: the ray-cast room and the stick figure.

A camera (`pos`, orthonormal `right`, `up`, `fwd`) sees the world through a square *view window* on its
image plane: `View(u0, v0, half)` in tangent units (a point at camera depth z and offsets (a, b) along
right/up lands at u = a/z, v = b/z), centred at (u0, v0) with half-size `half`. The camera's own field of
view is `View(0, 0, tan(vfov/2))`; a smaller window is a crop of it rendered at full resolution (a
person-centred crop costs nothing in sharpness). Pixel (x, y) of an H×W frame:
x = W/2 + f·(u - u0), y = H/2 - f·(v - v0), f = H / (2·half).

`person_view` chooses the window that frames a person's motion over a clip. numpy only.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading

import numpy as np

JOINTS = ("pelvis", "neck", "head", "nose", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
          "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle")
_J = {name: i for i, name in enumerate(JOINTS)}
ROOM_HALF = 7.5  # the room spans [-ROOM_HALF, ROOM_HALF]² (m), floor at z = 0
ROOM_HEIGHT = 4.5
AXIS_AZ = (0.0, 0.5 * np.pi, np.pi, 1.5 * np.pi)  # azimuths of the walls x=+R, y=+R, x=-R, y=-R


class ByteLRU:
    """A thread-safe least-recently-used cache of numpy arrays (or tuples of them) holding at most
    `max_bytes`; 0 disables it. `get(key, make)` returns the cached value or stores `make()`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        return sum(v.nbytes for v in value) if isinstance(value, tuple) else value.nbytes

    def lookup(self, key):
        """The cached value, or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value):
        """Stores value (evicting the least recently used ones) and returns the cached value of key."""
        if self.max_bytes <= 0:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += self._size(value)
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    self._bytes -= self._size(self._items.popitem(last=False)[1])
            return self._items[key]

    def get(self, key, make):
        value = self.lookup(key) if self.max_bytes > 0 else None
        return self.put(key, make()) if value is None else value


@dataclasses.dataclass(frozen=True)
class View:
    """A square window (u0, v0, half) on a camera's image plane, in tangent units (module docstring)."""
    u0: float
    v0: float
    half: float

    def focal(self, H: int) -> float:
        """Focal length in pixels for an H-pixel-high frame."""
        return 0.5 * H / self.half


def person_view(cam, joints: np.ndarray, height: float, *, fill: float, rng: np.random.Generator) -> View:
    """The window that frames a person's motion, like a person detector's crop of a clip.

    joints [T, J, 3]: world joint positions at T times spread over the clip; height: the body's standing
    height (m). The window covers every joint of every time (plus a margin for the head and limb widths),
    is never smaller than the one in which the standing body fills `fill` of the frame height, and is
    jittered per clip (`rng`: centre ±8 % of the half-size, scale ×1.0-1.15) as a detector's box would
    be. It never exceeds the camera's own field of view.
    """
    rel = joints.reshape(-1, 3) - cam.pos
    z = rel @ cam.fwd
    u, v = (rel @ cam.right) / z, (rel @ cam.up) / z
    zc = float(np.median(z))
    pad = 0.1 * height / zc
    u0, v0 = 0.5 * (u.min() + u.max()), 0.5 * (v.min() + v.max())
    half = max(0.5 * (u.max() - u.min()), 0.5 * (v.max() - v.min())) + pad
    half = max(half, 0.5 * height / zc / fill) * rng.uniform(1.0, 1.15)
    u0, v0 = u0 + half * rng.uniform(-0.08, 0.08), v0 + half * rng.uniform(-0.08, 0.08)
    return View(float(u0), float(v0), float(min(half, cam.tan_half_vfov)))


def render_background(scn, cam, view: View, H: int, W: int, ss: int = 2):
    """Ray-cast room seen through `view`, supersampled ss×ss → (rgb float32 [H, W, 3] lit by the camera,
    depth [H, W]).

    depth is the camera depth of the scene's solid objects (inf elsewhere): they occlude the figure.
    """
    f = view.focal(H)
    ys = (np.arange(H * ss) + 0.5) / ss - 0.5 * H
    xs = (np.arange(W * ss) + 0.5) / ss - 0.5 * W
    d = (cam.fwd[None, None] + (xs[None, :, None] / f + view.u0) * cam.right[None, None]
         + (view.v0 - ys[:, None, None] / f) * cam.up[None, None])  # t along d = camera depth
    o = cam.pos
    with np.errstate(divide="ignore", invalid="ignore"):
        t_room = np.full(d.shape[:2], np.inf)
        surf = np.zeros(d.shape[:2], np.int64)  # 0 floor, 1 ceiling, 2+k wall k (k = axis index of AXIS_AZ)
        for sid, (axis, plane) in enumerate([(2, 0.0), (2, ROOM_HEIGHT), (0, ROOM_HALF), (1, ROOM_HALF),
                                             (0, -ROOM_HALF), (1, -ROOM_HALF)]):
            t = (plane - o[axis]) / d[..., axis]
            ok = (t > 0) & (t < t_room)
            t_room = np.where(ok, t, t_room)
            surf = np.where(ok, sid, surf)
        X = o + t_room[..., None] * d
        rgb = np.zeros(d.shape[:2] + (3,), np.float32)
        # floor: tiles with grout, low-frequency blotches, darker with distance
        m = surf == 0
        fx, fy = X[..., 0][m], X[..., 1][m]
        ti = (np.floor(fx / scn.tile) + np.floor(fy / scn.tile)).astype(np.int64) % 2
        col = scn.floor_colors[ti]
        gx, gy = np.abs(np.mod(fx / scn.tile + 0.5, 1.0) - 0.5), np.abs(np.mod(fy / scn.tile + 0.5, 1.0) - 0.5)
        grout = (np.minimum(0.5 - gx, 0.5 - gy) * scn.tile) < 0.015
        wav = sum(w[3] * np.sin(w[0] * fx + w[1] * fy + w[2]) for w in scn.floor_waves)
        dist = np.hypot(fx - o[0], fy - o[1])
        shade = (1.0 + wav) * (1.0 - 0.25 * np.clip(dist / 15.0, 0, 1)) * np.where(grout, 0.78, 1.0)
        rgb[m] = col * shade[:, None]
        rgb[surf == 1] = np.float32(0.82)
        # walls: surface 2+k is the wall at azimuth AXIS_AZ[k] (x=+R, y=+R, x=-R, y=-R)
        for k in range(4):
            sid = 2 + k
            m = surf == sid
            if not m.any():
                continue
            z = X[..., 2][m]
            s = (X[..., 1] if sid in (2, 4) else X[..., 0])[m] * (1.0 if sid in (2, 5) else -1.0)
            col = np.broadcast_to(scn.wall_colors[k], (z.size, 3)).copy()
            col *= (1.0 + scn.stripe * np.sin(2 * np.pi * s / 0.35))[:, None]
            col *= (0.8 + 0.2 * np.clip(z / 2.5, 0, 1))[:, None]
            col[z < 0.12] *= 0.6
            for wall, s0, s1, z0, z1, fc in scn.features:
                if wall == k:
                    inside = (s >= s0) & (s <= s1) & (z >= z0) & (z <= z1)
                    col[inside] = fc
            rgb[m] = col
        # solid objects (occlude the figure): slab test per box
        depth = np.full(d.shape[:2], np.inf)
        light = np.array([0.35, 0.45, 0.82])
        light /= np.linalg.norm(light)
        for lo, hi, bc in scn.boxes:
            t1, t2 = (lo - o) / d, (hi - o) / d
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            t_near, t_far = tmin.max(-1), tmax.min(-1)
            hit = (t_near <= t_far) & (t_near > 0) & (t_near < np.minimum(depth, t_room))
            if not hit.any():
                continue
            axis = tmin.argmax(-1)[hit]
            normal = np.zeros((axis.size, 3))
            normal[np.arange(axis.size), axis] = -np.sign(d[hit][np.arange(axis.size), axis])
            shade = 0.55 + 0.45 * np.clip(normal @ light, 0, 1)
            rgb[hit] = bc * shade[:, None]
            depth = np.where(hit, t_near, depth)
    rgb = rgb.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
    depth = depth.reshape(H, ss, W, ss).min(axis=(1, 3))
    return (rgb * cam.gain).astype(np.float32), depth.astype(np.float32)


# Figure primitives: (joint a, joint b (== a for a disc), radius key, colour key, shade, casts shadow)
def _primitives():
    prims = [("l_hip", "r_hip", "pelvis", "trousers", 1.0, True),
             ("pelvis", "neck", "torso", "shirt", 1.0, True),
             ("l_shoulder", "r_shoulder", "shoulders", "shirt", 1.0, True),
             ("neck", "head", "neck", "skin", 0.9, False),
             ("head", "head", "head", "skin", 1.0, True),
             ("head", "nose", "nose", "nose", 1.0, False)]
    for s, shade in (("r", 1.0), ("l", 0.8)):  # left limbs a little darker: left and right are distinguishable
        prims += [(f"{s}_shoulder", f"{s}_elbow", "upper_arm", "shirt", shade, True),
                  (f"{s}_elbow", f"{s}_wrist", "forearm", "sleeve", shade, True),
                  (f"{s}_hip", f"{s}_knee", "thigh", "trousers", shade, True),
                  (f"{s}_knee", f"{s}_ankle", "shin", "trousers", shade, True)]
    return prims


PRIMS = _primitives()
_PA = np.array([_J[p[0]] for p in PRIMS])
_PB = np.array([_J[p[1]] for p in PRIMS])
_SHADOW = np.array([p[5] for p in PRIMS])
_NOSE = [i for i, p in enumerate(PRIMS) if p[2] == "nose"][0]


def project(cam, P: np.ndarray, view: View, H: int, W: int):
    """World points [..., 3] → pixel x, y and camera depth z (each [...]) in the `view` window."""
    rel = P - cam.pos
    z = rel @ cam.fwd
    f = view.focal(H)
    return 0.5 * W + f * ((rel @ cam.right) / z - view.u0), 0.5 * H - f * ((rel @ cam.up) / z - view.v0), z


def _coverage(ax, ay, bx, by, r, x0, x1, y0, y1):
    """Anti-aliased coverage of K thick segments over pixels [y0:y1, x0:x1] → (cov [K,h,w], t [K,h,w])."""
    px = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, None, :] - ax[:, None, None]
    py = (np.arange(y0, y1, dtype=np.float32) + 0.5)[None, :, None] - ay[:, None, None]
    dx, dy = (bx - ax)[:, None, None], (by - ay)[:, None, None]
    L2 = np.maximum(dx * dx + dy * dy, 1e-9)
    t = np.clip((px * dx + py * dy) / L2, 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    cov = np.clip(r[:, None, None] + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)
    return cov, t


def _bbox(xs, ys, r, H, W):
    x0, x1 = max(int(math.floor((xs - r).min())) - 1, 0), min(int(math.ceil((xs + r).max())) + 2, W)
    y0, y1 = max(int(math.floor((ys - r).min())) - 1, 0), min(int(math.ceil((ys + r).max())) + 2, H)
    return x0, x1, y0, y1


def draw_figure(img, obj_depth, joints, cam, view: View, radius, colors):
    """Draws the figure (and its floor shadow) into img float32 [H, W, 3] in place.

    All K primitives are rasterised at once over the figure's bounding box; each pixel composites its two
    nearest covering primitives (a per-pixel depth test, also against the scene's solid objects).
    """
    H, W = img.shape[:2]
    f = view.focal(H)
    x, y, z = (v.astype(np.float32) for v in project(cam, joints, view, H, W))
    ground = joints.copy()
    ground[:, 2] = 0.0
    gx, gy, gz = (v.astype(np.float32) for v in project(cam, ground, view, H, W))
    radius = radius.astype(np.float32)
    # shadow: union of the limbs' ground projections
    sa, sb = _PA[_SHADOW], _PB[_SHADOW]
    rs = np.maximum(1.3 * radius[_SHADOW] * f / (0.5 * (gz[sa] + gz[sb])), 0.6).astype(np.float32)
    x0, x1, y0, y1 = _bbox(np.concatenate([gx[sa], gx[sb]]), np.concatenate([gy[sa], gy[sb]]), np.tile(rs, 2),
                           H, W)
    if x0 < x1 and y0 < y1:
        cov, t = _coverage(gx[sa], gy[sa], gx[sb], gy[sb], rs, x0, x1, y0, y1)
        depth = gz[sa][:, None, None] + t * (gz[sb] - gz[sa])[:, None, None]
        cov *= depth < obj_depth[y0:y1, x0:x1]
        img[y0:y1, x0:x1] *= (1.0 - 0.35 * cov.max(0))[..., None]
    # figure
    ia, ib = _PA, _PB
    ax, ay, az = x[ia].copy(), y[ia].copy(), z[ia].copy()
    k = _NOSE  # the nose starts inside the head disc
    ax[k], ay[k], az[k] = (x[ia[k]] + 0.55 * (x[ib[k]] - x[ia[k]]), y[ia[k]] + 0.55 * (y[ib[k]] - y[ia[k]]),
                           z[ia[k]] + 0.55 * (z[ib[k]] - z[ia[k]]))
    bx, by, bz = x[ib], y[ib], z[ib]
    r = np.maximum(radius * f / (0.5 * (az + bz)), 0.5).astype(np.float32)
    x0, x1, y0, y1 = _bbox(np.concatenate([ax, bx]), np.concatenate([ay, by]), np.tile(r, 2), H, W)
    if x0 >= x1 or y0 >= y1:
        return
    cov, t = _coverage(ax, ay, bx, by, r, x0, x1, y0, y1)
    depth = az[:, None, None] + t * (bz - az)[:, None, None]
    depth = np.where((cov > 0) & (depth < obj_depth[y0:y1, x0:x1]), depth, np.inf)
    k1 = depth.argmin(0)[None]
    a1 = np.take_along_axis(cov, k1, 0)[0] * np.isfinite(np.take_along_axis(depth, k1, 0)[0])
    np.put_along_axis(depth, k1, np.inf, 0)
    k2 = depth.argmin(0)[None]
    a2 = np.take_along_axis(cov, k2, 0)[0] * np.isfinite(np.take_along_axis(depth, k2, 0)[0])
    reg = img[y0:y1, x0:x1]
    reg += a2[..., None] * (colors[k2[0]] - reg)
    reg += a1[..., None] * (colors[k1[0]] - reg)
