"""Builds small MMAct-layout trees (videos written with PyAV, sensor CSVs) for the prepare_mmact tests.

`build_tree(root)` writes `root/video/subjectN/camK/sceneS/sessionT/<action>.mp4` and
`root/<sensor>_clip/subjectN/sceneS/sessionT/<action>.csv` with one case of every kind the prepare
command must handle, and returns `expected`: {clip name: None (kept) or drop reason}. Each video is a
flat colour derived from its clip name (so decoded frames can be told apart); each sensor recording is
a set of sines derived from its instance (so a wrong pairing shows).
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np

SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
RATES = {"acc_phone": 100, "acc_watch": 100, "gyro": 50, "orientation": 50}
FPS = 30
T0_MS = 1_553_000_000_000  # epoch milliseconds, like a phone's clock


def clip_colour(name: str) -> tuple[int, int, int]:
    h = zlib.crc32(name.encode())
    return (40 + h % 170, 40 + (h >> 8) % 170, 40 + (h >> 16) % 170)


def write_video(path: Path, num_frames: int, width: int = 64, height: int = 48, colour=(100, 150, 200),
                faststart: bool = True):
    """A libx264 yuv420p mp4 of a flat colour with a moving bright bar (moov atom first if faststart)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        st = c.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "18", "g": "10"}
        for i in range(num_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[:] = colour
            x = (i * 2) % max(1, width - 4)
            img[:, x:x + 4] = 255
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def sensor_data(instance: str, sensor: str, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps ms float64 [L], values float64 [L, 3]) for one instance and sensor."""
    h = zlib.crc32(f"{instance}/{sensor}".encode())
    rate = RATES[sensor]
    n = int(round(duration_s * rate)) + 1
    t = np.arange(n) / rate
    ts = T0_MS + (h % 1000) + np.round(t * 1000.0)
    f = 0.5 + (h % 97) / 40.0
    vals = np.stack([np.sin(2 * np.pi * f * t + k + (h % 13)) * (1 + k) + (h % 7) - 3 for k in range(3)], 1)
    return ts, np.round(vals, 6)


def write_csv(path: Path, ts, vals):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{int(a)},{x:.6f},{y:.6f},{z:.6f}" for a, (x, y, z) in zip(ts, vals)]
    path.write_text("\n".join(lines) + "\n")


def video_path(root: Path, subject, cam, scene, session, action) -> Path:
    return root / "video" / f"subject{subject}" / f"cam{cam}" / f"scene{scene}" / f"session{session}" / f"{action}.mp4"


def sensor_path(root: Path, sensor, subject, scene, session, action) -> Path:
    return root / f"{sensor}_clip" / f"subject{subject}" / f"scene{scene}" / f"session{session}" / f"{action}.csv"


def clip_name(subject, cam, scene, session, action):
    return f"subject{subject}_cam{cam}_scene{scene}_session{session}_{action}"


def instance_name(subject, scene, session, action):
    return f"subject{subject}_scene{scene}_session{session}_{action}"


# (subject, scene, session, action, cameras, num_frames, (width, height))
GOOD = [
    (1, 1, 1, "walking", (1, 2), 24, (64, 48)),
    (2, 1, 1, "walking", (1, 2), 24, (64, 48)),
    (1, 1, 2, "kicking", (1,), 20, (48, 64)),  # portrait: the short side is the width
    (1, 3, 1, "drinking", (3,), 30, (64, 48)),
]


def build_tree(root: str | os.PathLike, *, num_frames_short: int = 8) -> dict[str, str | None]:
    """Write the full test tree under root; return {clip or instance name: None if kept else reason}."""
    root = Path(root)
    expected: dict[str, str | None] = {}

    def instance(subject, scene, session, action, cams, n=24, size=(64, 48), sensors=SENSORS):
        for cam in cams:
            name = clip_name(subject, cam, scene, session, action)
            write_video(video_path(root, subject, cam, scene, session, action), n, *size, colour=clip_colour(name))
        inst = instance_name(subject, scene, session, action)
        for s in sensors:
            write_csv(sensor_path(root, s, subject, scene, session, action), *sensor_data(inst, s, n / FPS))

    for subject, scene, session, action, cams, n, size in GOOD:
        instance(subject, scene, session, action, cams, n, size)
        for cam in cams:
            expected[clip_name(subject, cam, scene, session, action)] = None

    # -- bad videos (sensors fine) --
    instance(2, 1, 2, "kicking", (1,), 24)
    p = video_path(root, 2, 1, 1, 2, "kicking")
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.8)])  # moov first (faststart): cut inside the frame data
    expected[clip_name(2, 1, 1, 2, "kicking")] = "video_corrupt"
    p2 = video_path(root, 2, 2, 1, 2, "kicking")
    p2.parent.mkdir(parents=True, exist_ok=True)
    p2.write_bytes(b"this is not a video\n" * 50)
    expected[clip_name(2, 2, 1, 2, "kicking")] = "video_unreadable"
    instance(1, 1, 1, "pointing", (1,), num_frames_short)
    expected[clip_name(1, 1, 1, 1, "pointing")] = "too_few_frames"

    # -- bad sensors (video fine) --
    instance(1, 1, 1, "pulling", (1,), sensors=("acc_phone", "acc_watch", "orientation"))
    expected[clip_name(1, 1, 1, 1, "pulling")] = "sensor_missing"
    instance(1, 1, 1, "waving_hand", (1,))
    sensor_path(root, "acc_watch", 1, 1, 1, "waving_hand").write_text("")
    expected[clip_name(1, 1, 1, 1, "waving_hand")] = "sensor_empty"

    def edit_line(sensor, action, lineno, fn):
        sp = sensor_path(root, sensor, 1, 1, 1, action)
        lines = sp.read_text().splitlines()
        lines[lineno - 1] = fn(lines[lineno - 1])
        sp.write_text("\n".join(lines) + "\n")

    instance(1, 1, 1, "carrying", (1,))
    edit_line("orientation", "carrying", 5, lambda ln: ",".join(ln.split(",")[:3]))
    expected[clip_name(1, 1, 1, 1, "carrying")] = "sensor_unparsable"
    instance(1, 1, 1, "exiting", (1,))
    edit_line("acc_phone", "exiting", 10, lambda ln: str(T0_MS - 5) + "," + ln.split(",", 1)[1])
    expected[clip_name(1, 1, 1, 1, "exiting")] = "sensor_non_monotonic"
    instance(1, 1, 1, "setting_down", (1,))
    sp = sensor_path(root, "gyro", 1, 1, 1, "setting_down")
    sp.write_text("".join(",".join(ln.split(",")[:3] + ["0.250000"]) + "\n" for ln in sp.read_text().splitlines()))
    expected[clip_name(1, 1, 1, 1, "setting_down")] = "sensor_constant_axis"
    instance(1, 1, 1, "checking_time", (1,))
    edit_line("acc_phone", "checking_time", 7, lambda ln: ",".join(ln.split(",")[:2] + ["nan"] + ln.split(",")[3:]))
    expected[clip_name(1, 1, 1, 1, "checking_time")] = "sensor_non_finite"

    # -- pairing problems, unknown class, bad path --
    instance(1, 1, 1, "dancing", (1,))
    expected[clip_name(1, 1, 1, 1, "dancing")] = "unknown_class"
    instance(2, 2, 1, "jumping", (1,), sensors=())
    expected[clip_name(2, 1, 2, 1, "jumping")] = "no_sensors"
    inst = instance_name(2, 4, 1, "running")
    for s in SENSORS:
        write_csv(sensor_path(root, s, 2, 4, 1, "running"), *sensor_data(inst, s, 1.0))
    expected[inst] = "no_video"
    bad = root / "video" / "subject1" / "cam1" / "scene1" / "take1" / "walking.mp4"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"x")
    expected[str(bad)] = "unrecognised_path"
    return expected


def pack(root: str | os.PathLike, trees=("video",) + tuple(f"{s}_clip" for s in SENSORS)):
    """Replace root/<tree>/ by root/<tree>.tar.gz (members '<tree>/...')."""
    root = Path(root)
    for t in trees:
        with tarfile.open(root / f"{t}.tar.gz", "w:gz", compresslevel=1) as tar:
            tar.add(root / t, arcname=t)
        shutil.rmtree(root / t)


def add_member(archive: Path, name: str, data: bytes = b"1,2,3,4\n"):
    """Rewrite a .tar.gz with one more regular-file member named `name` (e.g. '../../evil.csv')."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for m, d in members:
            tar.addfile(m, io.BytesIO(d) if d is not None else None)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
