"""Data splits defined by rules in code: class splits (base / validation / novel), the pretraining
clip split, and MMAct's cross-subject and cross-view protocols. numpy only (in fact only the standard
library), no TensorFlow or JAX.

Every split function takes any sequence of clip records with the attributes `action, subject, scene,
session, camera` (`ClipRecord`; e.g. `synthetic.ClipRef`) and returns a new list of those same
records, sorted by `record_sort_key` = `(action, subject, scene, session, camera)`. So the result does
not depend on the order of the input, and the rules work the same on MMAct, on the synthetic data and
on users' own data.

Class splits (`ClassSplit`):
- `mumae_split3()`: the official Mu-MAE one-shot split 3 (docs/official_code.md §1.3): 23 base / 10 novel classes and
  no validation classes. The official code selects its model on the test (novel) classes.
- `mumae_split3_with_validation(num_val=5, seed=0)`: our recommended default. It moves `num_val` of the
  23 base classes to a validation set by a seeded hash rule (`validation_class_rule`), leaving 18
  meta-train classes; the 10 novel classes are unchanged. Select models on the validation classes.
- `ClassSplit.from_config(mapping)` / `ClassSplit.from_file(path)`: users' own lists, JSON
  `{"base": [...], "validation": [...], "novel": [...]}` (see data/splits/README.md).

Class names in the records that are in none of a split's lists are never guessed: `unknown_classes`
returns them with their counts, and each split function raises a `ValueError` naming them unless
`on_unknown="ignore"` is passed (then those records are left out).

The pretraining split assigns each clip to train or val by a hash of (seed, clip name), not by a
permutation of the list: a clip's assignment never changes when other clips are added or removed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from typing import Any, Iterable, Mapping, Protocol, Sequence, TypeVar, Union

__all__ = [
    "MUMAE_SPLIT3_BASE", "MUMAE_SPLIT3_NOVEL", "DEFAULT_TRAIN_SUBJECTS", "DEFAULT_TEST_CAMERAS",
    "ON_UNKNOWN", "ClipRecord", "ClassSplit", "mumae_split3", "mumae_split3_with_validation",
    "validation_class_rule", "record_sort_key", "clip_name", "instance_name", "unknown_classes",
    "meta_split", "pretrain_split", "pretrain_val_score", "cross_subject", "cross_view",
]

# docs/official_code.md §1.3 (parsed from the official trainlist03.txt / testlist03.txt).
MUMAE_SPLIT3_BASE = (
    "closing", "crouching", "drinking", "entering", "fall", "jumping", "loitering", "looking_around",
    "opening", "picking_up", "pocket_in", "pocket_out", "pushing", "running", "sitting", "sitting_down",
    "standing", "standing_up", "talking", "talking_on_phone", "throwing", "using_pc", "using_phone",
)
MUMAE_SPLIT3_NOVEL = (
    "carrying", "checking_time", "exiting", "kicking", "pointing", "pulling", "setting_down",
    "transferring_object", "walking", "waving_hand",
)

# MMAct protocols. These defaults are OUR rule (the ICCV'19 paper's exact subject / camera lists are
# not available to us): cross-subject trains on subjects 1-16 and tests on the others (17-20 in MMAct);
# cross-view tests on camera 4 and trains on the others (1-3).
DEFAULT_TRAIN_SUBJECTS = tuple(range(1, 17))
DEFAULT_TEST_CAMERAS = (4,)

ON_UNKNOWN = ("raise", "ignore")
CLASS_PARTS = ("base", "validation", "novel")
PRETRAIN_PARTS = ("train", "val")
PROTOCOL_PARTS = ("train", "test")
PRETRAIN_UNITS = ("clip", "instance")
_CONFIG_KEYS = ("name", "description", "base", "validation", "novel")


class ClipRecord(Protocol):
    """What a split needs from a clip record (e.g. `synthetic.ClipRef`)."""
    action: str
    subject: int
    scene: int
    session: int
    camera: int


R = TypeVar("R", bound=ClipRecord)
Classes = Union["ClassSplit", Iterable[str], None]


def record_sort_key(r: ClipRecord) -> tuple:
    """The stable order of every split's output: (action, subject, scene, session, camera)."""
    return (r.action, r.subject, r.scene, r.session, r.camera)


