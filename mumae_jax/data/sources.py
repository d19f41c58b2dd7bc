"""One interface over the datasets: `get_source(config.data)` -> a `DataSource`.

A source gives everything a stage reads from a dataset: its clip records, its class split, the number of
pretraining examples, the pretraining input, the episode input and the clip input of the evaluators. The
embedded synthetic data (`SyntheticSource`) and prepared MMAct (`MmactSource`) are its two implementations;
a new dataset is one more subclass in `SOURCES`. What a clip becomes (frames, size, sensor length, sensors)
travels as one frozen `ClipGeometry`.

Parts of the class split and where prepared MMAct keeps their clips (`PART_SPLITS`): base -> TFDS split
meta_train, validation -> meta_val, novel -> meta_test.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mumae_jax.data import episodes as E
from mumae_jax.data import splits

PART_SPLITS = {"base": "meta_train", "validation": "meta_val", "novel": "meta_test"}


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    """What one clip becomes: `num_frames` frames of `image_size`² (pretraining: every `frame_stride`-th frame;
    episodes: resized to `resize_to` then centre-cropped) and each of `sensors` as [sensor_length, 3]."""

    num_frames: int
    image_size: int
    sensor_length: int
    sensors: tuple[str, ...]
    frame_stride: int = 2
    resize_to: int = 0  # 0: round(image_size · 256 / 224), the official 224 -> 256 ratio

    def __post_init__(self):
        object.__setattr__(self, "sensors", tuple(self.sensors))
        if not self.resize_to:
            object.__setattr__(self, "resize_to", round(self.image_size * 256 / 224))

    @classmethod
    def from_specs(cls, specs, frame_stride: int = 2) -> "ClipGeometry":
        """The geometry a pretraining model's modality specs fix (one frame modality; series of one length)."""
        from mumae_jax.models import kinds

        video = [s for s in specs if kinds.of(s).frames]
        series = [s for s in specs if not kinds.of(s).frames]
        if len(video) != 1:
            raise ValueError("the pretraining input pipeline feeds exactly one video modality")
        lengths = {s.input_shape[0] for s in series}
        if len(lengths) > 1:
            raise ValueError(f"all sensor modalities must have the same length, got {sorted(lengths)}")
        return cls(num_frames=video[0].input_shape[0], image_size=video[0].input_shape[1],
                   sensor_length=lengths.pop() if lengths else 128, sensors=tuple(s.name for s in series),
                   frame_stride=frame_stride)

    def episode_kwargs(self) -> dict:
        """The geometry keywords of `episode_input.build_episode_input` / `build_clip_input`."""
        return dict(sensors=self.sensors, seq_len=self.num_frames, image_size=self.image_size,
                    resize_to=self.resize_to, sensor_length=self.sensor_length)

    def pretrain_kwargs(self) -> dict:
        """The geometry keywords of the pretraining input builders."""
        return dict(num_frames=self.num_frames, frame_stride=self.frame_stride, image_size=self.image_size,
                    sensor_length=self.sensor_length, sensors=self.sensors)


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

        return episode_input.build_episode_input(self.cfg, episode_list, train=train, seed=seed,
                                                 split=PART_SPLITS[part], start=start, repeat=repeat,
                                                 **geometry.episode_kwargs())

    def clip_input(self, clip_names: Sequence[str], geometry: ClipGeometry, *, part: str,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches of single clips processed as evaluation-episode clips; see `episode_input.build_clip_input`."""
        from mumae_jax.data import episode_input

        return episode_input.build_clip_input(self.cfg, clip_names, split=PART_SPLITS[part], batch_size=batch_size,
                                              **geometry.episode_kwargs())


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

        return input_pipeline.build_pretrain_input(self.cfg, **geometry.pretrain_kwargs(), **kw)


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

        return mmact_input.build_mmact_pretrain_input(self.cfg, **geometry.pretrain_kwargs(), **kw)


SOURCES = {cls.name: cls for cls in (SyntheticSource, MmactSource)}


def get_source(data_cfg: Mapping[str, Any]) -> DataSource:
    """The `DataSource` of a config's `data` block (by its `name`)."""
    name = _plain(data_cfg).get("name")
    if name not in SOURCES:
        raise ValueError(f"unsupported dataset name {name!r}; supported: {', '.join(SOURCES)}")
    return SOURCES[name](data_cfg)
