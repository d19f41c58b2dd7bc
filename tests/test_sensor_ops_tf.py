"""TF sensor preprocessing (`mumae_jax.data.sensor_ops_tf`) == the numpy reference `sensor_ops`."""
import numpy as np
import pytest
import tensorflow as tf

from mumae_jax.data import sensor_ops
from mumae_jax.data import sensor_ops_tf as S


def _random_values(rng, length, constant_axis=None):
    v = rng.normal(size=(length, 3)) * rng.uniform(0.1, 20.0, size=3) + rng.normal(size=3) * 5
    if constant_axis is not None:
        v[:, constant_axis] = 9.81
    return v


@pytest.mark.parametrize("length", [1, 2, 50, 127, 128, 129, 300, 1000])
def test_preprocess_equals_numpy(length):
    rng = np.random.default_rng(length)
    for dtype in (np.float64, np.float32):
        v = _random_values(rng, length, constant_axis=1).astype(dtype)
        want = sensor_ops.preprocess_sensor(v, 128)
        got = S.preprocess_sensor(v, 128).numpy()
        assert got.dtype == np.float32 and got.shape == (128, 3)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[:, 1], 0.0)  # constant axis → 0, not NaN


def test_minmax_equals_numpy_and_range():
    rng = np.random.default_rng(0)
    v = _random_values(rng, 300, constant_axis=2)
    got = S.minmax_normalize(v).numpy()
    np.testing.assert_array_equal(got, sensor_ops.minmax_normalize(v))
    assert got[:, :2].min() == 0.0 and got[:, :2].max() == 1.0
    assert np.all(got[:, 2] == 0.0)
    ints = rng.integers(-100, 100, size=(50, 3)).astype(np.int16)
    np.testing.assert_array_equal(S.minmax_normalize(ints).numpy(), sensor_ops.minmax_normalize(ints))


def _np_floor_linspace(start, stops, num):
    """Row k = floor(np.linspace(start, stops[k], num)), vectorised with numpy's own float64 recipe."""
    i = np.arange(num)
    step = (stops - start).astype(np.float64) / max(num - 1, 1)
    y = i[None, :] * step[:, None] + start
    if num > 1:
        y[:, -1] = stops
    return np.floor(y).astype(np.int64)


def test_vectorised_reference_is_numpy_linspace():
    stops = np.arange(0, 400)
    for start in (0, 3):
        for num in (1, 8, 15, 128):
            want = np.stack([np.floor(np.linspace(start, start + e, num)) for e in stops]).astype(np.int64)
            np.testing.assert_array_equal(_np_floor_linspace(start, start + stops, num), want)


@pytest.mark.parametrize("num", [1, 2, 8, 15, 16, 23, 127, 128, 256])
def test_linspace_floor_equals_numpy_static_and_dynamic_num(num):
    """num 15 and 23 have many stops where numpy's float floor != the exact integer floor; graph mode
    with a static num must still agree with numpy (grappler must not rewrite the division)."""
    stops = np.arange(0, 3000, dtype=np.int32)
    for start in (0, 3):
        want = _np_floor_linspace(start, start + stops, num)
        static = tf.function(lambda e: tf.map_fn(lambda x: S.linspace_floor(start, x, num), e,
                                                 fn_output_signature=tf.int32))
        dynamic = tf.function(lambda e, k: tf.map_fn(lambda x: S.linspace_floor(start, x, k), e,
                                                     fn_output_signature=tf.int32))
        np.testing.assert_array_equal(static(start + stops).numpy(), want)
        np.testing.assert_array_equal(dynamic(start + stops, tf.constant(num)).numpy(), want)
        ds = tf.data.Dataset.from_tensor_slices(start + stops).map(lambda x: S.linspace_floor(start, x, num))
        np.testing.assert_array_equal(next(iter(ds.batch(len(stops)))).numpy(), want)
    for stop in (0, 7, 49, 122, 299):  # eager
        want = _np_floor_linspace(0, np.array([stop]), num)[0]
        np.testing.assert_array_equal(S.linspace_floor(0, stop, num).numpy(), want)


def test_resample_indices_equal_numpy_reference():
    for length in (1, 2, 49, 50, 127, 128, 129, 300, 997):
        for n in (1, 7, 128, 256):
            np.testing.assert_array_equal(S.resample_indices(length, n).numpy(),
                                          sensor_ops.resample_indices(length, n))
    fn = tf.function(lambda k: S.resample_indices(k, 128), input_signature=[tf.TensorSpec([], tf.int32)])
    for length in (1, 50, 122, 300, 1000):
        np.testing.assert_array_equal(fn(length).numpy(), sensor_ops.resample_indices(length, 128))


def test_resample_short_and_long():
    v = np.arange(50 * 2, dtype=np.float32).reshape(50, 2)
    out = S.resample(v, 128).numpy()
    assert out.shape == (128, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, v[np.floor(np.linspace(0, 49, 128)).astype(int)])
    v = np.arange(300 * 3, dtype=np.int32).reshape(300, 3)
    np.testing.assert_array_equal(S.resample(v, 128).numpy(), v[np.floor(np.linspace(0, 299, 128)).astype(int)])


def test_tf_data_map_equals_eager_dynamic_length():
    rng = np.random.default_rng(1)
    arrays = [_random_values(rng, n, constant_axis=(0 if n == 50 else None)) for n in (50, 300, 77, 128)]
    ds = tf.data.Dataset.from_generator(lambda: iter(arrays),
                                        output_signature=tf.TensorSpec([None, 3], tf.float64))
    mapped = [x.numpy() for x in ds.map(lambda v: S.preprocess_sensor(v, 128))]
    for a, got in zip(arrays, mapped):
        np.testing.assert_array_equal(got, S.preprocess_sensor(a, 128).numpy())
        np.testing.assert_array_equal(got, sensor_ops.preprocess_sensor(a, 128))


def test_invalid_input_eager():
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        S.preprocess_sensor(np.array([[0.0, 1.0, np.nan], [1.0, 2.0, 3.0]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        S.minmax_normalize(np.array([[0.0, np.inf, 1.0]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        S.preprocess_sensor(np.zeros((0, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
        S.resample(np.zeros((0, 3)))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        S.preprocess_sensor(np.zeros((5,)))
    with pytest.raises(TypeError):
        S.preprocess_sensor(np.array([["a", "b"]]))


def test_invalid_input_in_tf_data():
    bad = [np.array([[0.0, 1.0], [np.nan, 2.0]]), np.zeros((0, 2))]
    for arr, msg in zip(bad, ["NaN or infinite", "empty"]):
        ds = tf.data.Dataset.from_generator(lambda a=arr: iter([a]),
                                            output_signature=tf.TensorSpec([None, 2], tf.float64))
        with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
            list(ds.map(S.preprocess_sensor))
