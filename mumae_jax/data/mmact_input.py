"""Pretraining input from prepared MMAct (or users' data in its layout), deterministic and resumable.

    prepare command (--out DIR) -> TFDS `mmact/<split_config>` (built on first use under DIR/tfds,
    tfrecord + array_record copy) -> random access by global example index -> tf.data

Like the synthetic pipeline, the stream is a pure function of (seed, global example index i): example
i is entry `example_clip_index(i // k, N, seed, shuffle)` of the split (k = `data.repeated_sampling`:
k consecutive examples are different samples of one clip), its frames are 16 at stride 2 from a
start drawn with the stateless seed (seed, i) (official repeat-last rule), only those JPEGs are
decoded, then the official multi-scale crop (scales 1/.875/.75/.66, 13 fixed offsets) resized to
`image_size`, scaled to [0, 1] and ImageNet-normalised; each sensor is min-max normalised per axis
(constant axis -> 0) and resampled to `sensor_length` samples with floor(linspace).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mumae_jax.data import mmact_tfds, sensor_ops_tf, video_ops
from mumae_jax.data.geometry import ClipGeometry

log = logging.getLogger(__name__)
_ANNOUNCED: set = set()


def _field(cfg, key, default=None):
    try:
        value = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if value in (None, "") else value


# Pretraining-split settings a data config may change (`splits.pretrain_split`); each one that differs from the
# builder's default gives a derived TFDS config (`mmact_splits.py`), so differently split data never mix.
SPLIT_FIELDS = ("val_fraction", "include_validation_classes")


def split_overrides(data_cfg) -> dict:
    """The `SPLIT_FIELDS` of `data_cfg` that differ from the TFDS builder's defaults."""
    from mumae_jax.data import mmact_splits

    defaults = {f.name: f.default for f in dataclasses.fields(mmact_splits.MmactConfig) if f.name in SPLIT_FIELDS}
    return {k: type(d)(_field(data_cfg, k, d)) for k, d in defaults.items() if _field(data_cfg, k, d) != d}


def open_split(data_cfg, sensors: Sequence[str]):
    """(raw-bytes random-access source, TFDS features) of `data_cfg.split`; builds the TFDS dataset if needed."""
    prepared = _field(data_cfg, "dir")
    if not prepared:
        raise ValueError("data=mmact needs --config.data.dir=<the prepare command's --out directory>")
    if not os.path.exists(os.path.join(prepared, "summary.json")):
        raise ValueError(f"{prepared}: no summary.json; run `python -m mumae_jax.data.prepare_mmact --src ... "
                         f"--out {prepared}` first")
    tfds_dir = _field(data_cfg, "tfds_dir") or os.path.join(prepared, "tfds")
    builder = mmact_tfds.build(prepared, tfds_dir, _field(data_cfg, "split_config", "mumae_split3"),
                               class_split_file=_field(data_cfg, "class_split_file"), **split_overrides(data_cfg))
    missing = [s for s in sensors if s not in builder.sensors]
    if missing:
        raise ValueError(f"{prepared}: sensors {missing} were not prepared (prepared: {builder.sensors}); name "
                         f"the prepared ones with the config argument sensors={'+'.join(builder.sensors)}, e.g. "
                         f"--config=configs/pretrain.py:data=mmact,sensors={'+'.join(builder.sensors)}")
    split = data_cfg["split"]
    if split not in builder.info.splits:
        raise ValueError(f"split {split!r} is not in mmact/{builder.builder_config.name} "
                         f"(has: {sorted(builder.info.splits)})")
    source = builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    said = (prepared, builder.builder_config.name, split, tuple(sensors))
    if said not in _ANNOUNCED:  # once per process, not once per evaluation
        _ANNOUNCED.add(said)
        log.info("data: mmact/%s split %s, %d clips, sensors %s (%s)", builder.builder_config.name, split,
                 len(source), "+".join(sensors), prepared)
    return source, builder.info.features


def build_mmact_pretrain_input(data_cfg, geometry: ClipGeometry, *, global_batch_size: int, seed: int,
                               start_step: int = 0, process_index: int = 0, process_count: int = 1, augment=None):
    """Same contract as `input_pipeline.build_pretrain_input` (returns (batch iterator, num examples)).

    The video always gets the official multi-scale crop (augment.video_crop='none' is refused)."""
    from mumae_jax.data import input_pipeline  # shared index logic and iterator type

    input_pipeline.check_batch_geometry(geometry, global_batch_size=global_batch_size, start_step=start_step,
                                        process_index=process_index, process_count=process_count)
    num_frames, frame_stride, image_size = geometry.num_frames, geometry.frame_stride, geometry.image_size
    sensor_length, sensors = geometry.sensor_length, geometry.sensors
    augment = input_pipeline.augment_options({"video_crop": "multiscale"} if augment is None else augment)
    if augment["video_crop"] != "multiscale":
        raise ValueError("prepared MMAct's pretraining input always uses the official multi-scale crop: "
                         "set augment.video_crop='multiscale' (configs/pretrain.py does for data=mmact)")
    raw_sensors = input_pipeline.sensors_augmented(augment)

    source, features = open_split(data_cfg, sensors)
    repeats = input_pipeline.repeated_sampling(data_cfg)
    n_clips = len(source)
    shuffle = bool(_field(data_cfg, "shuffle", True))
    B, G = global_batch_size // process_count, global_batch_size

    def fetch(i):
        return source[input_pipeline.example_clip_index(int(i) // repeats, n_clips, seed, shuffle)]

    def to_example(k):
        i = (start_step + k // B) * G + process_index * B + k % B
        raw = tf.numpy_function(fetch, [i], tf.string, stateful=False)
        ex = features.deserialize_example(raw, decoders={"video": tfds.decode.SkipDecoding()})
        frame_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), i]), 2))
        jpegs = ex["video"]
        idx = video_ops.pretrain_frame_indices(tf.shape(jpegs)[0], num_frames, frame_stride, seed=frame_seed)
        frames = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), tf.gather(jpegs, idx),
                           fn_output_signature=tf.uint8)
        frames, _ = video_ops.multiscale_crop(frames, crop_seed, output_size=image_size)
        out = {"video": tf.ensure_shape(video_ops.imagenet_normalize(frames),
                                        (num_frames, image_size, image_size, 3))}
        if raw_sensors:
            out.update(input_pipeline.augment_sensors_tf({s: ex["sensors"][s]["values"] for s in sensors},
                                                         tf.random.experimental.stateless_split(crop_seed, 1)[0],
                                                         augment, sensor_length))
        for s in sensors:
            if not raw_sensors:
                out[s] = tf.ensure_shape(sensor_ops_tf.preprocess_sensor(ex["sensors"][s]["values"], sensor_length),
                                         (sensor_length, 3))
        out["label"] = tf.cast(ex["label"], tf.int32)
        out["index"] = i
        return out

    input_pipeline.hide_gpus_from_tf()
    ds = tf.data.Dataset.range(0, np.iinfo(np.int64).max)
    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(B, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return input_pipeline.BatchIterator(ds), n_clips * repeats
