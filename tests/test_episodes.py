"""Tests of the fixed, seeded, saved one-shot episode lists (mumae_jax.data.episodes)."""
import json
import math
import random

import numpy as np
import pytest

from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from mumae_jax.data.episodes import ClipId


def make_records(classes, subjects=range(1, 4), sessions=(1, 2), cameras=(1, 2, 3, 4), scene=1):
    return [ClipId(action=a, subject=s, scene=scene, session=se, camera=c)
            for a in classes for s in subjects for se in sessions for c in cameras]


CLASSES7 = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]


@pytest.fixture(scope="module")
def records():
    return make_records(CLASSES7)  # 7 classes x 6 recordings x 4 cameras = 168 clips


def action_of(records):
    return {splits.clip_name(r): r.action for r in records}


def check_episode(ep, records, way, shot, protocol, queries, class_to_id):
    act = action_of(records)
    assert len(ep.classes) == way and len(set(ep.classes)) == way
    assert list(ep.global_labels) == [class_to_id[c] for c in ep.classes]
    assert len(ep.support) == way * shot and len(set(ep.support)) == way * shot
    assert list(ep.support_labels) == [y for y in range(way) for _ in range(shot)]
    for c, y in zip(ep.support, ep.support_labels):
        assert act[c] == ep.classes[y]
    for c, y in zip(ep.query, ep.query_labels):
        assert act[c] == ep.classes[y]
    assert not set(ep.support) & set(ep.query) and len(set(ep.query)) == len(ep.query)
    if protocol == "official":
        assert len(ep.query) == queries and len(set(ep.query_labels)) == 1
    else:
        assert list(ep.query_labels) == [y for y in range(way) for _ in range(queries)]
    ep.check(shot)


# -- structure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol,way,shot,queries", [
    ("official", 5, 1, 1), ("official", 3, 2, 3), ("trx", 5, 1, 1), ("trx", 4, 2, 2)])
@pytest.mark.parametrize("distinct", [True, False])
def test_episode_structure(records, protocol, way, shot, queries, distinct):
    eps = E.make_episode_list(records, CLASSES7, way=way, shot=shot, protocol=protocol, queries=queries,
                              num_episodes=200, seed=3, distinct_instances=distinct)
    assert len(eps) == 200 and eps.meta["num_episodes"] == 200
    ids = {c: i for i, c in enumerate(CLASSES7)}
    for ep in eps:
        check_episode(ep, records, way, shot, protocol, queries, ids)
    if protocol == "official":  # the flagged class takes every episode label
        assert {ep.query_labels[0] for ep in eps} == set(range(way))
    # every class is drawn sometimes and episode labels are randomly assigned
    assert {c for ep in eps for c in ep.classes} == set(CLASSES7)
    assert len({ep.classes for ep in eps}) > 20


def test_official_5way_1shot_default_is_5_support_1_query(records):
    ep = E.make_episode_list(records, CLASSES7, num_episodes=1)[0]
    assert len(ep.support) == 5 and len(ep.query) == 1 and len(ep.query_labels) == 1


def test_sample_episode_api_and_global_ids():
    clips = {"b": ["subject1_cam1_scene1_session1_b", "subject1_cam2_scene1_session1_b",
                   "subject2_cam1_scene1_session1_b"],
             "a": ["subject1_cam1_scene1_session1_a", "subject2_cam1_scene1_session1_a"]}
    ep = E.sample_episode(np.random.default_rng(0), clips, way=2, shot=1, protocol="trx", queries=1)
    assert sorted(ep.classes) == ["a", "b"] and list(ep.global_labels) == [{"a": 0, "b": 1}[c] for c in ep.classes]
    for c, y in zip(ep.support + ep.query, ep.support_labels + ep.query_labels):
        assert c.endswith("_" + ep.classes[y])
    ep2 = E.sample_episode(np.random.default_rng(0), clips, way=2, protocol="trx", class_to_id={"a": 7, "b": 9})
    assert list(ep2.global_labels) == [{"a": 7, "b": 9}[c] for c in ep2.classes]
    # same rng state -> same episode; the mapping's order does not matter
    ep3 = E.sample_episode(np.random.default_rng(0), dict(reversed(list(clips.items()))), way=2, protocol="trx")
    assert ep3 == ep


def test_classsplit_gives_official_global_ids():
    cs = splits.mumae_split3()
    recs = make_records(cs.novel, subjects=(1, 2), sessions=(1,), cameras=(1, 2))
    eps = E.make_episode_list(recs, cs, part="novel", num_episodes=50, seed=0)
    assert eps.meta["classes"] == list(cs.novel)
    for ep in eps:
        assert list(ep.global_labels) == [cs.class_to_id[c] for c in ep.classes]
        assert set(ep.classes) <= set(cs.novel)
    # records of other classes are ignored
    more = recs + make_records(cs.base[:3], subjects=(1,), sessions=(1,), cameras=(1,))
    assert E.make_episode_list(more, cs, part="novel", num_episodes=50, seed=0) == eps


