"""Tests of the rule-based splits: class splits, pretraining clip split, cross-subject / cross-view."""
import json
import pathlib
import random
from collections import namedtuple

import pytest

from mumae_jax.data import splits, synthetic
from mumae_jax.data.synthetic import ClipRef

SPLIT3_BASE = {
    "closing", "crouching", "entering", "fall", "jumping", "loitering", "looking_around", "opening",
    "pushing", "running", "throwing", "picking_up", "standing", "talking", "talking_on_phone",
    "using_phone", "drinking", "pocket_in", "pocket_out", "sitting", "sitting_down", "standing_up",
    "using_pc",
}
SPLIT3_NOVEL = {
    "carrying", "checking_time", "kicking", "pointing", "pulling", "setting_down", "walking",
    "waving_hand", "exiting", "transferring_object",
}
EXAMPLE_FILE = pathlib.Path(__file__).resolve().parents[1] / "data/splits/example_user_split.json"


def make_records(classes=synthetic.CLASSES, subjects=range(1, 21), scenes=(1,), sessions=(1, 2),
                 cameras=(1, 2, 3, 4)):
    return [ClipRef(a, s, sc, se, c) for a in classes for s in subjects for sc in scenes for se in sessions
            for c in cameras]


@pytest.fixture(scope="module")
def records():
    return make_records()  # 33 × 20 × 2 × 4 = 5,280 clips


# -- class splits ------------------------------------------------------------------------------------

def test_split3_exact_classes():
    cs = splits.mumae_split3()
    assert len(cs.base) == 23 and len(cs.novel) == 10 and cs.validation == ()
    assert set(cs.base) == SPLIT3_BASE and set(cs.novel) == SPLIT3_NOVEL
    assert cs.all_classes == synthetic.CLASSES
    assert set(cs.base) == set(synthetic.BASE_CLASSES) and set(cs.novel) == set(synthetic.NOVEL_CLASSES)
    assert cs.class_to_id["carrying"] == 0 and cs.class_to_id["waving_hand"] == 32
    assert "no_validation" in cs.name


def test_split3_with_validation_rule():
    cs = splits.mumae_split3_with_validation()
    assert len(cs.validation) == 5 and len(cs.base) == 18 and set(cs.novel) == SPLIT3_NOVEL
    assert set(cs.validation) < SPLIT3_BASE
    assert not set(cs.validation) & set(cs.base)
    assert set(cs.validation) | set(cs.base) == SPLIT3_BASE
    assert cs.validation == ("crouching", "entering", "fall", "sitting", "standing_up")  # documented
    assert splits.mumae_split3_with_validation(num_val=5, seed=0) == cs
    other = splits.mumae_split3_with_validation(seed=1)
    assert other.validation != cs.validation and set(other.validation) < SPLIT3_BASE
    assert len(splits.mumae_split3_with_validation(num_val=3, seed=7).validation) == 3
    # The rule is independent of the candidates' order.
    assert splits.validation_class_rule(reversed(sorted(SPLIT3_BASE)), 5, 0) == cs.validation
    for bad in (0, 23, -1, 2.5):
        with pytest.raises(ValueError, match="num_val"):
            splits.mumae_split3_with_validation(num_val=bad)


def test_user_split_round_trip(tmp_path):
    cs = splits.mumae_split3_with_validation(seed=3)
    path = tmp_path / "split.json"
    cs.to_file(path)
    assert splits.ClassSplit.from_file(path) == cs
    cfg = {"base": ["b", "a"], "novel": ["z"]}
    user = splits.ClassSplit.from_config(cfg)
    assert user.base == ("a", "b") and user.validation == () and user.novel == ("z",)


def test_example_user_split_file_loads():
    cs = splits.ClassSplit.from_file(EXAMPLE_FILE)
    assert cs.base and cs.novel and cs.validation
    assert set(cs.all_classes) <= set(synthetic.CLASSES)
    default = splits.mumae_split3_with_validation()
    assert (cs.base, cs.validation, cs.novel) == (default.base, default.validation, default.novel)


