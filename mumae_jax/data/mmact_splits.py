"""Prepared MMAct's clip records and the rule-based splits the TFDS builder (`mmact_tfds.py`) writes.

Builder configs (`MmactConfig`; splits computed by `splits.py` on the manifest's kept clips):
- `mumae_split3` (default): class split `mumae_split3_with_validation(num_val, seed)`; splits
  `pretrain_train`, `pretrain_val` (`pretrain_split`, base classes), `meta_train` (base), `meta_val`
  (validation classes), `meta_test` (novel).
- `mumae_split3_official`: the official `mumae_split3()` without validation classes: the same splits
  except `meta_val`.
- `cross_subject` (`train`, `test` by `splits.cross_subject`, `train_subjects`) and `cross_view`
  (`train`, `test` by `splits.cross_view`, `test_cameras`). Labels over `class_split_file`'s classes,
  else over the 33 Mu-MAE classes.
Users' own class lists: `class_split_file=` (JSON for `ClassSplit.from_file`), and any config field
can be overridden (`build(..., val_fraction=0.5)`). Either gives a derived config named
`<config>_<8 hex digits>` (a hash of the overrides and of the class file's content), so differently
split datasets never share a directory.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import tensorflow_datasets as tfds

from mumae_jax.data import splits as S

PROTOCOLS = ("mumae_split3", "cross_subject", "cross_view")
CLASS_SPLITS = ("with_validation", "official")


@dataclasses.dataclass(eq=False)
class MmactConfig(tfds.core.BuilderConfig):
    """How to split the prepared clips.

    protocol: 'mumae_split3' | 'cross_subject' | 'cross_view'.
    class_split: 'with_validation' (`mumae_split3_with_validation(num_val, val_seed)`) or 'official'
      (`mumae_split3()`); ignored when `class_split_file` is set.
    class_split_file: a JSON class split (`ClassSplit.from_file`), or None.
    val_fraction, pretrain_seed, pretrain_unit, include_validation_classes: `splits.pretrain_split`.
    train_subjects / test_cameras: `splits.cross_subject` / `splits.cross_view`.
    """
    protocol: str = "mumae_split3"
    class_split: str = "with_validation"
    class_split_file: str | None = None
    num_val: int = 5
    val_seed: int = 0
    val_fraction: float = 0.2
    pretrain_seed: int = 0
    pretrain_unit: str = "clip"
    include_validation_classes: bool = False
    train_subjects: tuple = S.DEFAULT_TRAIN_SUBJECTS
    test_cameras: tuple = S.DEFAULT_TEST_CAMERAS


_OVERRIDABLE = tuple(f.name for f in dataclasses.fields(MmactConfig)
                     if f.name not in {f2.name for f2 in dataclasses.fields(tfds.core.BuilderConfig)})


# ----------------------------------------------------------------------------------------------------
# Records and rule-based splits (no TFDS)
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClipRec:
    """A kept clip of the manifest (satisfies `splits.ClipRecord`)."""
    clip: str
    action: str
    subject: int
    scene: int
    session: int
    camera: int
    shard: str


def kept_records(prepared_dir: str | os.PathLike) -> list[ClipRec]:
    """The kept clips listed in `<prepared_dir>/manifest.jsonl`, sorted by clip name."""
    path = Path(prepared_dir) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {prepared_dir} the --out of prepare_mmact?")
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        if e.get("status") != "kept":
            continue
        out.append(ClipRec(clip=e["clip"], action=e["action"], subject=int(e["subject"]), scene=int(e["scene"]),
                           session=int(e["session"]), camera=int(e["camera"]), shard=e["shard"]))
    return sorted(out, key=lambda r: r.clip)


def class_split_for(config: MmactConfig) -> S.ClassSplit:
    """The ClassSplit of a config: its `class_split_file`, else the Mu-MAE split 3 variant."""
    if config.class_split_file:
        return S.ClassSplit.from_file(config.class_split_file)
    if config.class_split not in CLASS_SPLITS:
        raise ValueError(f"unknown class_split {config.class_split!r}; expected one of {CLASS_SPLITS}")
    if config.class_split == "official":
        return S.mumae_split3()
    return S.mumae_split3_with_validation(int(config.num_val), int(config.val_seed))


def split_records(records: Sequence[S.ClipRecord], config: MmactConfig) -> dict[str, list]:
    """{split name: records} by the rules of `splits.py` (each list sorted by `record_sort_key`).
    Raises ValueError naming any class that is in none of the class split's lists."""
    cs = class_split_for(config)
    unknown = S.unknown_classes(records, cs)
    if unknown:
        listed = ", ".join(f"{k!r} ({n} clips)" for k, n in unknown.items())
        raise ValueError(f"prepared clips have classes in no list of the class split {cs.name!r}: {listed}. "
                         "Add them to a class split file (class_split_file=...) or drop those clips.")
    if config.protocol == "mumae_split3":
        kw = dict(val_fraction=float(config.val_fraction), seed=int(config.pretrain_seed),
                  include_validation_classes=bool(config.include_validation_classes), unit=config.pretrain_unit)
        out = {"pretrain_train": S.pretrain_split(records, cs, "train", **kw),
               "pretrain_val": S.pretrain_split(records, cs, "val", **kw),
               "meta_train": S.meta_split(records, cs, "base")}
        if cs.validation:
            out["meta_val"] = S.meta_split(records, cs, "validation")
        out["meta_test"] = S.meta_split(records, cs, "novel")
        return out
    if config.protocol == "cross_subject":
        return {p: S.cross_subject(records, tuple(config.train_subjects), p, classes=cs) for p in ("train", "test")}
    if config.protocol == "cross_view":
        return {p: S.cross_view(records, tuple(config.test_cameras), p, classes=cs) for p in ("train", "test")}
    raise ValueError(f"unknown protocol {config.protocol!r}; expected one of {PROTOCOLS}")


def process_split(split: str, process_index: int, process_count: int, *, drop_remainder: bool = False) -> str:
    """This process's part of `split` for multi-host input: `tfds.even_splits(split, process_count)
    [process_index]` — the semantics of `tfds.split_for_jax_process(split)`, without importing JAX.
    The parts are disjoint, cover the split (sizes differ by at most 1), and are contiguous ranges
    in the stored order. With drop_remainder=True every part has floor(n / process_count) examples."""
    if not 0 <= int(process_index) < int(process_count):
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    return tfds.even_splits(split, n=int(process_count), drop_remainder=drop_remainder)[int(process_index)]