# -- determinism and files ---------------------------------------------------------------------------

def test_same_seed_identical_bytes_different_seed_differs(records, tmp_path):
    kw = dict(way=5, shot=1, protocol="official", queries=1, num_episodes=300)
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    E.save_episode_list(a, E.make_episode_list(records, CLASSES7, seed=11, **kw))
    E.save_episode_list(b, E.make_episode_list(records, CLASSES7, seed=11, **kw))
    E.save_episode_list(c, E.make_episode_list(records, CLASSES7, seed=12, **kw))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    la, lc = E.load_episode_list(a), E.load_episode_list(c)
    assert list(la) != list(lc) and sum(x == y for x, y in zip(la, lc)) < 30
    assert la.meta["seed"] == 11 and lc.meta["seed"] == 12


def test_round_trip_and_header(records, tmp_path):
    eps = E.make_episode_list(records, CLASSES7, way=4, shot=2, protocol="trx", queries=2, num_episodes=20,
                              seed=5, distinct_instances=False)
    path = tmp_path / "eps.json"
    E.save_episode_list(path, eps)
    back = E.load_episode_list(path)
    assert list(back) == list(eps) and back.meta == eps.meta
    h = json.loads(path.read_text())["header"]
    assert h["format"] == "mumae_jax.episodes" and h["version"] == 1
    assert (h["way"], h["shot"], h["protocol"], h["queries"], h["seed"], h["num_episodes"]) == (4, 2, "trx", 2, 5, 20)
    assert h["distinct_instances"] is False and h["classes"] == CLASSES7 and h["num_clips"] == len(records)
    assert h["clips_sha256"] == E.clips_fingerprint(splits.clip_name(r) for r in records)
    # one episode per line
    assert len(path.read_text().splitlines()) > 20
    # explicit meta works for a plain list
    E.save_episode_list(tmp_path / "plain.json", list(eps), eps.meta)
    assert (tmp_path / "plain.json").read_bytes() == path.read_bytes()


def test_independent_of_record_order_and_duplicates(records):
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    kw = dict(way=5, shot=1, protocol="trx", queries=2, num_episodes=100, seed=2)
    a = E.make_episode_list(records, CLASSES7, **kw)
    b = E.make_episode_list(shuffled + shuffled[:10], list(reversed(CLASSES7)), **kw)
    assert list(a) == list(b) and a.meta == b.meta


