"""Pretraining-input augmentation: sensor time crop and rotation (TF ops against NumPy), options, pipeline."""
import numpy as np
import pytest
import tensorflow as tf

from mumae_jax.data import input_pipeline as ip
from mumae_jax.data import sensor_ops, sensor_ops_tf
from mumae_jax.data.geometry import ClipGeometry

RNG = np.random.default_rng(0)
VALUES = RNG.normal(size=(90, 3)) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 9.8, 1.0])


def test_time_crop_is_a_contiguous_window_of_the_allowed_length():
    lengths = set()
    for s in range(12):
        out = sensor_ops_tf.augment_sensor(VALUES, [s, 1], time_crop=0.6).numpy()
        n = out.shape[0]
        lengths.add(n)
        assert round(0.6 * 90) - 1 <= n <= 90
        starts = [k for k in range(90 - n + 1) if np.array_equal(VALUES[k:k + n], out)]
        assert len(starts) == 1
    assert len(lengths) > 3  # the length is random, not fixed


def test_rotation_is_a_proper_rotation_applied_to_every_sample():
    out = sensor_ops_tf.augment_sensor(VALUES, [7, 7], rotation_deg=40.0).numpy()
    assert out.shape == VALUES.shape
    # R = out⁺ solve: least squares recovers the matrix, which must be orthonormal with det +1
    R = np.linalg.lstsq(VALUES, out, rcond=None)[0].T
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    angle = np.degrees(np.arccos((np.trace(R) - 1) / 2))
    assert 0.0 < angle <= 40.0 + 1e-4
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(VALUES, axis=1), rtol=1e-6)
    # off: identity; and a pure function of the seed
    np.testing.assert_array_equal(sensor_ops_tf.augment_sensor(VALUES, [7, 7]).numpy(), VALUES)
    np.testing.assert_array_equal(sensor_ops_tf.augment_sensor(VALUES, [7, 7], rotation_deg=40.0).numpy(), out)
    assert not np.allclose(sensor_ops_tf.augment_sensor(VALUES, [8, 7], rotation_deg=40.0).numpy(), out)


def test_augmented_then_preprocessed_equals_numpy_preprocessing_of_the_window():
    aug = {"sensor_time_crop": 0.5, "sensor_rotation_deg": 0.0, "rotate_sensors": ()}
    seed = tf.constant([3, 4], tf.int64)
    got = ip.augment_sensors_tf({"acc": tf.constant(VALUES)}, seed, aug, 32)["acc"].numpy()
    window = sensor_ops_tf.augment_sensor(VALUES, tf.random.experimental.stateless_split(seed, 1)[0],
                                          time_crop=0.5).numpy()
    np.testing.assert_allclose(got, sensor_ops.preprocess_sensor(window, 32), atol=1e-6)


@pytest.mark.parametrize("bad,match", [(dict(video_crop="random"), "video_crop"), (dict(sensor_time_crop=0.0), "time_crop"),
                                       (dict(sensor_rotation_deg=-1), "rotation"), (dict(flip=True), "unknown")])
def test_bad_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ip.augment_options(bad)


def test_pipeline_with_augmentation_is_deterministic_and_differs_from_plain():
    cfg = dict(name="synthetic", split="pretrain_train", num_subjects=2, num_sessions=1, num_cameras=2, seed=0)
    geo = ClipGeometry(num_frames=2, frame_stride=2, image_size=16, sensor_length=32,
                       sensors=("acc_phone", "orientation"))
    aug = dict(video_crop="multiscale", sensor_time_crop=0.7, sensor_rotation_deg=30.0)

    def first(augment):
        it, _ = ip.build_pretrain_input(cfg, geo, global_batch_size=2, seed=0, augment=augment)
        try:
            return next(it)
        finally:
            it.close()

    plain, a, b = first(None), first(aug), first(aug)
    for k in plain:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].shape == plain[k].shape
    np.testing.assert_array_equal(a["label"], plain["label"])
    for k in ("video", "acc_phone", "orientation"):
        assert not np.allclose(a[k], plain[k]), k
