"""Episode input (tf.data) for the one-shot stage: N-way K-shot episodes of video + sensor clips.

Episodes come from an episode list (`episodes.make_episode_list` / a saved file): evaluation uses a
fixed, saved list; training uses a long seeded list. Each clip is processed as in the official one-shot
code (docs/official_code.md §1.5): `num_frames` frames spread over the whole clip
(`video_ops.episode_frame_indices`: random jitter when training, the deterministic centre window at evaluation),
short side -> `resize_to` (bilinear), a whole-clip horizontal flip with p=0.5 when training, centre crop
`image_size`, [0, 1] (no ImageNet normalisation); each sensor min-max normalised per axis and resampled to
`sensor_length`. Training randomness is stateless, seeded by (seed, episode index, slot), so a stream is reproducible.

An element (one episode, M = N·K + Q clips):
  support_video [N·K, num_frames, S, S, 3] float32, query_video [Q, num_frames, S, S, 3];
  support_<sensor> [N·K, sensor_length, 3], query_<sensor> [Q, sensor_length, 3];
  support_labels int32 [N·K], query_labels int32 [Q] (episode labels 0..N-1),
  global_labels int32 [N] (global class ids of the episode's classes), episode int64 [].

`build_clip_input` reads single clips (in batches) with the evaluation processing of an episode clip,
for frozen-feature evaluation (features extracted once per clip).
"""
from __future__ import annotations

import json
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mumae_jax.data import episodes as E
from mumae_jax.data import input_pipeline, sensor_ops, sensor_ops_tf, video_ops
from mumae_jax.data.geometry import ClipGeometry


def _positions(names: Sequence[str], all_names: Sequence[str], where: str) -> np.ndarray:
    """Indices of `names` in `all_names`; a clear error naming (up to 5) clips that are missing."""
    pos = {n: i for i, n in enumerate(all_names)}
    missing = [n for n in names if n not in pos]
    if missing:
        raise ValueError(f"{len(missing)} episode clip(s) are not in {where}: {missing[:5]}")
    return np.asarray([pos[n] for n in names], np.int64)


class _SyntheticClips:
    """Clips of the embedded synthetic dataset, rendered on demand (square frames of `resize_to`)."""

    def __init__(self, data_cfg, geometry: ClipGeometry):
        self.dataset, _ = input_pipeline.make_dataset({**dict(data_cfg), "split": "all"})
        self.clips = {c.name: c for c in self.dataset.clips()}
        self.names = sorted(self.clips)
        self.sensors, self.num_frames = geometry.sensors, geometry.num_frames
        self.sensor_length, self.size = geometry.sensor_length, geometry.resize_to

    def ids(self, names: Sequence[str]) -> np.ndarray:
        return _positions(names, self.names, "the synthetic dataset")

    def clip(self, clip_id, seed, train):
        """(frames uint8 [num_frames, size, size, 3], {sensor: float32 [sensor_length, 3]}) of one clip."""

        def meta(i):
            c = self.clips[self.names[int(i)]]
            rec = self.dataset.sensors(c)
            return [np.int32(self.dataset.num_frames(c))] + [
                sensor_ops.preprocess_sensor(rec[s][1], self.sensor_length) for s in self.sensors]

        out = tf.numpy_function(meta, [clip_id], [tf.int32] + [tf.float32] * len(self.sensors), stateful=False)
        idx = video_ops.episode_frame_indices(out[0], num_frames=self.num_frames, seed=seed if train else None)
        frames = tf.numpy_function(
            lambda i, ix: self.dataset.render(self.clips[self.names[int(i)]], ix, (self.size, self.size)),
            [clip_id, idx], tf.uint8, stateful=False)
        frames.set_shape((self.num_frames, self.size, self.size, 3))
        return frames, dict(zip(self.sensors, out[1:]))


class _MmactClips:
    """Clips of prepared MMAct (TFDS random access); the clip-name index is built once and cached."""

    def __init__(self, data_cfg, geometry: ClipGeometry, split):
        from mumae_jax.data import mmact_input

        self.source, self.features = mmact_input.open_split({**dict(data_cfg), "split": split}, geometry.sensors)
        self.sensors, self.num_frames = geometry.sensors, geometry.num_frames
        self.sensor_length = geometry.sensor_length
        tfds_dir = data_cfg.get("tfds_dir") or os.path.join(data_cfg["dir"], "tfds")
        cache = os.path.join(tfds_dir, f"clip_index_{data_cfg.get('split_config') or 'mumae_split3'}_{split}.json")
        if os.path.exists(cache):
            with open(cache, encoding="utf-8") as f:
                self.names = json.load(f)
        else:
            self.names = [tfds.as_numpy(self._decode(tf.constant(self.source[i])))["clip"].decode()
                          for i in range(len(self.source))]
            with open(cache, "w", encoding="utf-8") as f:
                json.dump(self.names, f)
        if len(self.names) != len(self.source):
            raise ValueError(f"{cache} is stale ({len(self.names)} names for {len(self.source)} clips); delete it")

    def _decode(self, raw):
        """Serialized example -> features with the video left as JPEG bytes [T]."""
        return self.features.deserialize_example(raw, decoders={"video": tfds.decode.SkipDecoding()})

    def ids(self, names: Sequence[str]) -> np.ndarray:
        return _positions(names, self.names, "this split")

    def clip(self, clip_id, seed, train):
        """(frames uint8 [num_frames, H, W, 3], {sensor: float32 [sensor_length, 3]}) of one clip."""
        raw = tf.numpy_function(lambda i: self.source[int(i)], [clip_id], tf.string, stateful=False)
        ex = self._decode(raw)
        jpegs = ex["video"]
        idx = video_ops.episode_frame_indices(tf.shape(jpegs)[0], num_frames=self.num_frames,
                                              seed=seed if train else None)
        frames = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), tf.gather(jpegs, idx),
                           fn_output_signature=tf.uint8)
        return frames, {s: sensor_ops_tf.preprocess_sensor(ex["sensors"][s]["values"], self.sensor_length)
                        for s in self.sensors}


