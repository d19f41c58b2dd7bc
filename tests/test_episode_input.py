"""Episode pipeline: the right clips, processed as the official one-shot code, for synthetic and MMAct data."""
import dataclasses
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mmact_tree as T  # noqa: E402

from mumae_jax.data import episode_input, episodes, mmact_tfds, prepare_mmact, sensor_ops  # noqa: E402
from mumae_jax.data import splits, synthetic, video_ops  # noqa: E402
from mumae_jax.data.geometry import ClipGeometry  # noqa: E402

SYN = {"name": "synthetic", "split": "novel", "num_subjects": 2, "num_sessions": 1, "num_cameras": 2, "seed": 0,
       "shuffle": True}
GEOM = ClipGeometry(num_frames=4, image_size=32, resize_to=40, sensor_length=128, sensors=synthetic.SENSORS)


def geom(sensors=synthetic.SENSORS):
    return dataclasses.replace(GEOM, sensors=sensors)


def _synthetic_list(protocol="official", n=3):
    ds = synthetic.SyntheticMMAct(num_subjects=2, num_sessions=1, num_cameras=2)
    return ds, episodes.make_episode_list(ds.clips(synthetic.NOVEL_CLASSES), splits.mumae_split3(), part="novel",
                                          protocol=protocol, num_episodes=n, seed=0)


def test_synthetic_eval_episodes_hold_the_listed_clips():
    ds, elist = _synthetic_list()
    it = episode_input.build_episode_input(SYN, elist, GEOM, train=False)
    got = [next(it) for _ in range(2)]
    it.close()
    clips = {c.name: c for c in ds.clips()}
    for ep, b in zip(elist, got):
        assert b["support_video"].shape == (5, 4, 32, 32, 3) and b["query_video"].shape == (1, 4, 32, 32, 3)
        assert b["support_acc_watch"].shape == (5, 128, 3) and b["query_gyro"].shape == (1, 128, 3)
        np.testing.assert_array_equal(b["support_labels"], ep.support_labels)
        np.testing.assert_array_equal(b["query_labels"], ep.query_labels)
        np.testing.assert_array_equal(b["global_labels"], ep.global_labels)
        for j, name in enumerate((*ep.support, *ep.query)):
            clip = clips[name]
            idx = video_ops.episode_frame_indices(ds.num_frames(clip), 4).numpy()  # deterministic window
            frames = ds.render(clip, idx, (40, 40))[:, 4:36, 4:36] / 255.0  # centre crop 32 of 40
            video = b["support_video"][j] if j < 5 else b["query_video"][j - 5]
            np.testing.assert_allclose(video, frames, atol=1e-6)
            rec = ds.sensors(clip)
            for s in synthetic.SENSORS:
                sens = b[f"support_{s}"][j] if j < 5 else b[f"query_{s}"][j - 5]
                np.testing.assert_allclose(sens, sensor_ops.preprocess_sensor(rec[s][1], 128), atol=1e-6)


def test_training_episodes_are_random_but_reproducible():
    _, elist = _synthetic_list(protocol="trx", n=2)
    runs = []
    for train in (True, True, False):
        it = episode_input.build_episode_input(SYN, elist, geom(("acc_watch",)), train=train, seed=5)
        runs.append(next(it))
        it.close()
    assert runs[0]["query_video"].shape == (5, 4, 32, 32, 3)  # TRX: one query per class
    np.testing.assert_array_equal(runs[0]["support_video"], runs[1]["support_video"])
    assert not np.array_equal(runs[0]["support_video"], runs[2]["support_video"])  # jitter / flip


def test_mixed_episode_shapes_rejected():
    _, a = _synthetic_list()
    _, b = _synthetic_list(protocol="trx", n=1)
    with pytest.raises(ValueError, match="same way, shot and query count"):
        episode_input.build_episode_input(SYN, list(a) + list(b), geom(()), train=False)


def test_mmact_episodes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "prepared"
    novel = ("carrying", "kicking", "pointing", "pulling", "walking")
    for subject in (1, 2):
        for action in novel:
            for cam in (1, 4):
                name = T.clip_name(subject, cam, 1, 1, action)
                T.write_video(T.video_path(src, subject, cam, 1, 1, action), 20, 64, 48, colour=T.clip_colour(name))
            for s in T.SENSORS:
                T.write_csv(T.sensor_path(src, s, subject, 1, 1, action),
                            *T.sensor_data(T.instance_name(subject, 1, 1, action), s, 20 / T.FPS))
    prepare_mmact.prepare(out, src, short_side=0, min_frames=8, shard_size=8, workers=1, progress=False,
                          log=lambda *a: None)
    records = splits.meta_split(mmact_tfds.kept_records(out), splits.mumae_split3_with_validation(), "novel")
    elist = episodes.make_episode_list(records, splits.mumae_split3(), part="novel", num_episodes=2, seed=1)
    cfg = {"name": "mmact", "dir": str(out), "tfds_dir": "", "split_config": "mumae_split3", "class_split_file": ""}
    it = episode_input.build_episode_input(cfg, elist, geom(T.SENSORS), train=False, split="meta_test")
    b = next(it)
    it.close()
    ep = elist[0]
    assert b["support_video"].shape == (5, 4, 32, 32, 3)
    for j, name in enumerate(ep.support):
        colour = np.median(b["support_video"][j].reshape(-1, 3), axis=0) * 255
        np.testing.assert_allclose(colour, T.clip_colour(name), atol=6)
    ts, vals = T.sensor_data(episodes.instance_of_clip(ep.query[0]), "gyro", 20 / T.FPS)
    np.testing.assert_allclose(b["query_gyro"][0], sensor_ops.preprocess_sensor(vals.astype(np.float32), 128),
                               atol=1e-5)


def test_clip_input_equals_the_clip_inside_an_eval_episode():
    _, elist = _synthetic_list(n=2)
    it = episode_input.build_episode_input(SYN, elist, GEOM, train=False)
    ep_batch = next(it)
    it.close()
    names = [*elist[0].support, *elist[0].query]  # 6 clips: one full batch of 4 and a padded one
    clip_it = episode_input.build_clip_input(SYN, names, GEOM, batch_size=4)
    got = list(clip_it)
    clip_it.close()
    assert len(got) == 2 and got[0]["video"].shape == (4, 4, 32, 32, 3)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in got]), [0, 1, 2, 3, 4, 5, -1, -1])
    video = np.concatenate([b["video"] for b in got])
    np.testing.assert_array_equal(video[:5], ep_batch["support_video"])
    np.testing.assert_array_equal(video[5], ep_batch["query_video"][0])
    np.testing.assert_array_equal(video[6], video[5])  # padding repeats the last clip
    for s in synthetic.SENSORS:
        sens = np.concatenate([b[s] for b in got])
        np.testing.assert_array_equal(sens[:5], ep_batch[f"support_{s}"])
        np.testing.assert_array_equal(sens[5], ep_batch[f"query_{s}"][0])
