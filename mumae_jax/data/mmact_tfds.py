"""TFDS dataset `mmact`: a prepared MMAct directory (the output of `prepare_mmact`) as a TFDS dataset,
with the rule-based splits of `splits.py`, stored as tfrecord (for `as_dataset` / `tfds.load`) plus an
array_record copy (for random access: `as_data_source` / `tfds.data_source`).

    from mumae_jax.data import mmact_tfds
    builder = mmact_tfds.build("/data/mmact_prepared", "/data/tfds")            # config 'mumae_split3'
    ds = builder.as_dataset(split="meta_train")                                # or mmact_tfds.load(...)
    src = builder.as_data_source(split="meta_test")                            # random access
    ds = builder.as_dataset(split=mmact_tfds.process_split("pretrain_train",
                                                           jax.process_index(), jax.process_count()))

Storage: tfds 4.9.10 cannot `as_dataset` array_record files (NotImplementedError) and cannot
`as_data_source` tfrecord files, so `build` writes the tfds tfrecord shards and then
`add_array_record` copies every shard's serialized examples unchanged into an array_record shard of the
same length, registered as an alternative file format in dataset_info.json (disk use ~2x). Both read
paths then work on the same builder and data_dir (`Mmact.as_data_source` works around two tfds bugs,
see there). `tfds.load('mmact/<config>', data_dir=...)` / `tfds.data_source(...)` work once this
module is imported (which registers `mmact`), for the four named configs.

The builder never downloads anything: it reads the prepared shards (`clips-*.tfrecord`) and
`manifest.jsonl` from `prepared_dir` (constructor argument) or, if that is not given, from
`tfds.download.DownloadConfig(manual_dir=...)`.

Features of one example (one clip):
- `video`: `tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg')`. The prepared JPEG
  bytes are stored as they are (no re-encoding). Decoded with TF (`as_dataset`), they equal
  `prepare_mmact.read_prepared`'s frames exactly. `data_source` decodes with OpenCV or PIL, whose
  pixels may differ from TF's JPEG decoder by a few levels (decoder implementation / IDCT settings).
- `sensors`: `{name: {'values': float32 [L, 3], 'timestamps': float64 [L]}}` for each sensor of the
  prepare run (summary.json `options.sensors`; MMAct's four by default), raw (not normalised).
- `label`: `ClassLabel` over the class split's sorted class list (`ClassSplit.all_classes`), so
  `label` is the global class id of the official one-shot code (`ClassSplit.class_to_id`). It is
  recomputed from `action`; the prepared `label` is not used.
- `clip`, `action` (Text); `subject`, `camera`, `scene`, `session`, `num_frames` (int64); `fps` (float32).

Builder configs, the records of the manifest and the rule-based splits: `mmact_splits.py` (re-exported here).

A clip whose action is in no list of the class split makes the build raise a `ValueError` naming
the classes (`splits.py`'s unknown-class rule); nothing is guessed. A split with no clips (e.g.
`cross_view` `test` on data without camera 4) is left out with a warning (not written empty); the
splits that exist are in `builder.info.splits`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from mumae_jax.data import mmact_layout as L
from mumae_jax.data import mmact_shards as P
from mumae_jax.data import splits as S
from mumae_jax.data.mmact_splits import (_OVERRIDABLE, PROTOCOLS, ClipRec, MmactConfig, class_split_for,
                                         kept_records, process_split, split_records)

# file names prepare_mmact gives its shards (mmact_shards.SHARD_PATTERN with its two numbers as digits)
_PREPARED_SHARD = re.escape(P.SHARD_PATTERN.format(index=0, count=0)).replace("00000", r"\d+")

__all__ = ["MmactConfig", "Mmact", "ClipRec", "kept_records", "class_split_for", "split_records",
           "process_split", "add_array_record", "build", "load", "data_source", "VERSION", "PROTOCOLS"]

log = logging.getLogger(__name__)

VERSION = tfds.core.Version("1.0.0")
# ----------------------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------------------

def _sensor_names(prepared_dir) -> list[str] | None:
    if prepared_dir is None:
        return None
    p = Path(prepared_dir) / "summary.json"
    if not p.is_file():
        return None
    return list(json.loads(p.read_text())["options"]["sensors"])


def _derived_config(base: MmactConfig, overrides: Mapping[str, Any]) -> MmactConfig:
    bad = sorted(set(overrides) - set(_OVERRIDABLE))
    if bad:
        raise ValueError(f"unknown MmactConfig fields {bad}; allowed: {', '.join(_OVERRIDABLE)}")
    ov = dict(overrides)
    for k in ("train_subjects", "test_cameras"):
        if k in ov:
            ov[k] = tuple(int(x) for x in ov[k])
    if ov.get("class_split_file") is not None:
        ov["class_split_file"] = os.fspath(ov["class_split_file"])
    cfg = dataclasses.replace(base, **ov)
    key = {k: getattr(cfg, k) for k in _OVERRIDABLE}
    key["class_split_file"] = None
    if cfg.class_split_file:  # the content, not the path, names the config
        key["class_split_content"] = S.ClassSplit.from_file(cfg.class_split_file).to_config()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:8]
    cfg.name = f"{base.name}_{digest}"
    if cfg.class_split_file:  # the user's split, not the base config's Mu-MAE one
        cs = S.ClassSplit.from_file(cfg.class_split_file)
        described = (f"Class split {cs.name!r} from {cfg.class_split_file} ({len(cs.base)} base / "
                     f"{len(cs.validation)} validation / {len(cs.novel)} novel classes).")
    else:
        described = base.description
    others = sorted(k for k in ov if k != "class_split_file")
    cfg.description = described + (f" Overrides: {', '.join(f'{k}={ov[k]}' for k in others)}." if others else "")
    return cfg


class Mmact(tfds.core.GeneratorBasedBuilder):
    """MMAct (prepared by `prepare_mmact`) with the Mu-MAE / MMAct rule-based splits."""

    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "First version: prepared MMAct shards, rule-based splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Run `python -m mumae_jax.data.prepare_mmact --src <MMAct> --out <DIR>` and "
                                    "pass prepared_dir=<DIR> (or DownloadConfig(manual_dir=<DIR>)).")
    BUILDER_CONFIGS = [
        MmactConfig(name="mumae_split3", description="Mu-MAE split 3, 5 base classes moved to validation "
                    "(mumae_split3_with_validation)."),
        MmactConfig(name="mumae_split3_official", class_split="official",
                    description="Official Mu-MAE split 3 (23 base / 10 novel, no validation classes)."),
        MmactConfig(name="cross_subject", protocol="cross_subject",
                    description="MMAct cross-subject: train subjects 1-16, test the others."),
        MmactConfig(name="cross_view", protocol="cross_view",
                    description="MMAct cross-view: test camera 4, train the others."),
    ]
    DEFAULT_CONFIG_NAME = "mumae_split3"
    # tfds' own `code_path` lookup needs the `importlib_resources` backport (not installed here) for
    # builders inside a regular package; this is where it would find it. Only used to look for an
    # (absent, not needed) checksums.tsv next to this file.
    code_path = epath.Path(__file__)

    def __init__(self, *, prepared_dir: str | os.PathLike | None = None, sensors: Sequence[str] | None = None,
                 class_split_file: str | os.PathLike | None = None, config: Any = None,
                 config_overrides: Mapping[str, Any] | None = None, **kwargs):
        """prepared_dir: the prepare command's --out (or pass DownloadConfig(manual_dir=...)).
        sensors: sensor names; default from prepared_dir/summary.json, else MMAct's four (needed to read
        a built dataset without its prepared dir when other sensors were used).
        class_split_file / config_overrides: derive a config (see the module docstring).
        Other kwargs (data_dir, version, file_format, ...) go to tfds; use file_format='tfrecord' (the
        helpers do) and `add_array_record` for random access: tfds cannot `as_dataset` array_record."""
        self._prepared_dir = None if prepared_dir is None else os.fspath(prepared_dir)
        self._sensors = list(sensors) if sensors is not None else (_sensor_names(self._prepared_dir)
                                                                   or list(L.DEFAULT_SENSORS))
        overrides = dict(config_overrides or {})
        if class_split_file is not None:
            overrides["class_split_file"] = class_split_file
        if overrides:
            name = config or self.DEFAULT_CONFIG_NAME
            base = name if isinstance(name, MmactConfig) else self.builder_configs[name]
            config = _derived_config(base, overrides)
        super().__init__(config=config, **kwargs)

    def as_data_source(self, *args, **kwargs):
        """tfds' `as_data_source`, after restoring the alternative file formats (array_record, see
        `add_array_record`) that tfds 4.9 reads from dataset_info.json into the proto only, not into
        `info.alternative_file_formats`, which `as_data_source` checks. tfds also switches
        `info.file_format` to array_record for good, which breaks a later `as_dataset`; the sources
        resolve their files when created, so the tfrecord format is restored afterwards."""
        from tensorflow_datasets.core import file_adapters as FA

        info = self.info
        for v in list(info.as_proto.alternative_file_formats):
            f = FA.FileFormat.from_value(v)
            if f not in info.alternative_file_formats:
                info.alternative_file_formats.append(f)  # the list tfds keeps (the proto already has it)
        before = info.file_format
        try:
            return super().as_data_source(*args, **kwargs)
        finally:
            if before is not None and info.file_format != before:
                info.set_file_format(before, override=True, override_if_initialized=True)

    @property
    def sensors(self) -> list[str]:
        return list(self._sensors)

    def _info(self) -> tfds.core.DatasetInfo:
        cs = class_split_for(self.builder_config)
        sensor = tfds.features.FeaturesDict({
            "values": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
            # BYTES: raw little-endian float64. The default encoding would store a float_list, i.e.
            # float32, which rounds epoch-millisecond timestamps by ~100 ms.
            "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.float64,
                                               encoding=tfds.features.Encoding.BYTES),
        })
        features = tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
            "sensors": tfds.features.FeaturesDict({s: sensor for s in self._sensors}),
            "label": tfds.features.ClassLabel(names=list(cs.all_classes)),
            "clip": tfds.features.Text(), "action": tfds.features.Text(),
            "subject": tfds.features.Scalar(dtype=np.int64), "camera": tfds.features.Scalar(dtype=np.int64),
            "scene": tfds.features.Scalar(dtype=np.int64), "session": tfds.features.Scalar(dtype=np.int64),
            "num_frames": tfds.features.Scalar(dtype=np.int64), "fps": tfds.features.Scalar(dtype=np.float32),
        })
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=f"MMAct clips prepared by prepare_mmact; config {cfg.name}: "
                                      f"{cfg.description} Class split {cs.name}.",
            features=features, supervised_keys=None,
            homepage="https://mmact19.github.io/2019/",
            metadata=tfds.core.MetadataDict(class_split=cs.to_config(), sensors=list(self._sensors)))

    def _prepared(self, dl_manager) -> Path:
        d = self._prepared_dir
        if d is None:
            try:
                d = dl_manager.manual_dir
            except Exception as e:  # noqa: BLE001 — tfds raises AssertionError when it does not exist
                raise ValueError(f"no prepared MMAct directory: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from e
        d = Path(os.fspath(d))
        if not P.shard_paths(d):
            raise FileNotFoundError(f"no clips-*.tfrecord shards in {d}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        got = _sensor_names(d)
        if got is not None and got != self._sensors:
            raise ValueError(f"{d} was prepared with sensors {got}, the builder has {self._sensors}; "
                             "pass prepared_dir= to the constructor (or sensors=)")
        return d

    def _split_generators(self, dl_manager):
        d = self._prepared(dl_manager)
        parts = split_records(kept_records(d), self.builder_config)
        gens = {}
        for name, recs in parts.items():
            if not recs:
                log.warning("mmact/%s: split %r has no clips in %s; left out", self.builder_config.name, name, d)
                continue
            gens[name] = self._generate_examples(d, recs)
        if not gens:
            raise ValueError(f"no split of config {self.builder_config.name!r} has any clip in {d}")
        return gens

    def _generate_examples(self, prepared: Path, recs: Sequence[ClipRec]) -> Iterator[tuple[str, dict]]:
        wanted = {r.clip for r in recs}
        shards = sorted({r.shard for r in recs})
        spec = P.parsing_spec(self._sensors)
        files = [str(prepared / s) for s in shards]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"shards listed in {prepared}/manifest.jsonl are missing: {missing}")
        seen = set()
        for ser in _records(files):
            ex = tf.io.parse_single_example(ser, spec)
            clip = ex["clip"].numpy().decode()
            if clip not in wanted:
                continue
            if clip in seen:
                raise ValueError(f"clip {clip} appears twice in {prepared}")
            seen.add(clip)
            sensors = {}
            for s in self._sensors:
                vals = ex[f"sensor/{s}/values"].values.numpy().reshape(-1, 3)
                ts = np.frombuffer(ex[f"sensor/{s}/timestamps"].numpy(), dtype="<f8").astype(np.float64)
                sensors[s] = {"values": vals.astype(np.float32), "timestamps": ts}
            frames = list(ex["frames"].values.numpy())
            yield clip, {
                "video": frames,  # JPEG bytes, stored unchanged
                "sensors": sensors,
                "label": ex["action"].numpy().decode(),  # ClassLabel maps the name to the global id
                "clip": clip, "action": ex["action"].numpy().decode(),
                "subject": int(ex["subject"]), "camera": int(ex["camera"]), "scene": int(ex["scene"]),
                "session": int(ex["session"]), "num_frames": len(frames), "fps": float(ex["fps"]),
            }
        lost = sorted(wanted - seen)
        if lost:
            raise ValueError(f"{len(lost)} clips of manifest.jsonl are not in their shards in {prepared}: {lost[:5]}")


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------

def _records(files: Sequence[str]) -> Iterator[bytes]:
    """The serialized records of TFRecord `files`, one file after the other; a damaged file is an error
    naming it (tf.data's own DataLossError does not say which file)."""
    for f in files:
        try:
            yield from tf.data.TFRecordDataset(f).as_numpy_iterator()
        except tf.errors.DataLossError as e:
            what = re.search(r"(corrupted|truncated) record at \d+", e.message)
            name = os.path.basename(f)
            if re.fullmatch(_PREPARED_SHARD, name):  # a prepare_mmact shard
                fix = (f"prepare it again: python -m mumae_jax.data.prepare_mmact rewrites the shards whose sidecar "
                       f"is missing (delete {name[:-len('.tfrecord')]}.json)")
            else:  # a shard of the built TFDS dataset
                fix = f"build the dataset again: delete {os.path.dirname(f)}"
            raise ValueError(f"{f} is damaged ({what.group(0) if what else e.message.splitlines()[0][:200]}); "
                             f"{fix}") from None


def _builder(data_dir, config, prepared_dir=None, *, sensors=None, class_split_file=None,
             **overrides) -> Mmact:
    return Mmact(prepared_dir=prepared_dir, sensors=sensors, class_split_file=class_split_file, config=config,
                 config_overrides=overrides or None, data_dir=os.fspath(data_dir), file_format="tfrecord")


def add_array_record(builder: Mmact) -> None:
    """Write an array_record copy of every tfrecord shard of a built dataset (same serialized
    examples, same shard lengths) and record it in dataset_info.json as an alternative file format,
    so that `as_data_source` (random access) works next to `as_dataset`. Idempotent."""
    from tensorflow_datasets.core import file_adapters as FA

    ar = FA.FileFormat.ARRAY_RECORD
    path = Path(os.fspath(builder.data_path))
    shards = sorted(p for p in path.iterdir() if ".tfrecord-" in p.name and p.name.startswith(f"{builder.name}-"))
    copies = [path / p.name.replace(".tfrecord-", ".array_record-") for p in shards]
    # tfds 4.9 keeps the recorded alternative formats in the proto only (see Mmact.as_data_source)
    recorded = {FA.FileFormat.from_value(v) for v in builder.info.as_proto.alternative_file_formats}
    if builder.info.file_format == ar or (ar in recorded and all(c.exists() for c in copies)):
        return  # built before: a later open only reads
    for p, dst in zip(shards, copies):
        tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")  # unique: never another process's file
        FA.ADAPTER_FOR_FORMAT[ar].write_examples(
            tmp, ((None, ser) for ser in _records([str(p)])))
        os.replace(tmp, dst)
    if ar not in recorded:
        builder.info.add_alternative_file_format(ar)
        builder.info.write_to_directory(os.fspath(builder.data_path))


def build(prepared_dir: str | os.PathLike, data_dir: str | os.PathLike, config: str = "mumae_split3", *,
          sensors: Sequence[str] | None = None, class_split_file: str | os.PathLike | None = None,
          random_access: bool = True, overwrite: bool = False, **overrides) -> Mmact:
    """Build (offline) the `mmact/<config>` dataset from a prepared directory into data_dir; returns
    the builder. `overrides` are MmactConfig fields (e.g. val_fraction=0.3, train_subjects=(1, 2)).
    Storage: tfrecord shards (for `as_dataset`; tfds 4.9 cannot `as_dataset` array_record) plus, with
    random_access=True, an array_record copy (`add_array_record`) for `as_data_source`.
    An existing finished build of the same (derived) config and version is reused (it is NOT checked
    against the prepared directory: after re-preparing, pass overwrite=True to regenerate)."""
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    with _build_lock(data_dir):
        b = _builder(data_dir, config, prepared_dir, sensors=sensors, class_split_file=class_split_file,
                     **overrides)
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(prepared_dir), download_mode=mode))
        if random_access:
            add_array_record(b)
    return b