def _clip_source(data_cfg, geometry: ClipGeometry, split):
    """The clip reader of `data_cfg` (synthetic or prepared MMAct)."""
    name = data_cfg["name"]
    if name == "synthetic":
        return _SyntheticClips(data_cfg, geometry)
    if name == "mmact":
        return _MmactClips(data_cfg, geometry, split)
    raise ValueError(f"unsupported dataset name {name!r}; supported: synthetic, mmact")


def _process_clip(clips, clip_id, seed, train, g: ClipGeometry):
    """One clip -> {"video" [num_frames, S, S, 3] float32 in [0, 1], <sensor> [sensor_length, 3]} (S: image_size).

    `seed` [2, 2] int64: (frame-jitter seed, flip seed), used only when `train`.
    """
    frames, sens = clips.clip(clip_id, seed[0], train)
    frames = video_ops.oneshot_clip_transform(frames, seed[1] if train else None, g.resize_to, g.image_size)
    out = {"video": tf.ensure_shape(frames, (g.num_frames, g.image_size, g.image_size, 3))}
    for s in g.sensors:
        out[s] = tf.ensure_shape(sens[s], (g.sensor_length, 3))
    return out


def build_episode_input(data_cfg, episode_list: Sequence[E.Episode], geometry: ClipGeometry, *, train: bool,
                        seed: int = 0, split: str = "meta_test", start: int = 0,
                        repeat: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Iterator over processed episodes of `episode_list`, from episode `start` (see module docstring), each
    clip as `geometry` says (frame_stride is not used: episode frames spread over the whole clip).

    `split` names the TFDS split holding the clips for prepared MMAct (ignored for synthetic data).
    """
    if not episode_list:
        raise ValueError("the episode list is empty")
    first = episode_list[0]
    nk, nq, way = len(first.support), len(first.query), len(first.classes)
    if any((len(e.support), len(e.query), len(e.classes)) != (nk, nq, way) for e in episode_list):
        raise ValueError("all episodes of a list must have the same way, shot and query count")
    clips = _clip_source(data_cfg, geometry, split)
    m = nk + nq
    ids = clips.ids([c for e in episode_list for c in (*e.support, *e.query)]).reshape(len(episode_list), m)
    support_labels = np.asarray([e.support_labels for e in episode_list], np.int32)
    query_labels = np.asarray([e.query_labels for e in episode_list], np.int32)
    global_labels = np.asarray([e.global_labels for e in episode_list], np.int32)
    n_ep = len(episode_list)

    def process(k):
        clip_seed = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), k]), 2)
        out = _process_clip(clips, tf.gather(tf.reshape(ids, [-1]), k), clip_seed, train, geometry)
        out["episode"] = k // m
        return out

    def assemble(b):
        e = b["episode"][0]
        out = {"support_video": b["video"][:nk], "query_video": b["video"][nk:],
               "support_labels": tf.gather(support_labels, e), "query_labels": tf.gather(query_labels, e),
               "global_labels": tf.gather(global_labels, e), "episode": e}
        for s in geometry.sensors:
            out[f"support_{s}"], out[f"query_{s}"] = b[s][:nk], b[s][nk:]
        return out

    input_pipeline.hide_gpus_from_tf()
    ds = tf.data.Dataset.range(start * m, n_ep * m)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(m, drop_remainder=True).map(assemble).prefetch(tf.data.AUTOTUNE)
    return input_pipeline.BatchIterator(ds)


def build_clip_input(data_cfg, clip_names: Sequence[str], geometry: ClipGeometry, *, split: str = "meta_test",
                     batch_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """Batches of the clips `clip_names`, in order, processed exactly as a clip of an evaluation episode.

    Each batch: {"video" [B, num_frames, S, S, 3] float32 in [0, 1], <sensor> [B, sensor_length, 3],
    "index" int64 [B] (position in `clip_names`; -1 for padding)}. The last batch is padded to
    `batch_size` by repeating the last clip. `split` as in `build_episode_input`.
    """
    if not len(clip_names):
        raise ValueError("no clips to read")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    clips = _clip_source(data_cfg, geometry, split)
    n = len(clip_names)
    padded = -(-n // batch_size) * batch_size
    ids = clips.ids(list(clip_names))
    ids = np.concatenate([ids, np.full(padded - n, ids[-1], ids.dtype)])
    index = np.concatenate([np.arange(n), np.full(padded - n, -1)]).astype(np.int64)
    no_seed = tf.zeros((2, 2), tf.int64)

    def process(k):
        out = _process_clip(clips, tf.gather(ids, k), no_seed, False, geometry)
        out["index"] = tf.gather(index, k)
        return out

    input_pipeline.hide_gpus_from_tf()
    ds = tf.data.Dataset.range(padded).map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return input_pipeline.BatchIterator(ds)
