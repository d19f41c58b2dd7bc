"""TensorFlow versions of the official sensor preprocessing (docs/official_code.md §1.4 step 2-3, §6 item 9), for tf.data.

Numerically equal to the numpy reference `mumae_jax.data.sensor_ops` (same float64 arithmetic, then
float32), including its one deviation from the official code: an axis that is constant over the file
maps to 0 instead of 0/0 = NaN.

All ops run eagerly and inside `tf.data.Dataset.map` / `tf.function`, with dynamic L. Invalid input
(empty, NaN/inf) raises `tf.errors.InvalidArgumentError` from a `tf.debugging` assertion (when
iterating, inside tf.data); a wrong rank raises `ValueError` (static) or `InvalidArgumentError`.
"""
from __future__ import annotations

import tensorflow as tf

DEFAULT_LENGTH = 128


def linspace_floor(start, stop, num) -> tf.Tensor:
    """`floor(numpy.linspace(start, stop, num))` as int32 [num], bit-for-bit numpy's float64 recipe.

    numpy computes `i * ((stop - start) / (num - 1)) + start` in float64 and then sets the last entry
    to `stop` exactly; this does the same, so flooring agrees with numpy even where numpy's float floor
    differs from the exact rational floor (e.g. num=15, stop=122, i=7 gives 60, not 61).
    `num` may be a Python int or a scalar tensor (>= 1).
    """
    start = tf.cast(start, tf.float64)
    stop = tf.cast(stop, tf.float64)
    num = tf.cast(num, tf.int32)
    i = tf.range(num)
    # DivNoNan, not `/`: grappler rewrites division by a constant into multiplication by its
    # reciprocal, which changes the rounding (and the floor) when `num` is static. Denominator >= 1.
    step = tf.math.divide_no_nan(stop - start, tf.cast(tf.maximum(num - 1, 1), tf.float64))
    y = tf.cast(i, tf.float64) * step + start
    y = tf.where(tf.logical_and(tf.equal(i, num - 1), num > 1), stop, y)
    return tf.cast(tf.floor(y), tf.int32)


def _checked_values(values) -> tf.Tensor:
    """values [L, C] (any real dtype) → float64 [L, C] guarded by runtime assertions."""
    v = tf.convert_to_tensor(values)
    if not (v.dtype.is_floating or v.dtype.is_integer) or v.dtype == tf.bool:
        raise TypeError(f"sensor values must be real numbers, got dtype {v.dtype.name}")
    tf.debugging.assert_rank(v, 2, message="sensor values must have shape [L, C]")
    v = tf.cast(v, tf.float64)
    shape = tf.shape(v)
    checks = [
        tf.debugging.assert_positive(shape[0], message="sensor values are empty (L == 0)"),
        tf.debugging.assert_positive(shape[1], message="sensor values are empty (C == 0)"),
    ]
    with tf.control_dependencies(checks):
        v = tf.identity(v)
    return tf.debugging.assert_all_finite(v, "sensor values contain NaN or infinite entries")


def minmax_normalize(values) -> tf.Tensor:
    """Per-axis min-max normalisation of one file: values [L, C] → float32 [L, C] in [0, 1].

    A constant axis (max == min) becomes all zeros (the official code gives NaN there).
    """
    v = _checked_values(values)
    lo = tf.reduce_min(v, axis=0)
    span = tf.reduce_max(v, axis=0) - lo
    ok = span > 0
    out = tf.where(ok, (v - lo) / tf.where(ok, span, tf.ones_like(span)), tf.zeros_like(v))
    return tf.cast(out, tf.float32)


def resample_indices(length, n: int = DEFAULT_LENGTH) -> tf.Tensor:
    """`floor(linspace(0, length - 1, n))` as int32 [n]; for length < n samples repeat.

    `length` may be a tensor (dynamic); it must be >= 1 (asserted).
    """
    if isinstance(n, int) and n < 1:
        raise ValueError(f"number of output samples must be >= 1, got {n}")
    length = tf.cast(length, tf.int32)
    check = tf.debugging.assert_positive(length, message="cannot resample an empty sequence (length == 0)")
    with tf.control_dependencies([check]):
        length = tf.identity(length)
    return linspace_floor(0, length - 1, n)


def resample(values, n: int = DEFAULT_LENGTH) -> tf.Tensor:
    """values [L, C] → [n, C] (same dtype) gathered at `floor(linspace(0, L - 1, n))` (also L < n)."""
    values = tf.convert_to_tensor(values)
    tf.debugging.assert_rank(values, 2, message="sensor values must have shape [L, C]")
    return tf.gather(values, resample_indices(tf.shape(values)[0], n), axis=0)


def preprocess_sensor(values, n: int = DEFAULT_LENGTH) -> tf.Tensor:
    """values [L, C] → float32 [n, C]: `minmax_normalize` then `resample` (the official 2 steps)."""
    return resample(minmax_normalize(values), n)


def random_rotation(seed, max_deg: float) -> tf.Tensor:
    """A random 3×3 rotation (float32): a uniformly random axis, an angle uniform in [-max_deg, max_deg]
    degrees (Rodrigues' formula). `seed`: int [2] (stateless)."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    axis = tf.random.stateless_normal([3], seed=s1)
    axis = axis / tf.maximum(tf.norm(axis), 1e-6)
    angle = tf.random.stateless_uniform([], seed=s2, minval=-1.0, maxval=1.0) * (max_deg * 3.141592653589793 / 180.0)
    x, y, z = tf.unstack(axis)
    k = tf.stack([tf.stack([0.0, -z, y]), tf.stack([z, 0.0, -x]), tf.stack([-y, x, 0.0])])
    return tf.eye(3) + tf.sin(angle) * k + (1.0 - tf.cos(angle)) * (k @ k)


def augment_sensor(values, seed, *, time_crop: float = 1.0, rotation_deg: float = 0.0) -> tf.Tensor:
    """Training-time augmentation of one raw recording values [L, 3] → [L', 3] float64, applied before
    `preprocess_sensor` (min-max normalisation would undo any scaling or offset, so there is none):

    - time_crop < 1: keep a random contiguous window of round(f·L) samples, f uniform in [time_crop, 1]
      (at least 2 samples): the resampling then stretches it to the full length, so the motion appears
      at another speed and phase;
    - rotation_deg > 0: rotate the three axes by `random_rotation(max_deg=rotation_deg)`, a device worn or
      held at another angle (meaningful for vector sensors: accelerometers, gyroscopes).
    `seed`: int [2] (stateless); the result is a pure function of (values, seed).
    """
    v = _checked_values(values)
    s_len, s_off, s_rot = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
    if time_crop < 1.0:
        n = tf.shape(v)[0]
        frac = tf.random.stateless_uniform([], seed=s_len, minval=time_crop, maxval=1.0)
        keep = tf.clip_by_value(tf.cast(tf.round(frac * tf.cast(n, tf.float32)), tf.int32), tf.minimum(2, n), n)
        start = tf.random.stateless_uniform([], seed=s_off, minval=0, maxval=n - keep + 1, dtype=tf.int32)
        v = v[start:start + keep]
    if rotation_deg > 0.0:
        v = v @ tf.transpose(tf.cast(random_rotation(s_rot, rotation_deg), tf.float64))
    return v