@contextlib.contextmanager
def _build_lock(data_dir):
    """One builder at a time per local data_dir (runs started together, hosts sharing a file system):
    `flock` on data_dir/.build.lock, which the kernel drops if the holder dies; the second builder then
    finds the finished build and only reads it. Object stores (gs://) get no lock."""
    if "://" in os.fspath(data_dir):
        yield
        return
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".build.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(data_dir: str | os.PathLike, split: str, config: str = "mumae_split3", *, prepared_dir=None,
         sensors: Sequence[str] | None = None, class_split_file=None, shuffle_files: bool = False,
         decoders=None, read_config=None, **overrides) -> tf.data.Dataset:
    """`as_dataset(split)` of a built `mmact/<config>` (built first from prepared_dir if given).
    Pass the same sensors / class_split_file / overrides as for `build`."""
    if prepared_dir is not None:
        b = build(prepared_dir, data_dir, config, sensors=sensors, class_split_file=class_split_file, **overrides)
    else:
        b = _builder(data_dir, config, sensors=sensors, class_split_file=class_split_file, **overrides)
    return b.as_dataset(split=split, shuffle_files=shuffle_files, decoders=decoders, read_config=read_config)


def data_source(data_dir: str | os.PathLike, split: str, config: str = "mumae_split3", *, sensors=None,
                class_split_file=None, decoders=None, deserialize_method=None, **overrides):
    """Random-access source (`builder.as_data_source`) of a built `mmact/<config>` (needs its
    array_record copy, see `build(random_access=True)`). An example's `video` is a LIST of uint8
    [H, W, 3] frames (tfds' numpy decoding of a Video; `np.stack` it), decoded with PIL (no OpenCV
    here); `deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES` gives the stored
    `tf.train.Example` bytes. `tfds.decode.SkipDecoding()` for `video` is not supported by tfds'
    numpy decoding of sequences (AttributeError)."""
    b = _builder(data_dir, config, sensors=sensors, class_split_file=class_split_file, **overrides)
    kw = {} if deserialize_method is None else {"deserialize_method": deserialize_method}
    return b.as_data_source(split=split, decoders=decoders, **kw)