@pytest.mark.parametrize("cfg, message", [
    ({"base": ["a", "b"], "validation": ["b"], "novel": ["c"]}, r"both 'base' and 'validation': b"),
    ({"base": ["a"], "validation": ["x"], "novel": ["a", "c"]}, r"both 'base' and 'novel': a"),
    ({"base": ["a", "a", "d"], "novel": ["c"]}, r"'base' lists these classes more than once: a"),
    ({"base": [], "novel": ["c"]}, r"'base' must list at least one class"),
    ({"base": ["a"], "novel": []}, r"'novel' must list at least one class"),
    ({"base": ["a"]}, r"missing keys \['novel'\]"),
    ({"base": ["a"], "novel": ["c"], "vaildation": ["d"]}, r"unknown keys \['vaildation'\]"),
    ({"base": "a", "novel": ["c"]}, r"'base' must be a list"),
    ({"base": ["a", " b"], "novel": ["c"]}, r"invalid class names"),
])
def test_user_split_rejected(cfg, message):
    with pytest.raises(ValueError, match=message):
        splits.ClassSplit.from_config(cfg)


def test_user_split_file_errors_name_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"base": ["walking", "running"], "novel": ["walking"]}))
    with pytest.raises(ValueError, match=r"bad\.json.*both 'base' and 'novel': walking"):
        splits.ClassSplit.from_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        splits.ClassSplit.from_file(path)


# -- meta split and unknown classes -------------------------------------------------------------------

def test_meta_split(records):
    cs = splits.mumae_split3_with_validation()
    parts = {p: splits.meta_split(records, cs, p) for p in ("base", "validation", "novel")}
    assert {r.action for r in parts["base"]} == set(cs.base)
    assert {r.action for r in parts["validation"]} == set(cs.validation)
    assert {r.action for r in parts["novel"]} == set(cs.novel)
    assert sum(len(v) for v in parts.values()) == len(records)
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    assert splits.meta_split(shuffled, cs, "base") == parts["base"]
    assert parts["base"] == sorted(parts["base"], key=splits.record_sort_key)
    assert splits.meta_split(records, splits.mumae_split3(), "validation") == []
    with pytest.raises(ValueError, match="unknown part"):
        splits.meta_split(records, cs, "test")


def test_unknown_classes_reported(records):
    extra = records[:3] + [ClipRef("carrying_heavy", 1, 1, 1, c) for c in (1, 2)] + [ClipRef("zz", 2, 1, 1, 1)]
    cs = splits.mumae_split3()
    assert splits.unknown_classes(extra, cs) == {"carrying_heavy": 2, "zz": 1}
    assert splits.unknown_classes(records, cs) == {}
    for fn in (lambda on: splits.meta_split(extra, cs, "base", on_unknown=on),
               lambda on: splits.pretrain_split(extra, cs, "train", on_unknown=on),
               lambda on: splits.cross_subject(extra, part="train", classes=cs, on_unknown=on),
               lambda on: splits.cross_view(extra, part="test", classes=cs.all_classes, on_unknown=on)):
        with pytest.raises(ValueError, match=r"'carrying_heavy' \(2 clips\), 'zz' \(1 clips\)"):
            fn("raise")
        assert all(r.action in cs.all_classes for r in fn("ignore"))
    with pytest.raises(ValueError, match="on_unknown"):
        splits.meta_split(extra, cs, "base", on_unknown="guess")
    # Without `classes`, the MMAct protocols do not filter by class.
    assert len(splits.cross_subject(extra, part="train")) == len(extra)


# -- pretraining split --------------------------------------------------------------------------------

def test_pretrain_split_partition_and_fraction(records):
    cs = splits.mumae_split3_with_validation()
    train = splits.pretrain_split(records, cs, "train")
    val = splits.pretrain_split(records, cs, "val")
    base_clips = splits.meta_split(records, cs, "base")
    assert not set(train) & set(val)
    assert sorted(train + val, key=splits.record_sort_key) == base_clips
    assert len(base_clips) == 18 * 160
    assert abs(len(train) / len(base_clips) - 0.8) < 0.03
    assert {r.action for r in train} == set(cs.base)  # no validation or novel classes by default
    assert splits.pretrain_split(records, cs, "train") == train  # deterministic
    other = splits.pretrain_split(records, cs, "train", seed=1)
    assert other != train and abs(len(other) / len(base_clips) - 0.8) < 0.03


