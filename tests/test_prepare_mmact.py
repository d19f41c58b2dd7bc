"""prepare_mmact: MMAct layout → sharded TFRecords + manifest, on small generated trees (tests/mmact_tree.py)."""
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import mmact_tree as T  # noqa: E402
from tf_block import BLOCK_TENSORFLOW  # noqa: E402

from mumae_jax.data import mmact_layout as L  # noqa: E402
from mumae_jax.data import mmact_shards  # noqa: E402
from mumae_jax.data import prepare_mmact as P  # noqa: E402
from mumae_jax.data.synthetic import CLASSES  # noqa: E402

SHORT = 32
FRAMES = {f"subject{s}_cam{c}_scene{sc}_session{se}_{a}": n
          for s, sc, se, a, cams, n, _ in T.GOOD for c in cams}


def _manifest(out):
    return [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]


def _load_csv(path):
    a = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    return a[:, 0], a[:, 1:].astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmact")
    src, out = root / "src", root / "out"
    expected = T.build_tree(src)
    logs = []
    summary = P.prepare(out, src, short_side=SHORT, min_frames=16, shard_size=3, workers=2, progress=False,
                        log=logs.append)
    return {"src": src, "out": out, "expected": expected, "summary": summary, "logs": logs}


@pytest.fixture(scope="module")
def records(prepared):
    ds = P.read_prepared(prepared["out"])
    return {r["clip"].decode(): r for r in ds.as_numpy_iterator()}


def test_exact_kept_set_and_drop_reasons(prepared):
    got = {e["clip"]: e["reason"] for e in _manifest(prepared["out"])}
    assert got == prepared["expected"]
    by = {e["clip"]: e for e in _manifest(prepared["out"])}
    for name, reason in prepared["expected"].items():
        assert by[name]["status"] == ("kept" if reason is None else "dropped")
    d = {k: v["detail"] for k, v in by.items()}
    assert "line 5" in d["subject1_cam1_scene1_session1_carrying"] and "orientation_clip" in d[
        "subject1_cam1_scene1_session1_carrying"]
    assert "line 10" in d["subject1_cam1_scene1_session1_exiting"]
    assert "line 7" in d["subject1_cam1_scene1_session1_checking_time"]
    assert "axis z" in d["subject1_cam1_scene1_session1_setting_down"]
    assert "gyro" in d["subject1_cam1_scene1_session1_pulling"] and "acc_phone" not in d[
        "subject1_cam1_scene1_session1_pulling"]
    assert "acc_watch_clip" in d["subject1_cam1_scene1_session1_waving_hand"]
    assert "decoded 8 of 24" in d["subject2_cam1_scene1_session2_kicking"]
    assert by["subject1_cam1_scene1_session1_pointing"]["num_frames"] == 8
    orphan = by["subject2_scene4_session1_running"]
    assert orphan["video"] is None and set(orphan["sensors"]) == set(T.SENSORS)
    for name, n in FRAMES.items():
        e = by[name]
        assert e["num_frames"] == n and e["shard"].startswith("clips-") and e["reason"] is None


def test_summary_matches_manifest(prepared):
    m = _manifest(prepared["out"])
    s = json.loads((Path(prepared["out"]) / "summary.json").read_text())
    assert s == json.loads(json.dumps(prepared["summary"]))
    kept = [e for e in m if e["status"] == "kept"]
    assert s["kept"] == len(kept) == 6 and s["kept_frames"] == sum(FRAMES.values())
    reasons = {}
    for e in m:
        if e["status"] == "dropped":
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    assert s["dropped_by_reason"] == reasons and s["dropped"] == len(m) - len(kept)
    assert s["manifest_lines"] == len(m)
    # 17 parsed videos, 4 fail the cheap checks (unknown class, missing/no sensors) → 13 → 5 shards of 3
    assert s["shards"] == 5 and s["shards_written"] == 5 and s["shards_reused"] == 0
    assert sorted(os.listdir(prepared["out"])) == sorted(
        [f"clips-{i:05d}-of-00005.{x}" for i in range(5) for x in ("tfrecord", "json")]
        + ["manifest.jsonl", "summary.json"])
    assert "kept 6 clips" in prepared["logs"][-1]


