"""One interface over the datasets: `get_source(config.data)` -> a `DataSource`.

A source gives everything a stage reads from a dataset: its clip records, its class split, the number of
pretraining examples, the pretraining input, the episode input and the clip input of the evaluators. The
embedded synthetic data (`SyntheticSource`) and prepared MMAct (`MmactSource`) are its two implementations;
a new dataset is one more subclass in `SOURCES`. What a clip becomes (frames, size, sensor length, sensors)
travels as one frozen `ClipGeometry` (`data/geometry.py`) into every input builder.

Parts of the class split and where prepared MMAct keeps their clips (`PART_SPLITS`): base -> TFDS split
meta_train, validation -> meta_val, novel -> meta_test.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from mumae_jax.data.geometry import ClipGeometry

PART_SPLITS = {"base": "meta_train", "validation": "meta_val", "novel": "meta_test"}


def _plain(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


class DataSource:
    """A dataset behind one interface; `cfg` is the config's `data` block."""

    name = ""

    def __init__(self, data_cfg: Mapping[str, Any]):
        self.cfg = data_cfg

    def records(self) -> list:
        """Every clip record (name, action, subject, ...) of the dataset."""
        raise NotImplementedError

    def class_split(self, num_val: int = 5, val_seed: int = 0, class_split_file: str = "") -> splits.ClassSplit:
        """`class_split_file` if given, else the data config's `class_split_file`, else Mu-MAE split 3 with
        `num_val` validation classes."""
        f = class_split_file or _plain(self.cfg).get("class_split_file") or ""
        return splits.resolve_class_split(f, num_val, val_seed)

    def num_examples(self, sensors: Sequence[str]) -> int:
        """Pretraining examples per epoch of `cfg.split` (clips x repeated_sampling)."""
        raise NotImplementedError

    def pretrain_input(self, geometry: ClipGeometry, *, global_batch_size: int, seed: int, start_step: int = 0,
                       process_index: int = 0, process_count: int = 1,
                       augment: Any = None) -> tuple[Iterator[dict[str, np.ndarray]], int]:
        """(iterator of host-local batches, examples in the split); see `input_pipeline.build_pretrain_input`."""
        raise NotImplementedError

    def episode_input(self, episode_list: Sequence[E.Episode], geometry: ClipGeometry, *, part: str, train: bool,
                      seed: int = 0, start: int = 0, repeat: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Processed episodes of `episode_list` (clips of class-split part `part`); see
        `episode_input.build_episode_input`."""
        from mumae_jax.data import episode_input

        return episode_input.build_episode_input(self.cfg, episode_list, geometry, train=train, seed=seed,
                                                 split=PART_SPLITS[part], start=start, repeat=repeat)

    def clip_input(self, clip_names: Sequence[str], geometry: ClipGeometry, *, part: str,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of single clips processed as evaluation-episode clips; see `episode_input.build_clip_input`."""
        from mumae_jax.data import episode_input

        return episode_input.build_clip_input(self.cfg, clip_names, geometry, split=PART_SPLITS[part],
                                              batch_size=batch_size)


class SyntheticSource(DataSource):
    """The embedded procedural dataset (`data/synthetic.py`), rendered on the fly."""

    name = "synthetic"

    def records(self):
        from mumae_jax.data import input_pipeline

        return input_pipeline.make_dataset({**_plain(self.cfg), "split": "all"})[1]

    def num_examples(self, sensors):
        from mumae_jax.data import input_pipeline

        return len(input_pipeline.make_dataset(self.cfg)[1]) * input_pipeline.repeated_sampling(self.cfg)

    def pretrain_input(self, geometry, **kw):
        from mumae_jax.data import input_pipeline

        return input_pipeline.build_pretrain_input(self.cfg, geometry, **kw)


class MmactSource(DataSource):
    """MMAct prepared by `python -m mumae_jax.data.prepare_mmact` (TFDS `mmact` over its shards)."""

    name = "mmact"

    def records(self):
        from mumae_jax.data import mmact_tfds

        return mmact_tfds.kept_records(_plain(self.cfg)["dir"])

    def num_examples(self, sensors):
        from mumae_jax.data import input_pipeline, mmact_input

        return len(mmact_input.open_split(self.cfg, sensors)[0]) * input_pipeline.repeated_sampling(self.cfg)

    def pretrain_input(self, geometry, **kw):
        from mumae_jax.data import mmact_input

        return mmact_input.build_mmact_pretrain_input(self.cfg, geometry, **kw)


SOURCES = {cls.name: cls for cls in (SyntheticSource, MmactSource)}


def get_source(data_cfg: Mapping[str, Any]) -> DataSource:
    """The `DataSource` of a config's `data` block (by its `name`)."""
    name = _plain(data_cfg).get("name")
    if name not in SOURCES:
        raise ValueError(f"unsupported dataset name {name!r}; supported: {', '.join(SOURCES)}")
    return SOURCES[name](data_cfg)
