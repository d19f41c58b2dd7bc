"""Tests of the tf.data pretraining input: shapes, normalisation, determinism, resumption, sharding, splits."""
import dataclasses

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from mumae_jax.data import input_pipeline as ip  # noqa: E402
from mumae_jax.data import sensor_ops, sources, splits, synthetic  # noqa: E402
from mumae_jax.data.geometry import ClipGeometry  # noqa: E402

SENSORS = ("acc_watch", "gyro")
GEOM = ClipGeometry(num_frames=4, frame_stride=2, image_size=32, sensor_length=16, sensors=SENSORS)
BASE_IDS = {synthetic.CLASS_TO_ID[c] for c in synthetic.BASE_CLASSES}


def cfg(**kw):
    c = dict(name="synthetic", split="pretrain_train", num_subjects=2, num_sessions=1, num_cameras=2, seed=0,
             shuffle=True)
    c.update(kw)
    return c


def take(n, data_cfg=None, geometry=GEOM, **kw):
    args = dict(global_batch_size=4, seed=0)
    args.update(kw)
    it, size = ip.build_pretrain_input(data_cfg or cfg(), geometry, **args)
    batches = [next(it) for _ in range(n)]
    it.close()
    return batches, size


@pytest.fixture(scope="module")
def stream():
    """The first 3 batches of the reference stream (global batch 4, one process)."""
    return take(3)


def test_shapes_dtypes_and_size(stream):
    batches, size = stream
    assert size == 56  # hashed ~80% of 18 pretraining classes (23 base - 5 validation) × 2 × 1 × 2 = 72
    b = batches[0]
    assert set(b) == {"video", "acc_watch", "gyro", "label", "index"}
    assert b["video"].shape == (4, 4, 32, 32, 3) and b["video"].dtype == np.float32
    for s in SENSORS:
        assert b[s].shape == (4, 16, 3) and b[s].dtype == np.float32
        assert b[s].min() >= 0.0 and b[s].max() <= 1.0
    assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    assert b["index"].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([x["index"] for x in batches]), np.arange(12))
    assert set(np.concatenate([x["label"] for x in batches]).tolist()) <= BASE_IDS


def test_imagenet_normalisation(stream):
    v = stream[0][0]["video"]
    raw = v * np.array(ip.IMAGENET_STD, np.float32) + np.array(ip.IMAGENET_MEAN, np.float32)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    np.testing.assert_allclose(raw * 255, np.round(raw * 255), atol=2e-3)  # uint8 frames / 255
    assert raw.std() > 0.05  # not a blank image
    assert ip.IMAGENET_MEAN == (0.485, 0.456, 0.406) and ip.IMAGENET_STD == (0.229, 0.224, 0.225)


def test_batch_matches_direct_generation(stream):
    """Example i is clip (permutation of epoch i // N)[i % N] with a frame offset seeded by (seed, i)."""
    b = stream[0][1]
    d, clips = ip.make_dataset(cfg())
    for j, i in enumerate(b["index"]):
        clip = clips[ip.example_clip_index(int(i), len(clips), 0, True)]
        idx = ip.frame_indices(d.num_frames(clip), 4, 2, np.random.default_rng([0, int(i), 0xF4A3]))
        frames = d.render(clip, idx, 32).astype(np.float32) / 255
        video = (frames - np.array(ip.IMAGENET_MEAN, np.float32)) / np.array(ip.IMAGENET_STD, np.float32)
        np.testing.assert_allclose(b["video"][j], video, atol=1e-6)
        gyro = sensor_ops.preprocess_sensor(d.sensors(clip)["gyro"][1], 16)
        np.testing.assert_array_equal(b["gyro"][j], gyro)
        assert b["label"][j] == clip.label


def test_deterministic_across_builds(stream):
    again, _ = take(2)
    for a, b in zip(stream[0][:2], again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other, _ = take(1, seed=1)
    assert not np.array_equal(other[0]["video"], stream[0][0]["video"])


def test_resume_from_step(stream):
    resumed, _ = take(2, start_step=1)
    for a, b in zip(stream[0][1:3], resumed):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_processes_partition_the_global_batch(stream):
    p0, _ = take(2, process_index=0, process_count=2)
    p1, _ = take(2, process_index=1, process_count=2)
    for step in range(2):
        assert p0[step]["video"].shape[0] == 2
        for k in stream[0][step]:
            np.testing.assert_array_equal(np.concatenate([p0[step][k], p1[step][k]]), stream[0][step][k])


def test_epochs_cover_the_split_once_and_reshuffle():
    n = 74
    e0 = [ip.example_clip_index(i, n, 0, True) for i in range(n)]
    e1 = [ip.example_clip_index(i, n, 0, True) for i in range(n, 2 * n)]
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n)) and e0 != e1
    assert [ip.example_clip_index(i, n, 0, False) for i in range(2 * n)] == list(range(n)) * 2