def test_records_frames_and_metadata(prepared, records):
    assert set(records) == set(FRAMES)
    for name, r in records.items():
        fr = r["frames"]
        assert fr.dtype == np.uint8 and fr.shape[0] == FRAMES[name] == r["num_frames"]
        h, w = fr.shape[1:3]
        assert min(h, w) == SHORT and (h, w) == (r["height"], r["width"])
        if name.endswith("kicking"):  # 48 wide x 64 high source
            assert (h, w, r["orig_height"], r["orig_width"]) == (43, 32, 64, 48)
        else:
            assert (h, w, r["orig_height"], r["orig_width"]) == (32, 43, 48, 64)
        assert abs(r["fps"] - T.FPS) < 1e-3
        # its own video: the flat colour of this clip (a bright bar covers a few columns)
        med = np.median(fr[0].reshape(-1, 3), axis=0)
        assert np.abs(med - np.array(T.clip_colour(name))).max() <= 8, (name, med)
        subj, cam, scene, sess = (int(p[len(k):]) for p, k in zip(name.split("_")[:4],
                                                                    ("subject", "cam", "scene", "session")))
        action = name.split("_", 4)[4]
        assert (r["subject"], r["camera"], r["scene"], r["session"], r["action"].decode()) == (
            subj, cam, scene, sess, action)
        assert r["label"] == CLASSES.index(action)
        assert r["video_path"].decode() == str(T.video_path(prepared["src"], subj, cam, scene, sess, action))


def test_sensors_are_the_instance_csv_and_shared_across_cameras(prepared, records):
    src = prepared["src"]
    for name, r in records.items():
        parts = name.split("_", 4)
        subj, scene, sess, action = int(parts[0][7:]), int(parts[2][5:]), int(parts[3][7:]), parts[4]
        for s in T.SENSORS:
            path = T.sensor_path(src, s, subj, scene, sess, action)  # built independently of the record
            ts, vals = _load_csv(path)
            got = r["sensors"][s]
            assert got["values"].dtype == np.float32 and got["timestamps"].dtype == np.float64
            np.testing.assert_array_equal(got["values"], vals)
            np.testing.assert_array_equal(got["timestamps"], ts)
            assert len(ts) == (int(round(FRAMES[name] / T.FPS * T.RATES[s])) + 1)
            assert r["sensor_paths"][s].decode() == str(path)
    a, b = records["subject1_cam1_scene1_session1_walking"], records["subject1_cam2_scene1_session1_walking"]
    c = records["subject2_cam1_scene1_session1_walking"]
    for s in T.SENSORS:
        np.testing.assert_array_equal(a["sensors"][s]["values"], b["sensors"][s]["values"])
        np.testing.assert_array_equal(a["sensors"][s]["timestamps"], b["sensors"][s]["timestamps"])
        assert not np.array_equal(a["sensors"][s]["values"], c["sensors"][s]["values"])
    assert not np.array_equal(a["frames"][0], b["frames"][0])  # different cameras, different videos