def test_pretrain_split_include_validation_classes(records):
    cs = splits.mumae_split3_with_validation()
    train, val = (splits.pretrain_split(records, cs, p, include_validation_classes=True) for p in ("train", "val"))
    assert {r.action for r in train} == set(cs.base) | set(cs.validation)
    assert len(train) + len(val) == 23 * 160
    # The official split (no validation classes) gives the base clips the same assignment.
    official = splits.pretrain_split(records, splits.mumae_split3(), "train")
    assert [r for r in official if r.action in cs.base] == splits.pretrain_split(records, cs, "train")


def test_pretrain_split_stable_when_records_change(records):
    cs = splits.mumae_split3()
    val = set(splits.pretrain_split(records, cs, "val"))
    more = records + make_records(subjects=range(21, 31), cameras=(1, 2))
    removed = records[::3]
    assert set(splits.pretrain_split(more, cs, "val")) & set(records) == val
    assert set(splits.pretrain_split(removed, cs, "val")) == val & set(removed)
    # Raising val_fraction only moves clips from train to val.
    assert val <= set(splits.pretrain_split(records, cs, "val", val_fraction=0.3))
    assert splits.pretrain_split(records, cs, "val", val_fraction=0.0) == []
    assert splits.pretrain_split(records, cs, "train", val_fraction=1.0) == []
    with pytest.raises(ValueError, match="val_fraction"):
        splits.pretrain_split(records, cs, "val", val_fraction=1.5)


def test_pretrain_split_instance_unit(records):
    cs = splits.mumae_split3()
    val = splits.pretrain_split(records, cs, "val", unit="instance")
    train = splits.pretrain_split(records, cs, "train", unit="instance")
    assert not {splits.instance_name(r) for r in val} & {splits.instance_name(r) for r in train}
    assert len(val) + len(train) == 23 * 160
    # The official clip unit does split some recordings' cameras across parts.
    val_c = splits.pretrain_split(records, cs, "val")
    train_c = splits.pretrain_split(records, cs, "train")
    assert {splits.instance_name(r) for r in val_c} & {splits.instance_name(r) for r in train_c}


def test_works_on_any_record_type():
    Rec = namedtuple("Rec", "action subject camera scene session")
    recs = [Rec("walking", s, c, 1, 1) for s in (1, 17) for c in (1, 4)]
    refs = [ClipRef(r.action, r.subject, r.scene, r.session, r.camera) for r in recs]
    assert splits.clip_name(recs[0]) == refs[0].name and splits.instance_name(recs[0]) == refs[0].instance.name
    cs = splits.ClassSplit(base=["running"], validation=[], novel=["walking"])
    assert splits.meta_split(recs, cs, "novel") == sorted(recs, key=splits.record_sort_key)
    assert splits.cross_view(recs, part="test") == [Rec("walking", 1, 4, 1, 1), Rec("walking", 17, 4, 1, 1)]


# -- MMAct protocols ----------------------------------------------------------------------------------

def test_cross_subject(records):
    train = splits.cross_subject(records, part="train")
    test = splits.cross_subject(records, part="test")
    assert {r.subject for r in train} == set(range(1, 17)) and {r.subject for r in test} == set(range(17, 21))
    assert not set(train) & set(test) and len(train) + len(test) == len(records)
    assert sorted(train + test, key=splits.record_sort_key) == sorted(records, key=splits.record_sort_key)
    custom = splits.cross_subject(records, train_subjects=[1, 3, 5], part="test")
    assert {r.subject for r in custom} == set(range(1, 21)) - {1, 3, 5}
    with pytest.raises(ValueError, match="unknown part"):
        splits.cross_subject(records, part="val")


def test_cross_view(records):
    train = splits.cross_view(records, part="train")
    test = splits.cross_view(records, part="test")
    assert {r.camera for r in train} == {1, 2, 3} and {r.camera for r in test} == {4}
    assert not set(train) & set(test) and len(train) + len(test) == len(records)
    custom = splits.cross_view(records, test_cameras=(1, 2), part="train")
    assert {r.camera for r in custom} == {3, 4}
    assert splits.cross_view(records, part="test") == test  # deterministic
