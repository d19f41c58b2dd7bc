"""Pretraining input pipeline (tf.data), deterministic and resumable by step.

The stream is a pure function of (seed, global example index i). Example i belongs to epoch i // N
(N = examples in the split); its clip is entry i % N of a permutation of the split seeded by
(seed, epoch) (identity when shuffle is off), and its random frame offset comes from an RNG seeded by
(seed, i). Step s of process p (of P) holds examples s·G + p·B + j, j < B, with G the global batch
and B = G / P. So `start_step=k` yields exactly what an uninterrupted stream yields from step k on, and
the processes' batches concatenated equal the single-process batch.

Frames and sensors are generated inside tf.data by `tf.numpy_function` (parallel, order-preserving).
"""
from __future__ import annotations

import atexit
import functools
import gc
import weakref
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

from mumae_jax.data import sensor_ops, sensor_ops_tf, splits, synthetic, video_ops
from mumae_jax.data.geometry import ClipGeometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SUPPORTED_DATASETS = ("synthetic", "mmact")
SPLITS = ("pretrain_train", "pretrain_val", "base", "novel", "all")
PRETRAIN_VAL_FRACTION = 0.2

_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)


def _get(cfg: Any, key: str, default=None):
    try:
        return cfg[key]
    except (KeyError, AttributeError, TypeError):
        return default


def hide_gpus_from_tf() -> None:
    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised; TF then keeps its devices
        pass