def test_rerun_skips_finished_shards(prepared, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(prepared["out"], out)
    mt = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.startswith("clips-")}
    manifest = (out / "manifest.jsonl").read_text()

    def boom(*a, **k):
        raise AssertionError("decode_video called on a finished prepare")

    monkeypatch.setattr(mmact_shards, "decode_video", boom)  # where the decoding worker looks it up
    s = P.prepare(out, prepared["src"], short_side=SHORT, shard_size=3, workers=1, progress=False, log=lambda m: None)
    assert s["decoded_clips"] == 0 and s["shards_reused"] == 5 and s["shards_written"] == 0
    assert {f: os.stat(out / f).st_mtime_ns for f in mt} == mt
    assert (out / "manifest.jsonl").read_text() == manifest

    # an interrupted run: shard 1 has no sidecar (marker) and a stale temp file → only shard 1 is redone
    os.remove(out / "clips-00001-of-00005.json")
    (out / "clips-00003-of-00005.tfrecord.tmp-999").write_bytes(b"junk")
    calls = []
    monkeypatch.undo()
    real = mmact_shards.decode_video

    def counting(path, short_side):
        calls.append(path)
        return real(path, short_side)

    monkeypatch.setattr(mmact_shards, "decode_video", counting)
    s = P.prepare(out, prepared["src"], short_side=SHORT, shard_size=3, workers=1, progress=False, log=lambda m: None)
    side = json.loads((out / "clips-00001-of-00005.json").read_text())
    redo_videos = [e["video"] for e in side["entries"] if e["reason"] is None or e["reason"].startswith("video")
                   or e["reason"] == "too_few_frames"]
    assert sorted(calls) == sorted(redo_videos) and len(calls) >= 1
    assert s["shards_reused"] == 4 and s["shards_written"] == 1 and s["decoded_clips"] == len(calls)
    assert not (out / "clips-00003-of-00005.tfrecord.tmp-999").exists()
    for f, t in mt.items():
        if not f.startswith("clips-00001"):
            assert os.stat(out / f).st_mtime_ns == t, f
    assert (out / "manifest.jsonl").read_text() == manifest

    # changed options invalidate the shards
    s = P.prepare(out, prepared["src"], short_side=SHORT, shard_size=3, workers=1, jpeg_quality=50,
                  progress=False, log=lambda m: None)
    assert s["shards_reused"] == 0 and s["shards_written"] == 5