def clip_name(r: ClipRecord) -> str:
    """MMAct clip stem `subject{N}_cam{K}_scene{S}_session{T}_{action}` (the pretraining hash key)."""
    return f"subject{r.subject}_cam{r.camera}_scene{r.scene}_session{r.session}_{r.action}"


def instance_name(r: ClipRecord) -> str:
    """MMAct sensor-file stem `subject{N}_scene{S}_session{T}_{action}` (shared by all cameras)."""
    return f"subject{r.subject}_scene{r.scene}_session{r.session}_{r.action}"


def _sha_unit(text: str) -> float:
    """A uniform number in [0, 1) from the first 64 bits of sha256(text)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


# ----------------------------------------------------------------------------------------------------
# Class splits
# ----------------------------------------------------------------------------------------------------

def _check_name_list(key: str, value: Any, errors: list[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        errors.append(f"{key!r} must be a list of class names, got {type(value).__name__}")
        return ()
    names = list(value)
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or n != n.strip()]
    if bad:
        errors.append(f"{key!r} has invalid class names (must be non-empty strings without surrounding "
                      f"spaces): {bad!r}")
    dups = sorted(n for n, c in Counter(n for n in names if isinstance(n, str)).items() if c > 1)
    if dups:
        errors.append(f"{key!r} lists these classes more than once: {', '.join(dups)}")
    return tuple(sorted({n for n in names if isinstance(n, str)}))


@dataclasses.dataclass(frozen=True)
class ClassSplit:
    """Disjoint class lists: `base` (meta-train and, by default, pretraining), `validation` (model
    selection; may be empty) and `novel` (one-shot test). Lists are stored sorted; construction
    validates them (non-empty base and novel, no duplicates, pairwise disjoint) and raises a
    `ValueError` naming every offending class."""
    base: tuple[str, ...]
    validation: tuple[str, ...]
    novel: tuple[str, ...]
    name: str = "custom"

    def __post_init__(self):
        errors: list[str] = []
        lists = {k: _check_name_list(k, getattr(self, k), errors) for k in CLASS_PARTS}
        for k in ("base", "novel"):
            if not lists[k] and not any(e.startswith(repr(k)) for e in errors):
                errors.append(f"{k!r} must list at least one class")
        for i, a in enumerate(CLASS_PARTS):
            for b in CLASS_PARTS[i + 1:]:
                both = sorted(set(lists[a]) & set(lists[b]))
                if both:
                    errors.append(f"classes in both {a!r} and {b!r}: {', '.join(both)}")
        if not isinstance(self.name, str):
            errors.append(f"'name' must be a string, got {type(self.name).__name__}")
        if errors:
            raise ValueError("invalid class split: " + "; ".join(errors))
        for k, v in lists.items():
            object.__setattr__(self, k, v)

    # -- views ---------------------------------------------------------------------------------------

    @property
    def all_classes(self) -> tuple[str, ...]:
        """Every class of the split, sorted."""
        return tuple(sorted(self.base + self.validation + self.novel))

    @property
    def class_to_id(self) -> dict[str, int]:
        """Global class id = index in the sorted list of all classes (the official one-shot rule)."""
        return {c: i for i, c in enumerate(self.all_classes)}

    def classes(self, part: str) -> tuple[str, ...]:
        """The classes of `part` in ('base', 'validation', 'novel')."""
        if part not in CLASS_PARTS:
            raise ValueError(f"unknown class part {part!r}; expected one of {', '.join(CLASS_PARTS)}")
        return getattr(self, part)

    # -- user lists ----------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> "ClassSplit":
        """From `{"base": [...], "validation": [...], "novel": [...]}`; "validation" is optional
        (default empty), optional "name" / "description" strings; any other key is an error."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a class split config must be a mapping, got {type(mapping).__name__}")
        extra = sorted(str(k) for k in mapping if k not in _CONFIG_KEYS)
        missing = [k for k in ("base", "novel") if k not in mapping]
        if extra or missing:
            parts = ([f"unknown keys {extra} (allowed: {', '.join(_CONFIG_KEYS)})"] if extra else []) + \
                    ([f"missing keys {missing}"] if missing else [])
            raise ValueError("invalid class split: " + "; ".join(parts))
        return cls(base=mapping["base"], validation=mapping.get("validation", ()), novel=mapping["novel"],
                   name=mapping.get("name", "custom"))

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "ClassSplit":
        """From a JSON file in the `from_config` format (see data/splits/README.md)."""
        with open(path, encoding="utf-8") as f:
            try:
                mapping = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{os.fspath(path)}: not valid JSON: {e}") from None
        try:
            return cls.from_config(mapping)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    def to_config(self) -> dict[str, Any]:
        """The `from_config` mapping of this split (sorted lists)."""
        return {"name": self.name, "base": list(self.base), "validation": list(self.validation),
                "novel": list(self.novel)}

    def to_file(self, path: Union[str, os.PathLike]) -> None:
        """Write `to_config()` as JSON (readable by `from_file`)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_config(), f, indent=2)
            f.write("\n")


def mumae_split3() -> ClassSplit:
    """The official Mu-MAE one-shot split 3: 23 base / 10 novel classes, NO validation classes
    (official behaviour: the paper selects its model on the test classes)."""
    return ClassSplit(base=MUMAE_SPLIT3_BASE, validation=(), novel=MUMAE_SPLIT3_NOVEL,
                      name="mumae_split3_official_no_validation")


def validation_class_rule(candidates: Iterable[str], num_val: int, seed: int) -> tuple[str, ...]:
    """The validation-class rule: rank the candidate classes by
    `sha256(f"mumae-val-classes|{seed}|{name}")` (as a big-endian integer, ties impossible in
    practice and broken by name) and take the `num_val` lowest; returned sorted by name.

    Depends only on (seed, the candidate names), not on their order or on numpy's RNG streams."""
    names = sorted(set(candidates))
    if not 0 <= num_val <= len(names):
        raise ValueError(f"num_val must be in [0, {len(names)}], got {num_val}")
    ranked = sorted(names, key=lambda n: (hashlib.sha256(f"mumae-val-classes|{seed}|{n}".encode()).digest(), n))
    return tuple(sorted(ranked[:num_val]))


