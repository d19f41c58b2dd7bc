"""Prepared MMAct's clip format: one `tf.train.Example` per kept clip in TFRecord shards (`FEATURES`), the
decoding workers that make one (video decoded once with PyAV, frames as JPEGs, raw sensor CSV rows) and the
reader of finished shards (`read_prepared`). The command that runs them is `prepare_mmact.py`.

Only `read_prepared`, `serialize_example` and the shard writer import TensorFlow; decoding workers
(spawned processes) import numpy, PyAV and Pillow only.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mumae_jax.data import mmact_layout as L

FORMAT_VERSION = 1
SHARD_PATTERN = "clips-{index:05d}-of-{count:05d}.tfrecord"
_SHARD_RE = re.compile(r"^clips-(\d{5})-of-(\d{5})\.(tfrecord|json)(\.tmp-\d+)?$")

# Feature spec of one record (one kept clip). `{s}` is each sensor name of --sensors.
FEATURES: dict[str, str] = {
    "clip": "bytes: clip name subject{N}_cam{K}_scene{S}_session{T}_{action}",
    "action": "bytes: action (class) name",
    "label": "int64: index of the action in the class list (--classes, default the 33 alphabetical "
             "Mu-MAE classes, carrying=0 .. waving_hand=32); -1 for an unknown class kept with "
             "--allow_unknown_classes",
    "subject": "int64", "camera": "int64", "scene": "int64", "session": "int64",
    "video_path": "bytes: source video path",
    "frames": "bytes list [T]: one JPEG per frame, RGB, resized so the short side is --short_side",
    "num_frames": "int64: T, the number of decoded frames",
    "fps": "float: the video stream's average frame rate (0 if unknown)",
    "height": "int64: frame height after resizing", "width": "int64: frame width after resizing",
    "orig_height": "int64: source frame height", "orig_width": "int64: source frame width",
    "sensors": "bytes list: the sensor names stored in this record, in --sensors order",
    "sensor/{s}/values": "float list [L*3]: raw x, y, z (CSV columns 2-4) as float32, row-major [L, 3]; "
                         "not normalised, not resampled",
    "sensor/{s}/timestamps": "bytes: raw CSV column 1 as little-endian float64 [L] (float_list is only "
                             "float32, too coarse for epoch milliseconds)",
    "sensor/{s}/length": "int64: L, the number of rows",
    "sensor/{s}/path": "bytes: source CSV path",
}


# ----------------------------------------------------------------------------------------------------
# Worker side (no TensorFlow)
# ----------------------------------------------------------------------------------------------------

class VideoError(Exception):
    def __init__(self, reason: str, detail: str, num_frames: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.num_frames = reason, detail, num_frames


def _resized_hw(h: int, w: int, short_side: int) -> tuple[int, int]:
    if short_side <= 0:
        return h, w
    if h <= w:
        return short_side, max(1, int(round(w * short_side / h)))
    return max(1, int(round(h * short_side / w))), short_side


def decode_video(path: str, short_side: int) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """Decode all frames of `path` to uint8 RGB [h, w, 3] with the short side resized to `short_side`
    (aspect kept, swscale bilinear; 0 keeps the size). Returns (frames, fps, (orig_h, orig_w)).

    Raises VideoError: `video_unreadable` (cannot open, no video stream, or an empty stream) or
    `video_corrupt` (the container opens but decoding raises after N >= 0 frames, or fewer frames decode
    than the container declares: a truncated file).
    """
    import av

    try:
        container = av.open(path)
    except Exception as e:  # noqa: BLE001 — PyAV raises many types for non-videos
        raise VideoError("video_unreadable", f"{path}: cannot open: {e}") from None
    with container:
        if not container.streams.video:
            raise VideoError("video_unreadable", f"{path}: no video stream")
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        frames: list[np.ndarray] = []
        orig = (int(stream.codec_context.height or 0), int(stream.codec_context.width or 0))
        try:
            for frame in container.decode(stream):
                if not frames:  # every frame gets the first frame's output size (even if the stream changes)
                    orig = (frame.height, frame.width)
                    h, w = _resized_hw(frame.height, frame.width, short_side)
                frames.append(frame.to_ndarray(format="rgb24", width=w, height=h))
        except Exception as e:  # noqa: BLE001 — av.error.* (InvalidDataError, EOFError, ...)
            raise VideoError("video_corrupt", f"{path}: decoding failed after {len(frames)} frames: {e}",
                             len(frames)) from None
    if not frames:
        raise VideoError("video_unreadable", f"{path}: no frames")
    if declared and len(frames) < declared:
        raise VideoError("video_corrupt", f"{path}: truncated: decoded {len(frames)} of {declared} "
                         "frames declared by the container", len(frames))
    return frames, fps, orig


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _worker_init():
    try:
        import av.logging
        av.logging.set_level(None)  # silence FFmpeg's own messages about corrupt input
    except Exception:  # noqa: BLE001
        pass


def process_clip(job: Mapping[str, Any]) -> dict:
    """Check and decode one clip. job: {'entry': manifest entry (status unset), 'sensors': [(name, path)],
    'opts': {...}, 'shard': name}. Returns {'entry': ..., 'record': None | {...}}."""
    entry = dict(job["entry"])
    opts = job["opts"]
    sensors = {}
    stats = {"decoded": 0, "decoded_frames": 0}
    try:
        for name, path in job["sensors"]:
            try:
                sensors[name] = L.read_sensor_csv(path)
            except OSError as e:  # vanished or unreadable since the scan
                raise L.SensorFileError("sensor_missing", f"{name}: cannot read {path}: {e}") from None
        stats["decoded"] = 1
        try:
            frames, fps, orig = decode_video(entry["video"], opts["short_side"])
        except VideoError as e:
            stats["decoded_frames"] = e.num_frames or 0
            raise
        stats["decoded_frames"] = len(frames)
        if len(frames) < opts["min_frames"]:
            raise VideoError("too_few_frames", f"{len(frames)} frames < --min_frames {opts['min_frames']}",
                             len(frames))
    except (L.SensorFileError, VideoError) as e:
        entry.update(status="dropped", reason=e.reason, detail=e.detail, shard=None,
                     num_frames=getattr(e, "num_frames", None))
        return {"entry": entry, "record": None, **stats}
    h, w = frames[0].shape[:2]
    record = {
        "frames": [encode_jpeg(f, opts["jpeg_quality"]) for f in frames],
        "fps": fps, "height": h, "width": w, "orig_height": orig[0], "orig_width": orig[1],
        "sensors": sensors,
    }
    entry.update(status="kept", reason=None, shard=job["shard"], num_frames=len(frames),
                 height=h, width=w, fps=fps)
    return {"entry": entry, "record": record, **stats}


# ----------------------------------------------------------------------------------------------------
# TFRecord writing and reading (TensorFlow)
# ----------------------------------------------------------------------------------------------------

def serialize_example(entry: Mapping[str, Any], record: Mapping[str, Any], sensor_names: Sequence[str]) -> bytes:
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[x if isinstance(x, bytes) else
                                                                     str(x).encode() for x in v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

    def f(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    feat = {
        "clip": b([entry["clip"]]), "action": b([entry["action"]]), "label": i([entry["label"]]),
        "subject": i([entry["subject"]]), "camera": i([entry["camera"]]), "scene": i([entry["scene"]]),
        "session": i([entry["session"]]), "video_path": b([entry["video"]]),
        "frames": b(record["frames"]), "num_frames": i([len(record["frames"])]), "fps": f([record["fps"]]),
        "height": i([record["height"]]), "width": i([record["width"]]),
        "orig_height": i([record["orig_height"]]), "orig_width": i([record["orig_width"]]),
        "sensors": b(sensor_names),
    }
    for s in sensor_names:
        ts, vals = record["sensors"][s]
        feat[f"sensor/{s}/values"] = f(np.asarray(vals, np.float32).reshape(-1))
        feat[f"sensor/{s}/timestamps"] = b([np.asarray(ts, "<f8").tobytes()])
        feat[f"sensor/{s}/length"] = i([len(ts)])
        feat[f"sensor/{s}/path"] = b([entry["sensors"][s]])
    return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


def parsing_spec(sensor_names: Sequence[str]) -> dict:
    """`tf.io.parse_single_example` spec for a record (see FEATURES)."""
    import tensorflow as tf

    s_, i_ = tf.io.FixedLenFeature([], tf.string), tf.io.FixedLenFeature([], tf.int64)
    spec = {k: s_ for k in ("clip", "action", "video_path")}
    spec.update({k: i_ for k in ("label", "subject", "camera", "scene", "session", "num_frames", "height",
                                 "width", "orig_height", "orig_width")})
    spec["fps"] = tf.io.FixedLenFeature([], tf.float32)
    spec["frames"] = tf.io.VarLenFeature(tf.string)
    spec["sensors"] = tf.io.VarLenFeature(tf.string)
    for s in sensor_names:
        spec[f"sensor/{s}/values"] = tf.io.VarLenFeature(tf.float32)
        spec[f"sensor/{s}/timestamps"] = s_
        spec[f"sensor/{s}/length"] = i_
        spec[f"sensor/{s}/path"] = s_
    return spec


def shard_paths(out_dir: str | os.PathLike) -> list[str]:
    return sorted(glob.glob(os.path.join(str(out_dir), "clips-?????-of-?????.tfrecord")))


def read_prepared(out_dir: str | os.PathLike, sensors: Sequence[str] | None = None, decode_frames: bool = True):
    """Read a prepared directory → tf.data.Dataset of dicts, in shard order:

    frames uint8 [T, H, W, 3] (JPEG bytes [T] if decode_frames=False), num_frames, fps, height, width,
    orig_height, orig_width, clip, action, label, subject, camera, scene, session, video_path,
    sensors: {name: {'values': float32 [L, 3], 'timestamps': float64 [L]}}, sensor_paths: {name: path}.
    `sensors` defaults to the --sensors of the prepare run (summary.json).
    """
    import tensorflow as tf

    if sensors is None:
        summary = Path(out_dir) / "summary.json"
        sensors = (json.loads(summary.read_text())["options"]["sensors"] if summary.is_file()
                   else list(L.DEFAULT_SENSORS))
    sensors = list(sensors)
    files = shard_paths(out_dir)
    if not files:
        raise FileNotFoundError(f"no clips-*.tfrecord shards in {out_dir}")
    spec = parsing_spec(sensors)

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        out = {k: ex[k] for k in ("clip", "action", "video_path", "label", "subject", "camera", "scene",
                                  "session", "num_frames", "height", "width", "orig_height", "orig_width",
                                  "fps")}
        jpegs = ex["frames"].values
        if decode_frames:
            frames = tf.map_fn(lambda x: tf.io.decode_jpeg(x, channels=3), jpegs,
                               fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
            out["frames"] = tf.reshape(frames, tf.stack([ex["num_frames"], ex["height"], ex["width"], 3]))
        else:
            out["frames"] = jpegs
        out["sensors"] = {s: {"values": tf.reshape(ex[f"sensor/{s}/values"].values, [-1, 3]),
                              "timestamps": tf.io.decode_raw(ex[f"sensor/{s}/timestamps"], tf.float64)}
                          for s in sensors}
        out["sensor_paths"] = {s: ex[f"sensor/{s}/path"] for s in sensors}
        return out

    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _atomic_write_bytes(path: Path, data: bytes):
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_shard(path: Path, examples: Iterable[bytes]):
    import tensorflow as tf

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tf.io.TFRecordWriter(str(tmp)) as w:
        for ex in examples:
            w.write(ex)
    os.replace(tmp, path)
