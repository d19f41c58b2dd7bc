"""Pretraining on prepared MMAct-layout data: prepare -> TFDS -> tf.data -> train_and_evaluate."""
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(__file__))
import mmact_tree as T  # noqa: E402

from mumae_jax.trainers import pretraining  # noqa: E402
from mumae_jax.data import input_pipeline as ip  # noqa: E402
from mumae_jax.data import mmact_input, prepare_mmact, sensor_ops, sources  # noqa: E402
from mumae_jax.data.geometry import ClipGeometry  # noqa: E402

# Base classes of mumae_split3 (not its validation classes), subjects 1 and 2, cameras 1 and 4.
ACTIONS = ("drinking", "running", "opening", "throwing", "talking")
SENSORS = T.SENSORS
FRAMES, W, H = 40, 64, 48


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmact_input")
    src, out = root / "src", root / "prepared"
    for subject in (1, 2):
        for action in ACTIONS:
            for cam in (1, 4):
                name = T.clip_name(subject, cam, 1, 1, action)
                T.write_video(T.video_path(src, subject, cam, 1, 1, action), FRAMES, W, H,
                              colour=T.clip_colour(name))
            inst = T.instance_name(subject, 1, 1, action)
            for s in SENSORS:
                T.write_csv(T.sensor_path(src, s, subject, 1, 1, action), *T.sensor_data(inst, s, FRAMES / T.FPS))
    prepare_mmact.prepare(out, src, short_side=0, min_frames=16, shard_size=8, workers=1, progress=False,
                          log=lambda *a: None)
    return str(out)


def _cfg(prepared):
    return {"name": "mmact", "split": "pretrain_train", "dir": prepared, "tfds_dir": "", "split_config": "mumae_split3",
            "class_split_file": "", "shuffle": True}


def _build(prepared, **kw):
    geometry = ClipGeometry(num_frames=4, image_size=32, sensor_length=128, sensors=SENSORS, frame_stride=2)
    return sources.get_source(_cfg(prepared)).pretrain_input(geometry, **{"global_batch_size": 4, "seed": 0, **kw})


def test_batches_hold_the_right_clip_processed_officially(prepared):
    it, n = _build(prepared)
    assert n == sources.get_source(_cfg(prepared)).num_examples(SENSORS) and 12 <= n <= 20  # ~80% of 20 base clips
    source, features = mmact_input.open_split(_cfg(prepared), SENSORS)
    batch = next(it)
    it.close()
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["video"].dtype == np.float32
    for s in SENSORS:
        assert batch[s].shape == (4, 128, 3) and batch[s].dtype == np.float32
    pixels = batch["video"] * np.array(ip.IMAGENET_STD) + np.array(ip.IMAGENET_MEAN)
    assert pixels.min() > -1e-4 and pixels.max() < 1 + 1e-4
    for j, i in enumerate(batch["index"]):
        raw = source[ip.example_clip_index(int(i), n, 0, True)]
        ex = tfds.as_numpy(features.deserialize_example(raw, decoders={"video": tfds.decode.SkipDecoding()}))
        clip = ex["clip"].decode()
        colour = np.median(pixels[j].reshape(-1, 3), axis=0) * 255
        np.testing.assert_allclose(colour, T.clip_colour(clip), atol=6)  # the clip's own frames
        assert batch["label"][j] == ex["label"]
        for s in SENSORS:  # its own sensor recording, min-max + floor-linspace resampling
            expected = sensor_ops.preprocess_sensor(ex["sensors"][s]["values"], 128)
            np.testing.assert_allclose(batch[s][j], expected, rtol=1e-6, atol=1e-6)


def test_deterministic_resumable_and_process_split(prepared):
    a, _ = _build(prepared)
    first = [next(a) for _ in range(2)]
    a.close()
    b, _ = _build(prepared, start_step=1)
    resumed = next(b)
    b.close()
    for k in first[1]:
        np.testing.assert_array_equal(resumed[k], first[1][k])
    halves = []
    for p in (0, 1):
        it, _ = _build(prepared, process_index=p, process_count=2)
        halves.append(next(it))
        it.close()
    for k in first[0]:
        np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), first[0][k])


def test_missing_dir_and_unknown_split_fail_clearly(prepared, tmp_path):
    cfg = _cfg(prepared)
    cfg["dir"] = ""
    with pytest.raises(ValueError, match="needs --config.data.dir"):
        sources.get_source(cfg).num_examples(SENSORS)
    cfg["dir"] = str(tmp_path)
    with pytest.raises(ValueError, match="no summary.json"):
        sources.get_source(cfg).num_examples(SENSORS)
    cfg = _cfg(prepared)
    cfg["split"] = "train"
    with pytest.raises(ValueError, match="split 'train' is not in mmact/mumae_split3"):
        sources.get_source(cfg).num_examples(SENSORS)


def test_pretrains_on_prepared_data(prepared, tiny_config, tmp_path):
    from mumae_jax.configs import pretrain

    c = pretrain.get_config("runlocal,data=mmact")
    tiny_config.data, tiny_config.augment = c.data, c.augment  # MMAct: the official multi-scale crop
    tiny_config.data.dir = prepared
    tiny_config.total_steps = 2
    out = pretraining.train_and_evaluate(tiny_config, str(tmp_path / "run"))
    assert out["step"] == 2 and len(out["history"]) == 2
    assert all(np.isfinite(r["loss"]) for r in out["history"])


def test_augmentation_on_prepared_data(prepared):
    with pytest.raises(ValueError, match="multi-scale crop"):
        _build(prepared, augment=dict(video_crop="none"))
    plain, _ = _build(prepared)
    aug, _ = _build(prepared, augment=dict(video_crop="multiscale", sensor_time_crop=0.6, sensor_rotation_deg=40.0))
    try:
        a, b = next(plain), next(aug)
    finally:
        plain.close()
        aug.close()
    np.testing.assert_array_equal(a["video"], b["video"])  # same clip and crop: only the sensors change
    np.testing.assert_array_equal(a["label"], b["label"])
    for s in SENSORS:
        assert b[s].shape == a[s].shape and np.isfinite(b[s]).all() and not np.allclose(a[s], b[s]), s


def test_pretraining_split_settings_reach_the_builder(prepared):
    """config.data.val_fraction / include_validation_classes: the default builds the default TFDS config, another
    value a derived one with that split (here: more of the 20 base clips held out for pretrain_val)."""
    assert mmact_input.split_overrides(_cfg(prepared)) == {}
    assert mmact_input.split_overrides({**_cfg(prepared), "val_fraction": 0.2}) == {}
    half = {**_cfg(prepared), "val_fraction": 0.6, "include_validation_classes": True}
    assert mmact_input.split_overrides(half) == {"val_fraction": 0.6, "include_validation_classes": True}
    source, _ = mmact_input.open_split(half, SENSORS)
    assert len(source) < sources.get_source(_cfg(prepared)).num_examples(SENSORS)