def test_load_rejects_bad_files(records, tmp_path):
    eps = E.make_episode_list(records, CLASSES7, num_episodes=5)
    path = tmp_path / "e.json"
    E.save_episode_list(path, eps)
    data = json.loads(path.read_text())
    for key, value, msg in [("format", "other", "format"), ("version", 99, "version"),
                            ("num_episodes", 6, "episodes")]:
        bad = json.loads(json.dumps(data))
        bad["header"][key] = value
        p = tmp_path / f"bad_{key}.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=msg):
            E.load_episode_list(p)
    bad = json.loads(json.dumps(data))
    bad["episodes"][0]["query"] = bad["episodes"][0]["support"][:1]  # query == a support clip
    p = tmp_path / "bad_overlap.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="distinct"):
        E.load_episode_list(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        E.load_episode_list(p)
    with pytest.raises(ValueError, match="header"):
        E.save_episode_list(tmp_path / "x.json", list(eps))


# -- recordings (distinct_instances) -----------------------------------------------------------------

def test_distinct_instances_never_leaks_but_official_can(records):
    def leaks(ep):
        sup_inst = {}
        for c, y in zip(ep.support, ep.support_labels):
            sup_inst.setdefault(y, set()).add(E.instance_of_clip(c))
        return sum(E.instance_of_clip(q) in sup_inst[y] for q, y in zip(ep.query, ep.query_labels))

    kw = dict(way=5, shot=1, protocol="trx", queries=3, num_episodes=300, seed=0)
    assert sum(leaks(ep) for ep in E.make_episode_list(records, CLASSES7, distinct_instances=True, **kw)) == 0
    # 6 recordings x 4 cameras per class: with the leak allowed it happens often
    assert sum(leaks(ep) for ep in E.make_episode_list(records, CLASSES7, distinct_instances=False, **kw)) > 50

    # A case where it MUST happen: every class is one recording seen by 4 cameras.
    one_rec = make_records(CLASSES7[:5], subjects=(1,), sessions=(1,))
    forced = E.make_episode_list(one_rec, CLASSES7[:5], num_episodes=20, distinct_instances=False)
    assert all(leaks(ep) == 1 for ep in forced)
    with pytest.raises(ValueError, match="distinct recordings"):
        E.make_episode_list(one_rec, CLASSES7[:5], num_episodes=20, distinct_instances=True)


def test_instance_of_clip():
    assert E.instance_of_clip("subject3_cam2_scene1_session4_talking_on_phone") == \
        "subject3_scene1_session4_talking_on_phone"
    assert E.parse_clip_name("walking/subject3_cam2_scene1_session4_walking.mp4") == \
        ClipId(action="walking", subject=3, scene=1, session=4, camera=2)
    with pytest.raises(ValueError):
        E.parse_clip_name("nonsense")


# -- too few clips -----------------------------------------------------------------------------------

def test_too_few_clips(records):
    # c6 has a single clip: with shot + queries = 2 it is never chosen.
    small = [r for r in records if r.action != "c6"] + make_records(["c6"], subjects=(1,), sessions=(1,), cameras=(1,))
    eps = E.make_episode_list(small, CLASSES7, way=6, num_episodes=100, seed=0)
    assert all("c6" not in ep.classes for ep in eps)
    with pytest.raises(ValueError, match=r"need 7 usable classes.*only 6 of 7.*c6: 1"):
        E.make_episode_list(small, CLASSES7, way=7, num_episodes=10)
    # a class with no records at all counts as 0 clips
    with pytest.raises(ValueError, match="c9: 0"):
        E.make_episode_list(records, CLASSES7 + ["c9"], way=8, num_episodes=1)
    # trx with many queries per class: 24 clips per class < 1 + 24
    with pytest.raises(ValueError, match="only 0 of 7"):
        E.make_episode_list(records, CLASSES7, protocol="trx", queries=24, num_episodes=1)
    with pytest.raises(ValueError, match="protocol"):
        E.make_episode_list(records, CLASSES7, protocol="bogus")
    with pytest.raises(ValueError, match="shot"):
        E.make_episode_list(records, CLASSES7, shot=0)


# -- verification ------------------------------------------------------------------------------------

def test_verify_catches_removed_clip(records, tmp_path):
    eps = E.make_episode_list(records, CLASSES7, num_episodes=50, seed=1)
    path = tmp_path / "e.json"
    E.save_episode_list(path, eps)
    rep = E.verify_episode_list(path, records)
    assert rep["num_episodes"] == 50 and rep["fingerprint_matches"] is True
    gone = eps[7].query[0]
    kept = [r for r in records if splits.clip_name(r) != gone]
    with pytest.raises(ValueError, match=f"1 clip\\(s\\) missing from the records: {gone}"):
        E.verify_episode_list(path, kept)
    # an unused clip removed: still valid, fingerprint differs
    used = {c for ep in eps for c in ep.support + ep.query}
    unused = next(r for r in records if splits.clip_name(r) not in used)
    rep = E.verify_episode_list(eps, [r for r in records if r is not unused])
    assert rep["fingerprint_matches"] is False
    # a clip listed under the wrong class in an episode
    ep = eps[0]
    other = next(splits.clip_name(r) for r in records if r.action == ep.classes[1] and
                 splits.clip_name(r) not in ep.support + ep.query)
    tampered = E.Episode(support=(other,) + ep.support[1:], support_labels=ep.support_labels, query=ep.query,
                         query_labels=ep.query_labels, classes=ep.classes, global_labels=ep.global_labels)
    with pytest.raises(ValueError, match=f"1 clip\\(s\\) in the wrong class: {other}"):
        E.verify_episode_list([tampered], records)
    assert E.verify_episode_list([ep], records)["fingerprint_matches"] is None  # no header


# -- accuracy ----------------------------------------------------------------------------------------

def test_paired_difference_is_over_episodes():
    a = np.array([[1, 1], [1, 0], [0, 0]])
    b = np.array([[1, 0], [0, 0], [0, 1]])
    d = np.array([50.0, 50.0, -50.0])  # per-episode differences, pp
    mean, ci = E.paired_difference_with_ci(a, b)
    assert mean == pytest.approx(d.mean()) and ci == pytest.approx(1.96 * d.std() / np.sqrt(3))
    assert E.paired_difference_with_ci(a, a) == (0.0, 0.0)  # negative control
    with pytest.raises(ValueError, match="one shape"):
        E.paired_difference_with_ci(a, b[:2])


def test_accuracy_with_ci():
    mean, ci = E.accuracy_with_ci([1, 0, 1, 1])
    assert mean == pytest.approx(75.0)
    assert ci == pytest.approx(1.96 * 100 * math.sqrt(0.1875) / 2)
    assert ci == pytest.approx(42.44, abs=0.01)
    assert E.accuracy_with_ci([True] * 10) == (100.0, 0.0)
    m, c = E.accuracy_with_ci(np.array([0, 1] * 5000))
    assert m == pytest.approx(50.0) and c == pytest.approx(1.96 * 50 / 100)
    with pytest.raises(ValueError):
        E.accuracy_with_ci([])


# -- command line ------------------------------------------------------------------------------------

def test_cli(tmp_path, capsys):
    cs = splits.mumae_split3()
    recs = make_records(cs.novel, subjects=(1, 2), sessions=(1,), cameras=(1, 2))
    lst = tmp_path / "testlist.txt"
    lst.write_text("".join(f"{r.action}/{splits.clip_name(r)}\n" for r in reversed(recs)))
    out1, out2 = tmp_path / "o1.json", tmp_path / "o2.json"
    for out in (out1, out2):
        assert E.main(["--records", str(lst), "--out", str(out), "--num_episodes", "30", "--seed", "4"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    loaded = E.load_episode_list(out1)
    assert loaded == E.make_episode_list(recs, cs, part="novel", num_episodes=30, seed=4)
    assert "wrote 30 5-way 1-shot official episodes" in capsys.readouterr().out
    assert E.verify_episode_list(out1, recs)["fingerprint_matches"] is True


def test_cli_error_and_malformed_header(tmp_path, capsys):
    lst = tmp_path / "one.txt"
    lst.write_text("walking/subject1_cam1_scene1_session1_walking\n")
    assert E.main(["--records", str(lst), "--out", str(tmp_path / "o.json")]) == 2
    assert "need 5 usable classes" in capsys.readouterr().err
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"header": dict(E.make_episode_list(make_records(CLASSES7), CLASSES7,
                                                                num_episodes=0).meta, classes=5),
                             "episodes": []}))
    with pytest.raises(ValueError):
        E.load_episode_list(p)