def mumae_split3_with_validation(num_val: int = 5, seed: int = 0) -> ClassSplit:
    """Recommended default: split 3 with `num_val` of its 23 base classes moved to validation by
    `validation_class_rule` (23 - num_val meta-train classes); the 10 novel classes are unchanged."""
    if isinstance(num_val, bool) or not isinstance(num_val, int) or not 1 <= num_val < len(MUMAE_SPLIT3_BASE):
        raise ValueError(f"num_val must be an int in [1, {len(MUMAE_SPLIT3_BASE) - 1}], got {num_val!r}")
    val = validation_class_rule(MUMAE_SPLIT3_BASE, num_val, int(seed))
    base = tuple(c for c in MUMAE_SPLIT3_BASE if c not in val)
    return ClassSplit(base=base, validation=val, novel=MUMAE_SPLIT3_NOVEL,
                      name=f"mumae_split3_val{num_val}_seed{int(seed)}")


def resolve_class_split(class_split_file: str = "", num_val: int = 5, val_seed: int = 0) -> ClassSplit:
    """The class split every stage uses: the JSON file `class_split_file` if given, else Mu-MAE split 3
    with `num_val` validation classes (`mumae_split3_with_validation(num_val, val_seed)`)."""
    if class_split_file:
        return ClassSplit.from_file(class_split_file)
    return mumae_split3_with_validation(int(num_val), int(val_seed))


# ----------------------------------------------------------------------------------------------------
# Applying splits to records
# ----------------------------------------------------------------------------------------------------

def _class_set(classes: Classes) -> frozenset[str] | None:
    if classes is None:
        return None
    if isinstance(classes, ClassSplit):
        return frozenset(classes.all_classes)
    if isinstance(classes, str):
        raise ValueError("classes must be a ClassSplit or a list of class names, not a single string")
    return frozenset(classes)


def unknown_classes(records: Iterable[ClipRecord], classes: Classes) -> dict[str, int]:
    """{class name: number of records} for the records whose action is in none of the lists of
    `classes` (a ClassSplit or an iterable of names), sorted by name. Empty if all are known."""
    known = _class_set(classes)
    if known is None:
        return {}
    counts = Counter(r.action for r in records if r.action not in known)
    return dict(sorted(counts.items()))


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def _known_records(records: Iterable[R], classes: Classes, on_unknown: str) -> list[R]:
    """The records whose class is known to `classes`; raise (on_unknown='raise') if any is not."""
    _check_choice("on_unknown", on_unknown, ON_UNKNOWN)
    records = list(records)
    unknown = unknown_classes(records, classes)
    if unknown and on_unknown == "raise":
        listed = ", ".join(f"{name!r} ({n} clips)" for name, n in unknown.items())
        raise ValueError(f"records have class names in no list of the class split: {listed}. Add them to "
                         f"the split, or pass on_unknown='ignore' to leave these records out "
                         f"(splits.unknown_classes() returns them for logging).")
    known = _class_set(classes)
    return records if known is None else [r for r in records if r.action in known]