def split_clips(dataset: synthetic.SyntheticMMAct, split: str, data_cfg: Mapping | None = None
                ) -> list[synthetic.ClipRef]:
    """The clips of a split, in a fixed order.

    'pretrain_train' / 'pretrain_val' follow the one pretraining rule of every data source,
    `splits.pretrain_split`: a hashed ~80/20 clip-level split of the base classes of the class split,
    without its validation classes unless `include_validation_classes` (so one-shot validation stays
    honest). The class split and the rule's knobs come from data_cfg: `class_split_file` (else
    `num_val` / `val_seed`, Mu-MAE split 3 with 5 validation classes), `val_fraction` (0.2),
    `pretrain_seed` (0), `include_validation_classes` (False). 'base' (all 23 split-3 base classes),
    'novel' and 'all' are class sets.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "all":
        return dataset.clips()
    if split == "novel":
        return dataset.clips(synthetic.NOVEL_CLASSES)
    if split == "base":
        return dataset.clips(synthetic.BASE_CLASSES)
    cfg = data_cfg or {}
    cs = splits.resolve_class_split(_get(cfg, "class_split_file", "") or "", _get(cfg, "num_val", 5),
                                    _get(cfg, "val_seed", 0))
    return splits.pretrain_split(dataset.clips(), cs, split.removeprefix("pretrain_"),
                                 val_fraction=float(_get(cfg, "val_fraction", PRETRAIN_VAL_FRACTION)),
                                 seed=int(_get(cfg, "pretrain_seed", 0)),
                                 include_validation_classes=bool(_get(cfg, "include_validation_classes", False)),
                                 on_unknown="ignore")


def _check_name(data_cfg) -> str:
    name = _get(data_cfg, "name", None)
    if name not in SUPPORTED_DATASETS:
        raise ValueError(f"unsupported dataset name {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}")
    return name


def repeated_sampling(data_cfg: Mapping) -> int:
    """Examples drawn from each clip per epoch (`data.repeated_sampling`, default 1)."""
    k = _get(data_cfg, "repeated_sampling", 1)
    k = 1 if k is None else int(k)
    if k < 1:
        raise ValueError(f"data.repeated_sampling={k} must be >= 1")
    return k


def make_dataset(data_cfg: Mapping) -> tuple[synthetic.SyntheticMMAct, list[synthetic.ClipRef]]:
    """(dataset, clips of data_cfg['split']) for a synthetic data config."""
    if _check_name(data_cfg) != "synthetic":
        raise ValueError(f"make_dataset serves the synthetic data, not {data_cfg['name']!r}")
    ds = synthetic.SyntheticMMAct(seed=int(_get(data_cfg, "seed", 0)),
                                  num_subjects=int(_get(data_cfg, "num_subjects", 8)),
                                  num_sessions=int(_get(data_cfg, "num_sessions", 2)),
                                  num_cameras=int(_get(data_cfg, "num_cameras", 4)),
                                  framing=str(_get(data_cfg, "framing", "person")),
                                  frame_cache_mb=int(_get(data_cfg, "frame_cache_mb", 0) or 0))
    split = str(_get(data_cfg, "split", "pretrain_train"))
    clips = split_clips(ds, split, data_cfg)
    if not clips:
        raise ValueError(f"split {split!r} is empty")
    return ds, clips


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0xE90C]).permutation(n)


def example_clip_index(i: int, n: int, seed: int, shuffle: bool) -> int:
    """Index into the split of global example i (epoch i // n, seeded permutation per epoch)."""
    epoch, pos = divmod(int(i), n)
    return int(_epoch_permutation(seed, epoch, n)[pos]) if shuffle else pos


def frame_indices(num_video_frames: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Official pretraining sampling → int64 [num_frames]: a random offset in
    [0, max(0, n - num_frames·stride)], then `stride` steps while the next index is <= n - 2, after which
    the last index reached repeats (the official loader's rule; `video_ops.pretrain_frame_indices`
    implements the same rule in TensorFlow)."""
    n = int(num_video_frames)
    offset = int(rng.integers(0, max(0, n - num_frames * stride) + 1))
    last = int(np.clip((n - 2 - offset) // stride, 0, num_frames - 1))
    return offset + stride * np.minimum(np.arange(num_frames, dtype=np.int64), last)


AUGMENT_DEFAULTS = dict(video_crop="none", sensor_time_crop=1.0, sensor_rotation_deg=0.0,
                        rotate_sensors=("acc_phone", "acc_watch", "gyro"))
VIDEO_CROPS = ("none", "multiscale")


def augment_options(augment: Any) -> dict:
    """The pretraining input's augmentation settings (config.augment) with defaults, checked:

    video_crop: 'none' (synthetic: the rendered frame as is) or 'multiscale' (the official
      GroupMultiScaleCrop; synthetic clips are then rendered at round(image_size·256/224) first);
    sensor_time_crop in (0, 1]: random window of each recording (`sensor_ops_tf.augment_sensor`);
    sensor_rotation_deg >= 0: random rotation of the axes of the sensors named in rotate_sensors.
    """
    a = {**AUGMENT_DEFAULTS, **({} if augment is None else dict(augment))}
    unknown = sorted(set(a) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment option(s) {unknown}; known: {sorted(AUGMENT_DEFAULTS)}")
    if a["video_crop"] not in VIDEO_CROPS:
        raise ValueError(f"augment.video_crop={a['video_crop']!r}; expected one of {', '.join(VIDEO_CROPS)}")
    if not 0.0 < float(a["sensor_time_crop"]) <= 1.0:
        raise ValueError(f"augment.sensor_time_crop={a['sensor_time_crop']} must be in (0, 1]")
    if float(a["sensor_rotation_deg"]) < 0.0:
        raise ValueError(f"augment.sensor_rotation_deg={a['sensor_rotation_deg']} must be >= 0")
    a["rotate_sensors"] = tuple(a["rotate_sensors"])
    return a


def augment_sensors_tf(raw: Mapping[str, Any], example_seed, augment: Mapping, sensor_length: int) -> dict:
    """{name: raw values [L, 3]} → {name: float32 [sensor_length, 3]}: `augment_sensor` (per-sensor
    seeds split from example_seed [2]), then the official preprocessing."""
    names = list(raw)
    seeds = tf.unstack(tf.random.experimental.stateless_split(example_seed, len(names)))
    out = {}
    for name, s in zip(names, seeds):
        v = sensor_ops_tf.augment_sensor(
            raw[name], s, time_crop=float(augment["sensor_time_crop"]),
            rotation_deg=float(augment["sensor_rotation_deg"]) if name in augment["rotate_sensors"] else 0.0)
        out[name] = tf.ensure_shape(sensor_ops_tf.preprocess_sensor(v, sensor_length), (sensor_length, 3))
    return out


def sensors_augmented(augment: Mapping) -> bool:
    return float(augment["sensor_time_crop"]) < 1.0 or float(augment["sensor_rotation_deg"]) > 0.0


def check_batch_geometry(geometry: ClipGeometry, *, global_batch_size: int, start_step: int, process_index: int,
                         process_count: int) -> None:
    """ValueError naming a bad batch/process split or clip geometry (both pretraining input builders)."""
    num_frames, frame_stride, image_size = geometry.num_frames, geometry.frame_stride, geometry.image_size
    sensor_length = geometry.sensor_length
    if global_batch_size < 1 or process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad batch/process geometry: global_batch_size={global_batch_size}, "
                         f"process_index={process_index}, process_count={process_count}")
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                         f"process_count={process_count}")
    if num_frames < 1 or frame_stride < 1 or image_size < 8 or sensor_length < 1 or start_step < 0:
        raise ValueError(f"bad input geometry: num_frames={num_frames}, frame_stride={frame_stride}, "
                         f"image_size={image_size}, sensor_length={sensor_length}, start_step={start_step}")


def build_pretrain_input(data_cfg, geometry: ClipGeometry, *, global_batch_size: int, seed: int, start_step: int = 0,
                         process_index: int = 0, process_count: int = 1,
                         augment: Any = None) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """Returns (iterator of host-local numpy batches, number of examples in the split); clips as `geometry` says
    (`num_frames` frames `frame_stride` apart, `image_size`², `sensors` resampled to `sensor_length`).

    Batch (B = global_batch_size // process_count):
      'video'  float32 [B, num_frames, image_size, image_size, 3], ImageNet-normalised;
      <sensor> float32 [B, sensor_length, 3] per name in `sensors` (min-max + resampled);
      'label'  int32 [B] (global class id);  'index' int64 [B] (global example index).
    The stream is infinite; nothing is generated before the first `next()`. `augment`: config.augment
    (`augment_options`; None: no augmentation beyond the random frame offset, as before; prepared MMAct
    always has the official multi-scale crop).
    """
    check_batch_geometry(geometry, global_batch_size=global_batch_size, start_step=start_step,
                         process_index=process_index, process_count=process_count)
    num_frames, frame_stride, image_size = geometry.num_frames, geometry.frame_stride, geometry.image_size
    sensor_length, sensors = geometry.sensor_length, geometry.sensors
    if _check_name(data_cfg) != "synthetic":
        raise ValueError(f"input_pipeline.build_pretrain_input reads the synthetic data; read {data_cfg['name']!r} "
                         "through mumae_jax.data.sources.get_source(config.data).pretrain_input")
    augment = augment_options(augment)
    bad = [s for s in sensors if s not in synthetic.SENSORS]
    if bad:
        raise ValueError(f"unknown sensors {bad}; expected names from {synthetic.SENSORS}")
    dataset, clips = make_dataset(data_cfg)
    repeats = repeated_sampling(data_cfg)
    n_clips = len(clips)
    shuffle = bool(_get(data_cfg, "shuffle", True))
    seed = int(seed)
    B = global_batch_size // process_count
    G = global_batch_size

    raw_sensors = sensors_augmented(augment)  # augmented: raw recordings into the graph, processed there
    crop = augment["video_crop"] == "multiscale"
    render_size = round(image_size * 256 / 224) if crop else image_size

    @functools.lru_cache(maxsize=None)
    def instance_sensors(instance):  # one recording serves all cameras: compute it once per build
        rec = dataset.sensors(instance)
        if raw_sensors:
            return tuple(rec[s][1] for s in sensors)
        return tuple(sensor_ops.preprocess_sensor(rec[s][1], sensor_length) for s in sensors)

    def make_example(i):
        i = int(i)
        clip = clips[example_clip_index(i // repeats, n_clips, seed, shuffle)]
        rng = np.random.default_rng([seed, i, 0xF4A3])
        idx = frame_indices(dataset.num_frames(clip), num_frames, frame_stride, rng)
        frames = dataset.render(clip, idx, (render_size, render_size))  # uint8; normalised in the graph
        return (frames,) + instance_sensors(clip.instance) + (np.int32(clip.label), np.int64(i))

    keys = ("video",) + sensors + ("label", "index")
    tout = [tf.uint8] + [tf.float32] * len(sensors) + [tf.int32, tf.int64]
    shapes = ([(num_frames, render_size, render_size, 3)]
              + [(None, 3) if raw_sensors else (sensor_length, 3)] * len(sensors) + [(), ()])
    mean, std = tf.constant(_MEAN), tf.constant(_STD)

    def to_example(k):
        step = start_step + k // B
        i = step * G + process_index * B + k % B
        values = tf.numpy_function(make_example, [i], tout, stateful=False)
        ex = {key: tf.ensure_shape(v, s) for key, v, s in zip(keys, values, shapes)}
        _, crop_seed, sensor_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), i]), 3))
        if crop:
            ex["video"], _ = video_ops.multiscale_crop(ex["video"], crop_seed, output_size=image_size)
        if raw_sensors:
            ex.update(augment_sensors_tf({s: ex[s] for s in sensors}, sensor_seed, augment, sensor_length))
        ex["video"] = (tf.cast(ex["video"], tf.float32) * (1.0 / 255.0) - mean) / std
        return ex

    hide_gpus_from_tf()
    ds = tf.data.Dataset.range(0, np.iinfo(np.int64).max)
    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(B, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)

    return BatchIterator(ds), n_clips * repeats


class BatchIterator:
    """Lazy numpy iterator over a tf.data pipeline; `close()` releases it.

    Live iterators are closed at interpreter exit: a tf.data iterator whose `numpy_function` workers
    are still running can otherwise deadlock Python's finalisation.
    """

    def __init__(self, ds: tf.data.Dataset):
        self._ds = ds
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            self._it = self._ds.as_numpy_iterator()
            _LIVE.add(self)
        return next(self._it)

    def close(self) -> None:
        self._it = None
        _LIVE.discard(self)


_LIVE: "weakref.WeakSet[BatchIterator]" = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
    for it in list(_LIVE):
        it.close()
    gc.collect()