def test_cli_class_split_file(tmp_path, capsys):
    recs = make_records(CLASSES7, subjects=(1, 2), sessions=(1,), cameras=(1, 2))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{splits.clip_name(r)}\n" for r in recs))
    cs = splits.ClassSplit(base=["c0", "c1"], validation=["c2", "c3", "c4"], novel=["c5", "c6"], name="mine")
    cs_file = tmp_path / "split.json"
    cs.to_file(cs_file)
    out = tmp_path / "o.json"
    assert E.main(["--records", str(lst), "--out", str(out), "--class_split_file", str(cs_file), "--part", "validation",
                   "--way", "2", "--num_episodes", "40", "--seed", "1"]) == 0
    eps = E.load_episode_list(out)
    assert eps == E.make_episode_list(recs, cs, part="validation", way=2, num_episodes=40, seed=1)
    assert set().union(*(e.classes for e in eps)) == {"c2", "c3", "c4"}  # that part's classes, all of them drawn
    assert eps.meta["class_to_id"] == {"c2": 2, "c3": 3, "c4": 4}  # the file's global ids
    bad = tmp_path / "bad.json"
    splits.ClassSplit(base=["c0"], validation=["c2"], novel=["c5", "walking"]).to_file(bad)
    assert E.main(["--records", str(lst), "--out", str(tmp_path / "b.json"), "--class_split_file", str(bad),
                   "--way", "2"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "['walking']" in err and "in none of the records" in err
    assert E.main(["--records", str(lst), "--out", str(tmp_path / "b.json"), "--class_split", str(cs_file),
                   "--classes", "c0,c9", "--way", "2"]) == 2
    assert str(cs_file) in capsys.readouterr().err
    assert E.main(["--records", str(lst), "--out", str(tmp_path / "b.json"), "--class_split", str(cs_file),
                   "--split", "split3"]) == 2
    assert "give one" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_pinned_first_episode():
    """Guards the sampling algorithm (and numpy's PCG64 stream): if this changes, saved lists made
    before the change can no longer be regenerated from their seed (the files themselves stay valid)."""
    ep = E.make_episode_list(make_records(CLASSES7), CLASSES7, num_episodes=1, seed=0)[0]
    assert ep.classes == ("c3", "c4", "c1", "c6", "c2") and ep.global_labels == (3, 4, 1, 6, 2)
    assert ep.support == ("subject2_cam4_scene1_session2_c3", "subject3_cam3_scene1_session2_c4",
                          "subject2_cam3_scene1_session1_c1", "subject2_cam4_scene1_session1_c6",
                          "subject3_cam4_scene1_session2_c2")
    assert ep.query == ("subject2_cam4_scene1_session1_c2",) and ep.query_labels == (4,)