def meta_split(records: Iterable[R], class_split: ClassSplit, part: str, *,
               on_unknown: str = "raise") -> list[R]:
    """The records of the classes of `part` in ('base', 'validation', 'novel'), sorted."""
    _check_choice("part", part, CLASS_PARTS)
    wanted = set(class_split.classes(part))
    kept = _known_records(records, class_split, on_unknown)
    return sorted((r for r in kept if r.action in wanted), key=record_sort_key)


def pretrain_val_score(r: ClipRecord, seed: int = 0, unit: str = "clip") -> float:
    """The number in [0, 1) that decides a record's pretraining part: val iff score < val_fraction.
    `sha256(f"mumae-pretrain|{seed}|{name}")` with name = `clip_name(r)` (unit='clip') or
    `instance_name(r)` (unit='instance')."""
    _check_choice("unit", unit, PRETRAIN_UNITS)
    name = clip_name(r) if unit == "clip" else instance_name(r)
    return _sha_unit(f"mumae-pretrain|{int(seed)}|{name}")


def pretrain_split(records: Iterable[R], class_split: ClassSplit, part: str = "train", *,
                   val_fraction: float = 0.2, seed: int = 0, include_validation_classes: bool = False,
                   unit: str = "clip", on_unknown: str = "raise") -> list[R]:
    """The seeded ~80/20 pretraining split of the base-class clips (official train.csv / val.csv).

    A record goes to 'val' iff `pretrain_val_score(r, seed, unit) < val_fraction`, else to 'train'.
    So the fraction is val_fraction only on average (binomial), and a clip's part never changes when
    other records are added or removed; raising val_fraction only moves clips from train to val.
    By default the validation classes are NOT pretrained on (honest validation); pass
    `include_validation_classes=True` to pretrain on them too (their clips are then split 80/20 like
    the base ones). unit='clip' is the official behaviour (the 4 camera clips of one recording, which
    share one sensor file, may land in different parts); unit='instance' keeps them together.
    Novel classes are never included."""
    _check_choice("part", part, PRETRAIN_PARTS)
    _check_choice("unit", unit, PRETRAIN_UNITS)
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    classes = set(class_split.base) | (set(class_split.validation) if include_validation_classes else set())
    kept = _known_records(records, class_split, on_unknown)
    want_val = part == "val"
    out = [r for r in kept
           if r.action in classes and (pretrain_val_score(r, seed, unit) < val_fraction) == want_val]
    return sorted(out, key=record_sort_key)


def cross_subject(records: Iterable[R], train_subjects: Iterable[int] = DEFAULT_TRAIN_SUBJECTS,
                  part: str = "train", *, classes: Classes = None, on_unknown: str = "raise") -> list[R]:
    """MMAct cross-subject protocol: 'train' = records of `train_subjects` (default 1-16, our rule),
    'test' = all other subjects (17-20 in MMAct). If `classes` (a ClassSplit or names) is given, only
    its classes are kept and unknown class names raise unless on_unknown='ignore'."""
    _check_choice("part", part, PROTOCOL_PARTS)
    train = set(train_subjects)
    kept = _known_records(records, classes, on_unknown)
    want_train = part == "train"
    return sorted((r for r in kept if (r.subject in train) == want_train), key=record_sort_key)


def cross_view(records: Iterable[R], test_cameras: Iterable[int] = DEFAULT_TEST_CAMERAS,
               part: str = "train", *, classes: Classes = None, on_unknown: str = "raise") -> list[R]:
    """MMAct cross-view protocol: 'test' = records of `test_cameras` (default camera 4, our rule),
    'train' = all other cameras (1-3). `classes` / `on_unknown` as in `cross_subject`."""
    _check_choice("part", part, PROTOCOL_PARTS)
    test = set(test_cameras)
    kept = _known_records(records, classes, on_unknown)
    want_test = part == "test"
    return sorted((r for r in kept if (r.camera in test) == want_test), key=record_sort_key)
