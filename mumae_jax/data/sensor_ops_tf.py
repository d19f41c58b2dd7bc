"""TensorFlow versions of the official sensor preprocessing (spec §1.4 step 2-3, §6 item 9), for tf.data.

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
