"""mmact_tfds: a tiny prepared MMAct tree → TFDS (array_record), split sizes / values vs splits.py and
read_prepared, data_source random access, per-process splits, unknown classes."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mmact_tree as T  # noqa: E402

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from mumae_jax.data import mmact_tfds as M  # noqa: E402
from mumae_jax.data import prepare_mmact as P  # noqa: E402
from mumae_jax.data import splits as S  # noqa: E402

# (subject, scene, session, action, cameras): base (drinking, running, opening), validation classes of
# mumae_split3_with_validation() (sitting, fall), novel (walking, kicking); subjects 1 / 17, cameras 1 / 4.
INSTANCES = [
    (1, 1, 1, "drinking", (1, 4)), (17, 1, 1, "drinking", (1,)), (1, 1, 1, "running", (1, 4)),
    (17, 2, 1, "opening", (4,)), (1, 1, 2, "sitting", (1,)), (17, 1, 1, "fall", (4,)),
    (1, 1, 1, "walking", (1, 4)), (17, 1, 1, "kicking", (1,)),
]
NUM_FRAMES, W, H = 6, 32, 24


def _write_tree(root, instances):
    for subject, scene, session, action, cams in instances:
        for cam in cams:
            name = T.clip_name(subject, cam, scene, session, action)
            T.write_video(T.video_path(root, subject, cam, scene, session, action), NUM_FRAMES, W, H,
                          colour=T.clip_colour(name))
        inst = T.instance_name(subject, scene, session, action)
        for s in T.SENSORS:
            T.write_csv(T.sensor_path(root, s, subject, scene, session, action),
                        *T.sensor_data(inst, s, NUM_FRAMES / T.FPS))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmact_tfds")
    src, out = root / "src", root / "prepared"
    _write_tree(src, INSTANCES)
    P.prepare(out, src, short_side=0, min_frames=4, shard_size=4, workers=1, progress=False, log=lambda *a: None)
    prepared = {r["clip"].decode(): r for r in P.read_prepared(out).as_numpy_iterator()}
    jpegs = {r["clip"].decode(): list(r["frames"]) for r in P.read_prepared(out, decode_frames=False).as_numpy_iterator()}
    assert len(prepared) == sum(len(c) for *_, c in INSTANCES) == 11
    return {"root": root, "out": out, "data_dir": root / "tfds", "prepared": prepared, "jpegs": jpegs,
            "records": M.kept_records(out)}


@pytest.fixture(scope="module")
def split3(env):
    # val_fraction 0.5 so that the 6 base clips give a non-empty pretrain_val (a derived config)
    return M.build(env["out"], env["data_dir"], "mumae_split3", val_fraction=0.5)


def _expected_splits(records, config):
    return {k: sorted(r.clip for r in v) for k, v in M.split_records(records, config).items() if v}


def _check_examples(env, ds, class_split):
    got = []
    for ex in tfds.as_numpy(ds):
        clip = ex["clip"].decode()
        ref = env["prepared"][clip]
        assert ex["video"].dtype == np.uint8 and ex["video"].shape == ref["frames"].shape == (NUM_FRAMES, H, W, 3)
        np.testing.assert_array_equal(ex["video"], ref["frames"])
        for s in T.SENSORS:
            v, t = ex["sensors"][s]["values"], ex["sensors"][s]["timestamps"]
            assert v.dtype == np.float32 and t.dtype == np.float64
            np.testing.assert_array_equal(v, ref["sensors"][s]["values"])
            np.testing.assert_array_equal(t, ref["sensors"][s]["timestamps"])
        action = ex["action"].decode()
        assert action == ref["action"].decode()
        assert ex["label"] == class_split.class_to_id[action]
        for k in ("subject", "camera", "scene", "session", "num_frames"):
            assert ex[k] == ref[k], k
        assert ex["fps"] == pytest.approx(ref["fps"])
        got.append(clip)
    return sorted(got)


def test_split3_sizes_and_values_match_rules_and_prepared(env, split3):
    cfg = split3.builder_config
    assert cfg.name.startswith("mumae_split3_") and cfg.val_fraction == 0.5
    cs = S.mumae_split3_with_validation()
    recs = env["records"]
    expected = {
        "pretrain_train": S.pretrain_split(recs, cs, "train", val_fraction=0.5),
        "pretrain_val": S.pretrain_split(recs, cs, "val", val_fraction=0.5),
        "meta_train": S.meta_split(recs, cs, "base"),
        "meta_val": S.meta_split(recs, cs, "validation"),
        "meta_test": S.meta_split(recs, cs, "novel"),
    }
    assert all(expected.values()), {k: len(v) for k, v in expected.items()}
    assert set(split3.info.splits.keys()) == set(expected)
    assert split3.info.features["label"].names == list(cs.all_classes)
    for name, recs_ in expected.items():
        assert split3.info.splits[name].num_examples == len(recs_), name
        got = _check_examples(env, split3.as_dataset(split=name), cs)
        assert got == sorted(r.clip for r in recs_), name
    # file format: array_record
    files = os.listdir(split3.data_path)
    assert any(".array_record" in f for f in files), files


def test_video_jpeg_bytes_stored_unchanged(env, split3):
    ds = split3.as_dataset(split="meta_test", decoders={"video": tfds.decode.SkipDecoding()})
    for ex in tfds.as_numpy(ds):
        assert list(ex["video"]) == env["jpegs"][ex["clip"].decode()]


def test_data_source_random_access_equals_iteration(env, split3):
    raw = tfds.decode.DeserializeMethod.RAW_BYTES
    for split in ("meta_train", "pretrain_val"):
        it = list(tfds.as_numpy(split3.as_dataset(split=split)))
        src = M.data_source(env["data_dir"], split, "mumae_split3", val_fraction=0.5)  # a fresh builder
        src_raw = split3.as_data_source(split=split, deserialize_method=raw)
        assert len(src) == len(src_raw) == len(it) == split3.info.splits[split].num_examples
        for i in reversed(range(len(it))):  # random order of access
            a, b = src[i], it[i]
            clip = b["clip"].decode()
            assert (a["clip"].decode() if isinstance(a["clip"], bytes) else a["clip"]) == clip
            assert a["label"] == b["label"]
            for k in ("subject", "camera", "scene", "session", "num_frames"):
                assert a[k] == b[k]
            for s in T.SENSORS:
                np.testing.assert_array_equal(a["sensors"][s]["values"], b["sensors"][s]["values"])
                np.testing.assert_array_equal(a["sensors"][s]["timestamps"], b["sensors"][s]["timestamps"])
                assert a["sensors"][s]["timestamps"].dtype == np.float64
            # frames: data_source decodes with PIL, TF's decoder may differ slightly; the stored JPEG
            # bytes are exactly the prepared ones
            video = np.stack(a["video"])  # tfds' numpy decoding gives a list of [H, W, 3] frames
            assert video.dtype == np.uint8 and video.shape == b["video"].shape
            diff = np.abs(video.astype(int) - b["video"].astype(int))
            assert diff.max() <= 16 and diff.mean() < 2, (diff.max(), diff.mean())  # 7 / <1 seen here
            ex = tf.train.Example.FromString(src_raw[i])
            assert list(ex.features.feature["video"].bytes_list.value) == env["jpegs"][clip]


def test_process_splits_disjoint_and_cover(env, split3):
    for split in ("pretrain_train", "meta_train"):
        full = [ex["clip"] for ex in tfds.as_numpy(split3.as_dataset(split=split, decoders={
            "video": tfds.decode.SkipDecoding()}))]
        parts = []
        for i in range(2):
            ps = M.process_split(split, i, 2)
            parts.append([ex["clip"] for ex in tfds.as_numpy(split3.as_dataset(split=ps, decoders={
                "video": tfds.decode.SkipDecoding()}))])
            assert len(split3.as_data_source(split=ps)) == len(parts[-1])
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(full)
        assert abs(len(parts[0]) - len(parts[1])) <= 1
    with pytest.raises(ValueError):
        M.process_split("meta_train", 2, 2)


@pytest.mark.parametrize("config", ["mumae_split3_official", "cross_subject", "cross_view"])
def test_other_configs_match_rules(env, config):
    b = M.build(env["out"], env["data_dir"], config)
    cfg = b.builder_config
    assert cfg.name == config
    expected = _expected_splits(env["records"], cfg)
    if config == "mumae_split3_official":
        cs = S.mumae_split3()
        assert "meta_val" not in b.info.splits
        assert expected["meta_train"] == sorted(r.clip for r in S.meta_split(env["records"], cs, "base"))
    elif config == "cross_subject":
        cs = S.mumae_split3()
        assert expected == {"train": sorted(r.clip for r in env["records"] if r.subject == 1),
                            "test": sorted(r.clip for r in env["records"] if r.subject == 17)}
    else:
        cs = S.mumae_split3()
        assert expected == {"train": sorted(r.clip for r in env["records"] if r.camera == 1),
                            "test": sorted(r.clip for r in env["records"] if r.camera == 4)}
    assert set(b.info.splits.keys()) == set(expected)
    for name, clips in expected.items():
        assert b.info.splits[name].num_examples == len(clips)
        ds = b.as_dataset(split=name, decoders={"video": tfds.decode.SkipDecoding()})
        got = [(ex["clip"].decode(), ex["label"]) for ex in tfds.as_numpy(ds)]
        assert sorted(c for c, _ in got) == clips
        assert all(lab == cs.class_to_id[env["prepared"][c]["action"].decode()] for c, lab in got)


def test_custom_class_file_labels_and_unknown_class_raises(env, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"base": ["drinking", "running", "opening", "sitting"], "validation": ["fall"],
                                "novel": ["walking", "kicking"]}))
    b = M.build(env["out"], env["data_dir"], "mumae_split3", class_split_file=good, val_fraction=0.5)
    cs = S.ClassSplit.from_file(good)
    assert b.info.features["label"].names == list(cs.all_classes)
    # the derived config describes the user's split, not the Mu-MAE one it derives from
    assert b.builder_config.description == (f"Class split 'custom' from {good} (4 base / 1 validation / 2 novel "
                                            "classes). Overrides: val_fraction=0.5.")
    assert b.info.splits["meta_test"].num_examples == len(S.meta_split(env["records"], cs, "novel"))
    ds = b.as_dataset(split="meta_val", decoders={"video": tfds.decode.SkipDecoding()})
    assert [ex["label"] for ex in tfds.as_numpy(ds)] == [cs.class_to_id["fall"]]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": ["drinking", "running", "opening"], "novel": ["walking"]}))
    for config in ("mumae_split3", "cross_view"):
        with pytest.raises(ValueError) as e:
            M.build(env["out"], tmp_path / "tfds_bad", config, class_split_file=bad)
        for name in ("sitting", "fall", "kicking"):
            assert repr(name) in str(e.value)


def test_load_manual_dir_and_reuse(env, split3, tmp_path):
    # load() of the built dataset from a fresh builder (no prepared dir needed), same clips
    ds = M.load(env["data_dir"], "meta_test", "mumae_split3", val_fraction=0.5,
                decoders={"video": tfds.decode.SkipDecoding()})
    clips = sorted(ex["clip"].decode() for ex in tfds.as_numpy(ds))
    assert clips == sorted(r.clip for r in S.meta_split(env["records"], S.mumae_split3_with_validation(), "novel"))
    # building again reuses the finished dataset
    again = M.build(env["out"], env["data_dir"], "mumae_split3", val_fraction=0.5)
    assert os.fspath(again.data_path) == os.fspath(split3.data_path)
    # the prepared dir given as tfds' manual_dir instead of prepared_dir
    b = M.Mmact(config="cross_view", data_dir=os.fspath(tmp_path / "tfds_manual"), file_format="tfrecord")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(env["out"])))
    assert b.info.splits["test"].num_examples == sum(r.camera == 4 for r in env["records"])


def test_two_builds_at_once_make_one_dataset_and_a_later_open_only_reads(env, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    shared = tmp_path / "shared"
    with ThreadPoolExecutor(2) as pool:  # two runs started together on one data dir
        futures = [pool.submit(M.build, env["out"], shared, "mumae_split3", val_fraction=0.5) for _ in range(2)]
        built = [f.result() for f in futures]
    path = built[0].data_path
    assert os.fspath(built[1].data_path) == os.fspath(path)

    def files():
        return {p.name: os.stat(p).st_mtime_ns for p in path.iterdir()}

    before = files()
    assert not [n for n in before if ".tmp" in n]
    for _ in range(2):
        again = M.build(env["out"], shared, "mumae_split3", val_fraction=0.5)
        src = again.as_data_source(split="meta_test", deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        assert len(src) == built[0].info.splits["meta_test"].num_examples
    assert files() == before  # nothing rewritten
    info = json.loads((path / "dataset_info.json").read_text())
    assert info["alternativeFileFormats"] == ["array_record"]


def test_unknown_class_kept_by_prepare_raises(tmp_path):
    src, out = tmp_path / "src", tmp_path / "prepared"
    _write_tree(src, [(1, 1, 1, "drinking", (1,)), (1, 1, 1, "dancing", (1,)), (1, 1, 1, "walking", (1,))])
    P.prepare(out, src, short_side=0, min_frames=4, workers=1, progress=False, allow_unknown_classes=True,
              log=lambda *a: None)
    with pytest.raises(ValueError, match="'dancing' \\(1 clips\\)"):
        M.build(out, tmp_path / "tfds", "mumae_split3")
    with pytest.raises(ValueError, match="'dancing'"):
        M.split_records(M.kept_records(out), M.Mmact.builder_configs["cross_subject"])


def test_tfds_load_and_data_source_by_name(env, tmp_path):
    data_dir = os.fspath(tmp_path / "tfds_byname")
    M.build(env["out"], data_dir, "cross_subject")
    want = sorted(r.clip for r in env["records"] if r.subject == 17)
    ds = tfds.load("mmact/cross_subject", data_dir=data_dir, split="test", download=False,
                   decoders={"video": tfds.decode.SkipDecoding()})
    assert sorted(ex["clip"].decode() for ex in tfds.as_numpy(ds)) == want
    src = tfds.data_source("mmact/cross_subject", data_dir=data_dir, split="test", download=False)
    got = sorted(c.decode() if isinstance(c, bytes) else c for c in (src[i]["clip"] for i in range(len(src))))
    assert got == want


def test_empty_split_left_out(env, tmp_path):
    b = M.build(env["out"], tmp_path / "tfds", "cross_subject", train_subjects=(1, 17), random_access=False)
    assert set(b.info.splits.keys()) == {"train"}
    assert b.info.splits["train"].num_examples == len(env["records"])


def test_a_damaged_shard_is_an_error_naming_it(env, tmp_path):
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(env["out"], copy, ignore=shutil.ignore_patterns("tfds"))
    shard = sorted(copy.glob("clips-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # a record's checksum no longer matches
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{shard}\b.* is damaged \(corrupted record at \d+\)"):
        M.build(copy, tmp_path / "tfds", "mumae_split3", val_fraction=0.5)