def test_unshuffled_stream_follows_split_order():
    batches, _ = take(1, data_cfg=cfg(shuffle=False))
    _, clips = ip.make_dataset(cfg())
    assert batches[0]["label"].tolist() == [c.label for c in clips[:4]]


def test_frame_sampling():
    r = np.random.default_rng(0)
    # official rule: step while the next index is <= n - 2, then repeat the last index reached
    np.testing.assert_array_equal(ip.frame_indices(5, 4, 2, r), [0, 2, 2, 2])
    np.testing.assert_array_equal(ip.frame_indices(20, 16, 2, r), list(range(0, 20, 2)) + [18] * 6)
    np.testing.assert_array_equal(ip.frame_indices(19, 16, 2, r), list(range(0, 18, 2)) + [16] * 7)
    for _ in range(50):
        idx = ip.frame_indices(100, 16, 2, r)
        assert 0 <= idx[0] <= 100 - 32 and np.all(np.diff(idx) == 2)
    starts = {int(ip.frame_indices(40, 4, 2, np.random.default_rng(k))[0]) for k in range(200)}
    assert starts == set(range(0, 33))


def test_pretrain_splits():
    """Synthetic pretraining follows splits.pretrain_split: base classes minus the one-shot validation
    classes, a hashed 80/20 split; the validation classes come back only when asked for."""
    d = synthetic.SyntheticMMAct(seed=0, num_subjects=2, num_sessions=1, num_cameras=2)
    train, val = ip.split_clips(d, "pretrain_train"), ip.split_clips(d, "pretrain_val")
    cs = splits.mumae_split3_with_validation(5, 0)
    base = [c for c in ip.split_clips(d, "base") if c.action in cs.base]
    assert not set(train) & set(val) and set(train) | set(val) == set(base)
    assert {c.action for c in train + val} == set(cs.base)  # no validation or novel class
    assert 0.7 < len(train) / len(base) < 0.9
    assert ip.split_clips(d, "pretrain_train") == train  # seeded, fixed
    assert train == splits.pretrain_split(d.clips(), cs, "train")  # the MMAct rule, not a copy of it
    with_val = ip.split_clips(d, "pretrain_train", {"include_validation_classes": True})
    assert {c.action for c in with_val} == set(synthetic.BASE_CLASSES) and set(train) < set(with_val)
    assert {c.action for c in ip.split_clips(d, "novel")} == set(synthetic.NOVEL_CLASSES)
    assert len(ip.split_clips(d, "all")) == len(ip.split_clips(d, "base")) + len(ip.split_clips(d, "novel"))
    with pytest.raises(ValueError):
        ip.split_clips(d, "test")


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="unsupported dataset name 'kinetics'; supported: synthetic, mmact"):
        sources.get_source(cfg(name="kinetics"))
    with pytest.raises(ValueError, match="reads the synthetic data; read 'mmact' through"):
        ip.build_pretrain_input(cfg(name="mmact"), GEOM, global_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        ip.build_pretrain_input(cfg(), GEOM, global_batch_size=5, seed=0, process_count=2)
    with pytest.raises(ValueError, match="sensors"):
        ip.build_pretrain_input(cfg(), dataclasses.replace(GEOM, sensors=("barometer",)), global_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="split"):
        ip.build_pretrain_input(cfg(split="train"), GEOM, global_batch_size=4, seed=0)


def test_video_only_and_config_dict():
    ml_collections = pytest.importorskip("ml_collections")
    c = ml_collections.ConfigDict(cfg(split="novel"))
    batches, size = take(1, data_cfg=c, geometry=dataclasses.replace(GEOM, sensors=()))
    assert size == 10 * 2 * 1 * 2
    assert set(batches[0]) == {"video", "label", "index"}
    assert set(batches[0]["label"].tolist()) <= {synthetic.CLASS_TO_ID[n] for n in synthetic.NOVEL_CLASSES}


def test_repeated_sampling_draws_k_samples_per_clip():
    c = cfg(repeated_sampling=2)
    it, n = ip.build_pretrain_input(c, ClipGeometry(num_frames=4, frame_stride=2, image_size=32, sensor_length=128,
                                                    sensors=("gyro",)), global_batch_size=4, seed=0)
    b = next(it)
    it.close()
    assert n == 2 * sources.get_source(cfg()).num_examples(())
    for a in (0, 2):  # examples 2j and 2j+1 come from one clip, with their own frame window
        assert b["label"][a] == b["label"][a + 1]
        np.testing.assert_array_equal(b["gyro"][a], b["gyro"][a + 1])
    assert not np.array_equal(b["video"][0], b["video"][1]) or not np.array_equal(b["video"][2], b["video"][3])
    assert not np.array_equal(b["gyro"][0], b["gyro"][2])
    with pytest.raises(ValueError, match="repeated_sampling=0"):
        sources.get_source(cfg(repeated_sampling=0)).num_examples(())