def test_packed_archives_give_the_same_records(prepared, records, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(prepared["src"], src)
    T.pack(src)
    assert sorted(p.name for p in src.iterdir()) == sorted(
        ["video.tar.gz"] + [f"{s}_clip.tar.gz" for s in T.SENSORS])
    out = tmp_path / "out"
    rc = P.main(["--src", str(src), "--out", str(out), "--short_side", str(SHORT), "--shard_size", "3",
                 "--workers", "2", "--no_progress"])
    assert rc == 0
    assert "kept 6 clips" in capsys.readouterr().out
    work = out / P.WORK_DIR
    assert sorted(p.name for p in work.iterdir()) == sorted(["video"] + [f"{s}_clip" for s in T.SENSORS])
    m = {e["clip"]: e["reason"] for e in _manifest(out)}
    exp = {(str(work / "video" / os.path.relpath(k, prepared["src"])) if k.startswith("/") else k): v
           for k, v in prepared["expected"].items()}
    assert m == exp
    packed = {r["clip"].decode(): r for r in P.read_prepared(out).as_numpy_iterator()}
    assert set(packed) == set(records)
    for k, r in packed.items():
        np.testing.assert_array_equal(r["frames"], records[k]["frames"])
        for s in T.SENSORS:
            np.testing.assert_array_equal(r["sensors"][s]["values"], records[k]["sensors"][s]["values"])
            np.testing.assert_array_equal(r["sensors"][s]["timestamps"], records[k]["sensors"][s]["timestamps"])


def _one_instance_tree(src):
    T.write_video(T.video_path(src, 1, 1, 1, 1, "walking"), 20, colour=(90, 90, 90))
    for s in T.SENSORS:
        T.write_csv(T.sensor_path(src, s, 1, 1, 1, "walking"), *T.sensor_data("x", s, 0.7))


def test_traversal_archive_is_refused(tmp_path, capsys):
    src = tmp_path / "a" / "b" / "src"
    _one_instance_tree(src)
    T.pack(src, trees=("gyro_clip",))
    T.add_member(src / "gyro_clip.tar.gz", "../../evil.csv")
    out = tmp_path / "a" / "b" / "out"
    rc = P.main(["--src", str(src), "--out", str(out), "--workers", "1", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "path traversal" in err and "../../evil.csv" in err and "gyro_clip.tar.gz" in err
    with pytest.raises(L.UnsafeArchiveError, match=r"\.\./\.\./evil\.csv"):
        P.prepare(out, src, workers=1, progress=False, log=lambda m: None)
    assert list(tmp_path.rglob("evil.csv")) == []
    assert sorted(os.listdir(out / P.WORK_DIR)) == []  # the partial extraction is removed
    assert not any(f.startswith("clips-") or f == "manifest.jsonl" for f in os.listdir(out))


@pytest.mark.parametrize("kind,name,linkname,msg", [
    ("file", "/etc/evil", "", "absolute path"),
    ("file", "gyro_clip/../../x", "", "path traversal"),
    ("sym", "gyro_clip/link", "../../outside", "points outside"),
    ("sym", "gyro_clip/link", "/etc/passwd", "absolute"),
    ("hard", "gyro_clip/hl", "../x", "points outside"),
])
def test_check_member_rejects(kind, name, linkname, msg):
    m = tarfile.TarInfo(name)
    m.type = {"file": tarfile.REGTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
    m.linkname = linkname
    with pytest.raises(L.UnsafeArchiveError, match=msg):
        L.check_member(m, "x.tar.gz")
    ok = tarfile.TarInfo("gyro_clip/subject1/a.csv")
    L.check_member(ok, "x.tar.gz")
    s = tarfile.TarInfo("gyro_clip/subject1/l")
    s.type, s.linkname = tarfile.SYMTYPE, "../subject2/a.csv"
    L.check_member(s, "x.tar.gz")


def test_bad_command_line(tmp_path, capsys):
    def run(*argv):
        rc = P.main(list(argv) + ["--no_progress", "--workers", "1"])
        return rc, capsys.readouterr().err

    rc, err = run("--out", str(tmp_path / "o"))
    assert rc == 2 and "--src is required" in err
    rc, err = run("--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert rc == 2 and str(tmp_path / "nope") in err and "not a directory" in err
    src = tmp_path / "src"
    (src / "video").mkdir(parents=True)
    rc, err = run("--src", str(src), "--out", str(tmp_path / "o"))
    assert rc == 2 and "sensor tree for 'acc_phone' not found" in err and str(src / "acc_phone_clip") in err
    _one_instance_tree(src)
    rc, err = run("--src", str(src), "--out", str(tmp_path / "o"), "--sensors", "acc_phone,magnetometer")
    assert rc == 2 and "'magnetometer'" in err and str(src / "magnetometer_clip") in err
    rc, err = run("--src", str(src), "--out", str(tmp_path / "o"), "--video_dir", str(tmp_path / "empty_v"))
    assert rc == 2 and "video tree not found" in err and str(tmp_path / "empty_v") in err
    (tmp_path / "empty_v").mkdir()
    rc, err = run("--src", str(src), "--out", str(tmp_path / "o"), "--video_dir", str(tmp_path / "empty_v"))
    assert rc == 2 and "no videos found" in err and str(tmp_path / "empty_v") in err
    rc, err = run("--src", str(src), "--out", str(tmp_path / "o"), "--sensors", "gyro,gyro")
    assert rc == 2 and "repeated" in err


def test_sensor_subset_classes_file_and_unknown_classes(tmp_path):
    src = tmp_path / "src"
    _one_instance_tree(src)
    T.write_video(T.video_path(src, 1, 2, 1, 1, "dancing"), 20, colour=(10, 200, 10))
    for s in ("acc_phone", "gyro"):
        T.write_csv(T.sensor_path(src, s, 1, 1, 1, "dancing"), *T.sensor_data("y", s, 0.7))
    (src / "acc_watch_clip" / "subject1" / "scene1" / "session1" / "walking.csv").write_text("")  # not used
    classes = tmp_path / "classes.txt"
    classes.write_text("# mine\nwalking\nrunning\n")
    out = tmp_path / "out"
    s = P.prepare(out, src, sensors="acc_phone,gyro", classes=classes, workers=1, short_side=0,
                  progress=False, log=lambda m: None)
    assert s["kept"] == 1 and s["dropped_by_reason"] == {"unknown_class": 1}
    s = P.prepare(out, src, sensors=["acc_phone", "gyro"], classes=classes, workers=1, short_side=0,
                  allow_unknown_classes=True, progress=False, log=lambda m: None)
    assert s["kept"] == 2 and s["kept_unknown_class"] == 1 and s["dropped"] == 0
    recs = {r["clip"].decode(): r for r in P.read_prepared(out).as_numpy_iterator()}
    assert set(recs["subject1_cam2_scene1_session1_dancing"]["sensors"]) == {"acc_phone", "gyro"}
    assert recs["subject1_cam2_scene1_session1_dancing"]["label"] == -1
    assert recs["subject1_cam1_scene1_session1_walking"]["label"] == 0
    assert recs["subject1_cam1_scene1_session1_walking"]["frames"].shape == (20, 48, 64, 3)  # short side 0 = keep
    rc = P.main(["--src", str(src), "--out", str(out), "--sensors", "acc_phone,gyro", "--classes", str(classes),
                 "--allow_unknown_classes", "--cameras", "1,3", "--workers", "1", "--no_progress"])
    m = {e["clip"]: (e["status"], e["reason"]) for e in _manifest(out)}
    assert rc == 0 and m == {"subject1_cam1_scene1_session1_walking": ("kept", None),
                             "subject1_cam2_scene1_session1_dancing": ("dropped", "camera_excluded")}


def test_other_class_names_need_a_class_list_or_auto(tmp_path, capsys):
    """A tree whose actions are not MMAct's: without a class list nothing is kept, which is an error naming the
    reason and the flag; --classes auto takes the tree's names (sorted) and writes them beside the shards."""
    src, out = tmp_path / "src", tmp_path / "out"
    for action in ("wave", "clap"):
        T.write_video(T.video_path(src, 1, 1, 1, 1, action), 20)
        for s in ("acc_phone", "gyro"):
            T.write_csv(T.sensor_path(src, s, 1, 1, 1, action), *T.sensor_data(action, s, 0.7))
    argv = ["--src", str(src), "--out", str(out), "--sensors", "acc_phone,gyro", "--workers", "1", "--no_progress"]
    assert P.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: kept 0 of 2 clips: 2 dropped as 'unknown_class'")
    assert "--classes auto" in err[0] and str(out / "manifest.jsonl") in err[0]
    assert P.main(argv + ["--classes", "auto", "--short_side", "0"]) == 0
    assert (out / "classes.txt").read_text() == "clap\nwave\n"
    labels = {r["clip"].decode(): int(r["label"]) for r in P.read_prepared(out).as_numpy_iterator()}
    assert labels == {"subject1_cam1_scene1_session1_clap": 0, "subject1_cam1_scene1_session1_wave": 1}


def test_release_folder_names_are_found_and_reported(tmp_path):
    """A release that names its trees trimmed/ and Sensor_trimmed/<sensor>_clip/: found under --src (the shallowest
    match), said in the log; two candidate video trees at one level are an error asking for --video_dir."""
    src, logs = tmp_path / "src", []
    _one_instance_tree(src)
    (src / "video").rename(src / "trimmed")
    (src / "Sensor_trimmed").mkdir()
    for s in T.SENSORS:
        (src / f"{s}_clip").rename(src / "Sensor_trimmed" / f"{s}_clip")
    summary = P.prepare(tmp_path / "out", src, workers=1, short_side=0, progress=False, log=logs.append)
    assert summary["kept"] == 1 and summary["options"]["video_root"] == str(src / "trimmed")
    assert f"video tree: {src / 'trimmed'} (found under --src; --video_dir overrides)" in logs
    gyro = src / "Sensor_trimmed" / "gyro_clip"
    assert f"gyro tree: {gyro} (found under --src; --sensor_root gyro=... overrides)" in logs
    shutil.copytree(src / "trimmed", src / "RGB")
    with pytest.raises(L.LayoutError, match=r"several video trees under .*RGB, .*trimmed; choose one with --video_dir"):
        P.prepare(tmp_path / "out2", src, workers=1, progress=False, log=lambda m: None)


def test_path_parsing():
    assert L.parse_video_path("x/subject12/cam3/scene4/session5/talking_on_phone.mp4") == (
        12, 3, 4, 5, "talking_on_phone")
    assert L.parse_video_path("subject1/cam1/scene1/walking.mp4") is None
    assert L.parse_video_path("subject1/cam1/scene1/session1/walking.avi") is None
    assert L.parse_sensor_path("gyro_clip/subject2/scene3/session1/using_pc.csv") == L.InstanceKey(2, 3, 1, "using_pc")
    assert L.parse_sensor_path("gyro_clip/subject2/cam1/scene3/using_pc.csv") is None


@pytest.mark.parametrize("text,reason,where", [
    ("1,0,1,2\r\n2,1,2,3\r\n3,0,1,5\r\n", None, None),                     # CRLF is fine
    ("  \n\n", "sensor_empty", None),
    ("t,x,y,z\n1,0,1,2\n", "sensor_unparsable", "line 1"),                   # a header is not expected
    ("1,0,1,2\n2,1,2,3\n3;0;1;5\n", "sensor_unparsable", "line 3"),
    ("1,0,1,2\n2,1,inf,3\n3,0,1,5\n", "sensor_non_finite", "line 2"),
    ("1,0,1,2\n2,1,1e39,3\n3,0,1,5\n", "sensor_non_finite", "line 2"),       # beyond float32
    ("1,0,1,2\n2,1,2,3\n2,0,1,5\n", "sensor_non_monotonic", "line 3"),       # duplicate timestamp
    ("1,0,1,2\n2,1,1,3\n3,0,1,5\n", "sensor_constant_axis", "axis y"),
])
def test_read_sensor_csv(tmp_path, text, reason, where):
    p = tmp_path / "a.csv"
    p.write_bytes(text.encode())
    if reason is None:
        ts, v = L.read_sensor_csv(p)
        np.testing.assert_array_equal(ts, [1, 2, 3])
        np.testing.assert_array_equal(v, np.float32([[0, 1, 2], [1, 2, 3], [0, 1, 5]]))
        return
    with pytest.raises(L.SensorFileError) as ei:
        L.read_sensor_csv(p)
    assert ei.value.reason == reason and str(p) in ei.value.detail
    if where:
        assert where in ei.value.detail


def test_worker_side_needs_no_tensorflow(prepared):
    """mmact_layout and the decoding worker (process_clip) run with TensorFlow blocked."""
    import subprocess

    video = T.video_path(prepared["src"], 1, 1, 1, 1, "walking")
    sensors = [(s, str(T.sensor_path(prepared["src"], s, 1, 1, 1, "walking"))) for s in T.SENSORS]
    code = (
        BLOCK_TENSORFLOW +
        "from mumae_jax.data import mmact_layout, mmact_shards as P\n"
        f"job = {{'entry': {{'clip': 'c', 'video': {str(video)!r}}}, 'sensors': {sensors!r}, 'shard': 's',\n"
        "       'opts': {'short_side': 32, 'jpeg_quality': 90, 'min_frames': 16}}\n"
        "r = P.process_clip(job)\n"
        "assert r['entry']['status'] == 'kept' and len(r['record']['frames']) == 24, r['entry']\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
