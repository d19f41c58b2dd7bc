"""TensorFlow video preprocessing ops for tf.data (docs/official_code.md §1.4 pretraining, §1.5 one-shot, §6 item 17).

Conventions shared by every op:
- A clip is `frames [T, H, W, 3]`, uint8 or float, pixel values on the 0..255 scale; T, H and W may be
  dynamic. Spatial ops keep the dtype (uint8 results of a resize are rounded and saturated, as PIL
  does); `to_unit_range` / `imagenet_normalize` produce float32.
- Randomness is stateless: every random op takes an explicit `seed`, an int32/int64 tensor of shape [2],
  and is a pure function of its inputs (`tf.random.stateless_*`; several draws use
  `tf.random.experimental.stateless_split`). The ops give identical results eagerly and inside
  `tf.data.Dataset.map` / `tf.function`.
- Frame indices are int32; gather them with `sample_frames`.

Pipelines: `pretrain_clip_transform` (GroupMultiScaleCrop → [0,1] → ImageNet norm) and
`oneshot_clip_transform` (short side 256 → optional clip flip → centre crop 224 → [0,1], no ImageNet
norm). Resizing uses `tf.image.resize(bilinear, antialias=True)`, the closest TF match to PIL's BILINEAR
(which low-pass filters when shrinking); it is not bit-identical to PIL.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from mumae_jax.data.sensor_ops_tf import linspace_floor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SCALES = (1.0, 0.875, 0.75, 0.66)

# Fixed crop positions of GroupMultiScaleCrop, in units of (w_step, h_step) = ((W-cw)//4, (H-ch)//4):
# 4 corners + centre, then (more_fix_crop) left/right centre, lower/upper centre and 4 quarter points.
_FIX_POSITIONS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2))
_MORE_FIX_POSITIONS = ((0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))


def _seed(seed) -> tf.Tensor:
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return seed


def _split(seed, num: int):
    return tf.unstack(tf.random.experimental.stateless_split(_seed(seed), num), num=num)


def _randint(seed, minval, maxval) -> tf.Tensor:
    """Uniform scalar int32 in [minval, maxval] (both inclusive)."""
    return tf.random.stateless_uniform([], seed=_seed(seed), minval=tf.cast(minval, tf.int32),
                                       maxval=tf.cast(maxval, tf.int32) + 1, dtype=tf.int32)


def _frames(frames) -> tf.Tensor:
    frames = tf.convert_to_tensor(frames)
    frames.shape.assert_has_rank(4)
    return frames


def _restore_dtype(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    if dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
    if dtype.is_integer:
        return tf.cast(tf.round(x), dtype)
    return tf.cast(x, dtype)


def _resize(frames: tf.Tensor, height, width, antialias: bool) -> tf.Tensor:
    out = tf.image.resize(frames, tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)]),
                          method="bilinear", antialias=antialias)
    return _restore_dtype(out, frames.dtype)


def sample_frames(frames, indices) -> tf.Tensor:
    """frames [N, H, W, C], indices int [T] → frames [T, H, W, C]."""
    return tf.gather(frames, indices, axis=0)


# ----------------------------------------------------------------------------------------------------
# Temporal sampling
# ----------------------------------------------------------------------------------------------------

def pretrain_frame_indices(num_frames_in_video, num_frames: int = 16, stride: int = 2, *, seed,
                           pad_mode: str = "official") -> tf.Tensor:
    """Pretraining sampling (docs/official_code.md §1.4; TSN with 1 segment, skip_length = num_frames * stride) → int32 [num_frames].

    start ~ U{0 .. max(0, n - num_frames * stride)}; index i is start + stride * i while it is in range.
    pad_mode="official" (default) reproduces the official loader exactly: the index only advances while
    the next index is <= n - 2 (its 1-based `offset + new_step < duration` test), then the last index
    reached repeats; e.g. n=20 → 0, 2, ..., 18, 18, ...; n=19 → 0, ..., 16, 16, ... (frame n-1 is only
    ever used as a start). pad_mode="clip" is `min(start + stride * i, n - 1)` (the simpler rule of
    `input_pipeline.frame_indices`). n must be >= 1 (asserted).
    """
    n = tf.cast(num_frames_in_video, tf.int32)
    check = tf.debugging.assert_positive(n, message="video has no frames (num_frames_in_video == 0)")
    with tf.control_dependencies([check]):
        n = tf.identity(n)
    start = _randint(seed, 0, tf.maximum(0, n - num_frames * stride))
    i = tf.range(num_frames, dtype=tf.int32)
    if pad_mode == "official":
        last = tf.clip_by_value((n - 2 - start) // stride, 0, num_frames - 1)
        return start + stride * tf.minimum(i, last)
    if pad_mode == "clip":
        return tf.minimum(start + stride * i, n - 1)
    raise ValueError(f"unknown pad_mode {pad_mode!r} (expected 'official' or 'clip')")


def episode_frame_window(n, num_frames: int = 8, seed=None):
    """(start, end) int32 scalars of the TRX-style window used by `episode_frame_indices`."""
    n = tf.cast(n, tf.int32)
    pad = tf.maximum(0, tf.minimum(5, (n - num_frames) // 2))  # = int(min(5, (n - num_frames) / 2)) when >= 0
    if seed is None:
        start, end = pad // 2, n - 1 - pad // 2
    else:
        s_start, s_end = _split(seed, 2)
        start = _randint(s_start, 0, pad)
        end = _randint(s_end, n - 1 - pad, n - 1)
    return start, end


def episode_frame_indices(n, num_frames: int = 8, seed=None) -> tf.Tensor:
    """One-shot TRX-style linspace sampling (docs/official_code.md §1.5) → int32 [num_frames].

    pad = int(min(5, (n - num_frames) / 2)). If pad < 1 (this covers n == num_frames, where it takes every
    frame): start = 0, end = n - 1. Otherwise with a seed (training, and the official test time, which
    is random too): start ~ U{0..pad}, end ~ U{n-1-pad..n-1}; with seed=None (our deterministic
    evaluation, not in the official code): the centre of those ranges, start = pad // 2,
    end = n - 1 - pad // 2. Indices are floor(linspace(start, end, num_frames)).
    n < num_frames also works: pad < 1 and linspace(0, n - 1, num_frames) repeats frames. n >= 1 (asserted).
    """
    n = tf.cast(n, tf.int32)
    check = tf.debugging.assert_positive(n, message="video has no frames (n == 0)")
    with tf.control_dependencies([check]):
        n = tf.identity(n)
    start, end = episode_frame_window(n, num_frames, seed)
    return linspace_floor(start, end, num_frames)


# ----------------------------------------------------------------------------------------------------
# Pretraining spatial augmentation: GroupMultiScaleCrop
# ----------------------------------------------------------------------------------------------------

def multiscale_crop_candidates(height, width, output_size: int = 224,
                               scales: Sequence[float] = DEFAULT_SCALES, max_distort: int = 1):
    """Candidate crop sizes → (crop_w int32 [P], crop_h int32 [P]) in the official pair order.

    base = min(H, W); sizes = int(base * s) per scale, each snapped to output_size when within 3 px
    (|size - output_size| < 3, as TSN/VideoMAE's GroupMultiScaleCrop; docs/official_code.md §1.4 leaves it out).
    Pairs (w = sizes[j], h = sizes[i]) for i (outer) and j (inner) with |i - j| <= max_distort.
    """
    base = tf.minimum(tf.cast(height, tf.int32), tf.cast(width, tf.int32))
    sizes = tf.cast(tf.floor(tf.cast(base, tf.float64) * tf.constant(scales, tf.float64)), tf.int32)
    sizes = tf.where(tf.abs(sizes - output_size) < 3, output_size, sizes)
    pairs = [(j, i) for i in range(len(scales)) for j in range(len(scales)) if abs(i - j) <= max_distort]
    return (tf.gather(sizes, [p[0] for p in pairs]), tf.gather(sizes, [p[1] for p in pairs]))


def multiscale_crop_params(height, width, seed, output_size: int = 224,
                           scales: Sequence[float] = DEFAULT_SCALES, max_distort: int = 1,
                           more_fix_crop: bool = True) -> dict:
    """Draw one GroupMultiScaleCrop crop for an H×W clip → dict of int32 scalars.

    Keys: crop_w, crop_h, offset_x, offset_y, pair_index (into `multiscale_crop_candidates`),
    position_index (into the 5 or 13 fixed positions). The (w, h) pair is uniform over the candidates;
    the offset is uniform over the fixed positions (k_x * ((W - crop_w) // 4), k_y * ((H - crop_h) // 4)).
    If a snapped size exceeds the frame (only when min(H, W) < output_size + 3) it is clamped to the
    frame (PIL would zero-pad instead).
    """
    cand_w, cand_h = multiscale_crop_candidates(height, width, output_size, scales, max_distort)
    positions = _FIX_POSITIONS + (_MORE_FIX_POSITIONS if more_fix_crop else ())
    s_pair, s_pos = _split(seed, 2)
    h = tf.cast(height, tf.int32)
    w = tf.cast(width, tf.int32)
    pair_index = _randint(s_pair, 0, tf.shape(cand_w)[0] - 1)
    crop_w = tf.minimum(cand_w[pair_index], w)
    crop_h = tf.minimum(cand_h[pair_index], h)
    position_index = _randint(s_pos, 0, len(positions) - 1)
    kx = tf.gather(tf.constant([p[0] for p in positions], tf.int32), position_index)
    ky = tf.gather(tf.constant([p[1] for p in positions], tf.int32), position_index)
    return dict(crop_w=crop_w, crop_h=crop_h, offset_x=kx * ((w - crop_w) // 4),
                offset_y=ky * ((h - crop_h) // 4), pair_index=pair_index, position_index=position_index)


def multiscale_crop(frames, seed, output_size: int = 224, scales: Sequence[float] = DEFAULT_SCALES,
                    max_distort: int = 1, more_fix_crop: bool = True, antialias: bool = True):
    """GroupMultiScaleCrop of one clip: frames [T, H, W, 3] → ([T, S, S, 3] same dtype, params).

    One crop (see `multiscale_crop_params`) for every frame, then bilinear resize to S = output_size.
    """
    frames = _frames(frames)
    shape = tf.shape(frames)
    p = multiscale_crop_params(shape[1], shape[2], seed, output_size, scales, max_distort, more_fix_crop)
    crop = frames[:, p["offset_y"]:p["offset_y"] + p["crop_h"], p["offset_x"]:p["offset_x"] + p["crop_w"], :]
    out = _resize(crop, output_size, output_size, antialias)
    return tf.ensure_shape(out, [frames.shape[0], output_size, output_size, frames.shape[3]]), p


# ----------------------------------------------------------------------------------------------------
# One-shot spatial ops
# ----------------------------------------------------------------------------------------------------

def resize_short_side(frames, size: int = 256, antialias: bool = True) -> tf.Tensor:
    """Bilinear resize so the short side is `size`: [T, H, W, C] → [T, H', W', C], same dtype.

    The long side is int(size * long / short) (videotransforms' rule; truncation). Bilinear is what
    the official Resize really does (its flag swap, docs/official_code.md §6 item 17).
    """
    frames = _frames(frames)
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    new_h = tf.where(h <= w, size, (size * h) // w)
    new_w = tf.where(h <= w, (size * w) // h, size)
    return _resize(frames, new_h, new_w, antialias)


def center_crop(frames, size: int = 224) -> tf.Tensor:
    """Centre crop [T, H, W, C] → [T, size, size, C] (H, W >= size, asserted).

    Offsets are round((H - size) / 2) and round((W - size) / 2) with round-half-to-even, which is what
    Python's `round` in the official CenterCrop gives for odd differences.
    """
    frames = _frames(frames)
    shape = tf.shape(frames)
    check = tf.debugging.assert_greater_equal(
        tf.minimum(shape[1], shape[2]), size, message=f"frame smaller than the centre crop size {size}")
    with tf.control_dependencies([check]):
        y = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2.0), tf.int32)
        x = tf.cast(tf.round(tf.cast(shape[2] - size, tf.float64) / 2.0), tf.int32)
    out = frames[:, y:y + size, x:x + size, :]
    return tf.ensure_shape(out, [frames.shape[0], size, size, frames.shape[3]])


def random_flip_clip(frames, seed) -> tf.Tensor:
    """Flip the whole clip left-right with probability 0.5 (all frames or none): [T, H, W, C] → same."""
    frames = _frames(frames)
    flip = tf.random.stateless_uniform([], seed=_seed(seed)) < 0.5
    return tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def to_unit_range(frames) -> tf.Tensor:
    """0..255-scale pixels (any dtype) → float32 in [0, 1] (x / 255), same shape."""
    return tf.cast(frames, tf.float32) * (1.0 / 255.0)


def imagenet_normalize(frames) -> tf.Tensor:
    """0..255-scale pixels [..., 3] → float32 (x / 255 - mean) / std with the ImageNet mean/std."""
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (to_unit_range(frames) - mean) / std


# ----------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------

def pretrain_clip_transform(frames, seed, output_size: int = 224) -> tf.Tensor:
    """Pretraining clip (docs/official_code.md §1.4): frames [T, H, W, 3] → float32 [T, S, S, 3].

    GroupMultiScaleCrop(S, scales (1, .875, .75, .66), max_distort 1, 13 positions), then [0, 1] and
    ImageNet mean/std. No flip, no colour jitter.
    """
    out, _ = multiscale_crop(frames, seed, output_size)
    return imagenet_normalize(out)


def oneshot_clip_transform(frames, flip_seed: Optional[tf.Tensor] = None, resize_to: int = 256,
                           crop_size: int = 224) -> tf.Tensor:
    """One-shot clip (docs/official_code.md §1.5): frames [T, H, W, 3] → float32 [T, crop, crop, 3] in [0, 1].

    Short side → 256 (bilinear), whole-clip horizontal flip with p=0.5 when `flip_seed` is given
    (training), centre crop 224, x / 255. No ImageNet normalisation.
    """
    out = resize_short_side(frames, resize_to)
    if flip_seed is not None:
        out = random_flip_clip(out, flip_seed)
    return to_unit_range(center_crop(out, crop_size))
