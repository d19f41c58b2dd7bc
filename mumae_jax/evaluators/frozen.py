"""Few-shot evaluation of a frozen pretrained Mu-MAE encoder (no meta-training).

clips of an episode list --(episode_input.build_clip_input: evaluation transform)--> MAEFeatureEncoder
(eval mode, every token visible) --> features [n, D], extracted ONCE per unique clip --> gathered into
support [E, S, D] / query [E, Q, D] --> `fewshot_probes.evaluate` (prototype, kNN, ridge, linear).

Modality groups (`modality_groups`): several encoders can be evaluated on one list in one pass over the
clips, each fed only its group's modalities: `all` (every modality of the pretraining model), `video`,
`sensors`, a modality name, or names joined by `+` (`acc_watch+gyro`). They share the weights (of the
checkpoint, or of ONE random init); only the fresh `fc_norm*` are per encoder. The feature itself:
`pooling` ('mean': the official mean over all tokens, [n, D]; 'modality': one block per modality,
[n, n_modalities·D]; 'tokens': each modality's token layout, [n, Σ tokens·D]) and `feature_depth` (0: every block; k: the output of the first k blocks), see
`mae_features`.

Geometry (`default_geometry`): seq_len frames (default: the pretraining num_frames; a multiple of the
tubelet's time size), image_size (default: the pretraining size), resize_to (default:
round(image_size · 256/224), the official 224 -> 256 ratio), sensor_length (default: the pretraining one).

Episode lists: a saved file, or drawn by `draw_episode_list` (`queries` per episode: official = all
from one class, trx = as many from every class) from a class split: `class_split_file` if given, else
the data config's `class_split_file`, else `splits.mumae_split3_with_validation(num_val, val_seed)`.
Prepared MMAct reads the clips of part 'novel' / 'validation' / 'base' from TFDS split meta_test /
meta_val / meta_train (built with the data config's class split: a clip that is not in the split read is
an error naming it; `split=` picks another).

Also used during pretraining (`PeriodicEvaluator`, config.evals.fewshot) on the live parameters.
Command line: `frozen_cli.py` (`python -m mumae_jax.evaluators.frozen ...` runs it).
"""
from __future__ import annotations

import functools
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from mumae_jax.core import checkpointing, sharding
from mumae_jax.evaluators import fewshot_probes
from mumae_jax.weights import pretrained
from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from mumae_jax.models import kinds, mae_features

PART_TO_TFDS_SPLIT = {"novel": "meta_test", "validation": "meta_val", "base": "meta_train"}
DEFAULT_PROBES = ("prototype", "knn", "ridge", "linear")


def _plain(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


# ----------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------

def default_geometry(pretrain_config, seq_len: int = 0, image_size: int = 0, resize_to: int = 0,
                     sensor_length: int = 0) -> dict[str, int]:
    """{seq_len, image_size, resize_to, sensor_length}; 0 = the default (module docstring)."""
    mods = pretrain_config.modality
    video = [mods[n] for n in pretrain_config.modalities if mods[n]["kind"] == "video"]
    sensors = [mods[n] for n in pretrain_config.modalities if mods[n]["kind"] == "sensor"]
    if len(video) != 1:
        raise ValueError("frozen evaluation needs exactly one video modality in the pretraining model")
    seq_len = int(seq_len or video[0]["num_frames"])
    tube_t = int(video[0]["tubelet"][0])
    if seq_len < 1 or seq_len % tube_t:
        raise ValueError(f"seq_len={seq_len} must be a positive multiple of the tubelet time size {tube_t}")
    image_size = int(image_size or video[0]["image_size"])
    resize_to = int(resize_to or round(image_size * 256 / 224))
    if resize_to < image_size:
        raise ValueError(f"resize_to={resize_to} must be >= image_size={image_size}")
    sensor_length = int(sensor_length or (sensors[0]["length"] if sensors else 128))
    return dict(seq_len=seq_len, image_size=image_size, resize_to=resize_to, sensor_length=sensor_length)


def modality_groups(pretrain_config, groups: str | Sequence[str] = "all") -> dict[str, tuple[str, ...]]:
    """{group: its modality names, in the pretraining order} of a comma-separated string (or a list) of
    groups (module docstring). Unknown names, empty or repeated groups are a ValueError naming them."""
    names = tuple(pretrain_config.modalities)
    kinds = {n: pretrain_config.modality[n]["kind"] for n in names}
    words = {"all": names, "video": tuple(n for n in names if kinds[n] == "video"),
             "sensors": tuple(n for n in names if kinds[n] == "sensor")}
    listed = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups)]
    if not listed or not all(listed):
        raise ValueError(f"empty modality group in {groups!r}")
    out: dict[str, tuple[str, ...]] = {}
    for g in listed:
        if g in out:
            raise ValueError(f"modality group {g!r} is listed twice")
        picked = set()
        for part in g.split("+"):
            if part not in words and part not in names:
                raise ValueError(f"modality group {g!r}: unknown modality {part!r}; the pretraining model has "
                                 f"{', '.join(names)} (groups: all, video, sensors, or names joined by '+')")
            picked.update(words.get(part, (part,)))
        if not picked:
            raise ValueError(f"modality group {g!r} selects no modality of the pretraining model ({', '.join(names)})")
        out[g] = tuple(n for n in names if n in picked)
    return out


def make_encoder(pretrain_config, geometry: Mapping[str, int], normalize_video: bool = True, *,
                 modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0
                 ) -> mae_features.MAEFeatureEncoder:
    """The frozen feature encoder (no drop path) of the pretraining model for `geometry`, fed `modalities`
    (default: all)."""
    return mae_features.from_pretrain_config(
        pretrain_config, drop_path=0.0, normalize_video=normalize_video, num_frames=geometry["seq_len"],
        image_size=geometry["image_size"], sensor_length=geometry["sensor_length"], modalities=modalities,
        pooling=pooling, feature_depth=feature_depth)


def init_params(encoder: mae_features.MAEFeatureEncoder, seed: int = 0):
    """Randomly initialised encoder parameters (a baseline, or the tree `load_pretrained` fills)."""
    dummy = {s.name: jnp.zeros((1, *s.input_shape), jnp.float32) for s in encoder.specs}
    return jax.jit(lambda k: encoder.init(k, dummy, deterministic=True)["params"])(jax.random.key(seed))


def group_encoders(pretrain_config, groups: str | Sequence[str], geometry: Mapping[str, int],
                   source_params=None, *, seed: int = 0, normalize_video: bool = True, pooling: str = "mean",
                   feature_depth: int = 0) -> dict[str, tuple[mae_features.MAEFeatureEncoder, Any]]:
    """{group: (encoder fed only that group's modalities, params)} (`modality_groups`).

    Weights come from `source_params` (a `MultimodalMAE` tree; strict `load_pretrained`), or, if None, from
    ONE random init (`seed`) of the encoder of every modality, shared by all groups. fc_norm* start fresh.
    """
    kw = dict(normalize_video=normalize_video, feature_depth=feature_depth)
    if source_params is None:
        source_params = init_params(make_encoder(pretrain_config, geometry, **kw), seed)
    out = {}
    for g, mods in modality_groups(pretrain_config, groups).items():
        encoder = make_encoder(pretrain_config, geometry, modalities=mods, pooling=pooling, **kw)
        out[g] = (encoder, mae_features.load_pretrained(init_params(encoder, seed), source_params)[0])
    return out


def from_pretrain_config(pretrain_config, seed: int = 0, normalize_video: bool = True, *,
                         modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0,
                         **geometry):
    """(encoder, random-init params) of a pretraining config, without a checkpoint (baseline).

    `geometry`: seq_len, image_size, sensor_length as in `default_geometry` (resize_to is ignored).
    """
    encoder = make_encoder(pretrain_config, default_geometry(pretrain_config, **geometry), normalize_video,
                           modalities=modalities, pooling=pooling, feature_depth=feature_depth)
    return encoder, init_params(encoder, seed)


def from_pretrain_run(workdir: str, step: Optional[int] = None, *, mesh=None, normalize_video: bool = True,
                      modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0,
                      **geometry):
    """(encoder, params, step) from the latest (or given) checkpoint of a pretraining run.

    Every encoder weight comes from the checkpoint (`load_pretrained`, strict) except the fresh fc_norm*.
    `geometry` as in `from_pretrain_config`.
    """
    config, mae_params, step = pretrained.load_params(workdir, step, mesh)
    encoder, params = from_pretrain_config(config, normalize_video=normalize_video, modalities=modalities,
                                           pooling=pooling, feature_depth=feature_depth, **geometry)
    params, _ = mae_features.load_pretrained(params, mae_params)
    return encoder, params, step


# ----------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _feature_fn(encoder, mesh):
    """Jitted (params, inputs) -> features [B, D], replicated on every device."""
    return jax.jit(lambda p, x: encoder.apply({"params": p}, x, deterministic=True),
                   out_shardings=sharding.replicated(mesh))


def extract_features(encoder, params, data_cfg, clip_names: Sequence[str], **kw) -> np.ndarray:
    """Features float32 [len(clip_names), D] of the clips (`extract_group_features` of one encoder)."""
    return extract_group_features({"": (encoder, params)}, data_cfg, clip_names, **kw)[""]


def extract_group_features(models: Mapping[str, tuple], data_cfg, clip_names: Sequence[str], *, seq_len: int,
                           image_size: int, resize_to: int, sensor_length: int, split: str = "meta_test",
                           batch_size: int = 32, mesh=None, progress: bool = False) -> dict[str, np.ndarray]:
    """{group: features float32 [len(clip_names), encoder.feature_dim]} for models {group: (encoder, params)}.

    Each clip is read once (evaluation transform) and every encoder gets its own modalities of it (eval
    mode). Batches of `batch_size` (divisible by the device count) are sharded over `mesh` (default: all).
    """
    from mumae_jax.data import episode_input  # TensorFlow is imported only here

    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh, "the frozen evaluation's batch_size")
    rep = sharding.replicated(mesh)
    fns = {g: (enc, _feature_fn(enc, mesh), jax.device_put(p, rep)) for g, (enc, p) in models.items()}
    sensors = tuple(dict.fromkeys(s.name for enc, _ in models.values() for s in enc.specs if not kinds.of(s).frames))
    it = episode_input.build_clip_input(data_cfg, clip_names, sensors=sensors, seq_len=seq_len,
                                        image_size=image_size, resize_to=resize_to, sensor_length=sensor_length,
                                        split=split, batch_size=batch_size)
    n, procs, rank = len(clip_names), jax.process_count(), jax.process_index()
    share = batch_size // procs
    out = {g: np.zeros((n, enc.feature_dim), np.float32) for g, (enc, _, _) in fns.items()}
    try:
        for b in tqdm.tqdm(it, total=-(-n // batch_size), desc="features", unit="batch", disable=not progress):
            valid = b["index"] >= 0
            for g, (enc, fn, params) in fns.items():
                local = {s.name: b["video" if kinds.of(s).frames else s.name][rank * share:(rank + 1) * share]
                         for s in enc.specs}
                out[g][b["index"][valid]] = np.asarray(fn(params, sharding.to_global(local, mesh)), np.float32)[valid]
    finally:
        it.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------

def class_split(data_cfg, num_val: int = 5, val_seed: int = 0, class_split_file: str = "") -> splits.ClassSplit:
    """`class_split_file` if given, else the data config's `class_split_file`, else Mu-MAE split 3 with
    `num_val` validation classes."""
    f = class_split_file or _plain(data_cfg).get("class_split_file") or ""
    return splits.resolve_class_split(f, num_val, val_seed)


def records(data_cfg) -> list:
    """Every clip record of the dataset (synthetic: all classes; MMAct: the kept prepared clips)."""
    cfg = _plain(data_cfg)
    if cfg["name"] == "synthetic":
        from mumae_jax.data import input_pipeline

        return input_pipeline.make_dataset({**cfg, "split": "all"})[1]
    from mumae_jax.data import mmact_tfds

    return mmact_tfds.kept_records(cfg["dir"])


def list_queries(protocol: str, way: int, queries: int) -> int:
    """The `queries` of `episodes.make_episode_list` (official: per episode; trx: per class) that gives
    `queries` queries per episode; 0: one per class drawn from (1 for official, `way` for trx)."""
    if queries < 0 or (protocol == "trx" and queries % way):
        raise ValueError(f"queries={queries} per episode: must be >= 0, and a multiple of way={way} for protocol "
                         "'trx' (which draws as many queries from every class)")
    return max(queries // way, 1) if protocol == "trx" else max(queries, 1)


def draw_episode_list(data_cfg, *, part: str = "novel", way: int = 5, shot: int = 1, protocol: str = "official",
                      queries: int = 0, num_episodes: int = 1000, seed: int = 0, num_val: int = 5,
                      val_seed: int = 0, class_split_file: str = "") -> E.EpisodeList:
    """A deterministic list of episodes over the `part` classes of the class split (`class_split`), with
    `queries` queries per episode (`list_queries`)."""
    cs = class_split(data_cfg, num_val, val_seed, class_split_file)
    return E.make_episode_list(records(data_cfg), cs, part=part, way=way, shot=shot, protocol=protocol,
                               queries=list_queries(protocol, way, queries), num_episodes=num_episodes, seed=seed)


def evaluate_groups(models: Mapping[str, tuple], data_cfg, episode_list: Sequence[E.Episode], *,
                    probes: Sequence[str] = DEFAULT_PROBES, probe_options: Optional[Mapping[str, Any]] = None,
                    **feature_kw) -> dict[str, Any]:
    """Frozen-feature few-shot accuracy of each of `models` {group: (encoder, params)} on `episode_list`;
    `feature_kw` as in `extract_group_features` (geometry, split, batch_size, mesh, progress).

    Returns {"groups": {group: {probe: {"accuracy": %, "ci95": pp, "num_queries": E·Q}}}, "num_clips":
    unique clips, "num_queries": E·Q, "seconds": wall time}.
    """
    t0 = time.perf_counter()
    if not episode_list:
        raise ValueError("the episode list is empty")
    if len({(len(e.classes), len(e.support), len(e.query)) for e in episode_list}) != 1:
        raise ValueError("all episodes of a list must have the same way, shot and query count")
    names = sorted({c for e in episode_list for c in (*e.support, *e.query)})
    feats = extract_group_features(models, data_cfg, names, **feature_kw)
    groups = {g: fewshot_probes.evaluate_on_episodes(f, names, episode_list, probes=tuple(probes),
                                                     **dict(probe_options or {}))
              for g, f in feats.items()}
    return {"groups": groups, "num_clips": len(names), "num_queries": sum(len(e.query) for e in episode_list),
            "seconds": time.perf_counter() - t0}


def evaluate_episodes(encoder, params, data_cfg, episode_list: Sequence[E.Episode], **kw) -> dict[str, Any]:
    """`evaluate_groups` of one encoder: {probe: {"accuracy", "ci95", "num_queries"}, "num_clips",
    "num_queries", "seconds"}."""
    res = evaluate_groups({"": (encoder, params)}, data_cfg, episode_list, **kw)
    return {**res.pop("groups")[""], **res}


def probe_results(results: Mapping[str, Any]) -> dict[str, dict]:
    """The per-probe entries of an `evaluate_episodes` result (for `fewshot_probes.format_table`)."""
    return {k: v for k, v in results.items() if isinstance(v, Mapping) and "accuracy" in v}


# ----------------------------------------------------------------------------------------------------
# During pretraining
# ----------------------------------------------------------------------------------------------------

class PeriodicEvaluator:
    """Few-shot probes on the live pretraining parameters (config.evals.fewshot).

    The encoders (one per entry of `modalities`, default 'all'; `pooling`, `feature_depth`), their fc_norm
    init and the episode list (`part`, `num_episodes`, `way`, `shot`, `protocol`, `queries` per episode,
    `seed`) are built once; each call copies the current `MultimodalMAE` parameters in (`load_pretrained`) and returns
    {"fewshot/<probe>_accuracy", "_ci95"} for group 'all' and "fewshot/<group>/<probe>_..." for others.
    """

    def __init__(self, pretrain_config, eval_cfg, mesh=None):
        self.cfg = cfg = dict(eval_cfg)
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.geometry = default_geometry(pretrain_config, seq_len=int(cfg.get("seq_len", 0)),
                                         image_size=int(cfg.get("image_size", 0)),
                                         resize_to=int(cfg.get("resize_to", 0)))
        groups = modality_groups(pretrain_config, cfg.get("modalities", "all"))
        kw = dict(pooling=cfg.get("pooling", "mean"), feature_depth=int(cfg.get("feature_depth", 0)))
        self.encoders = {g: make_encoder(pretrain_config, self.geometry, modalities=m, **kw) for g, m in groups.items()}
        self.init = {g: init_params(e, int(cfg.get("seed", 0))) for g, e in self.encoders.items()}
        part = cfg.get("part", "validation")
        self.data_cfg = _plain(pretrain_config.data)
        self.split = PART_TO_TFDS_SPLIT[part]
        self.episodes = draw_episode_list(self.data_cfg, part=part, way=int(cfg.get("way", 5)),
                                          shot=int(cfg.get("shot", 1)), protocol=cfg.get("protocol", "official"),
                                          queries=int(cfg.get("queries", 0)),
                                          num_episodes=int(cfg.get("num_episodes", 200)), seed=int(cfg.get("seed", 0)))
        self.probes = tuple(cfg.get("probes", ("prototype", "ridge")))

    def __call__(self, mae_params) -> dict[str, float]:
        models = {g: (e, mae_features.load_pretrained(self.init[g], mae_params)[0]) for g, e in self.encoders.items()}
        res = evaluate_groups(models, self.data_cfg, self.episodes, probes=self.probes, split=self.split,
                              batch_size=int(self.cfg.get("batch_size", 32)), mesh=self.mesh, **self.geometry)
        out = {}
        for g, r in res["groups"].items():
            prefix = "fewshot/" if g == "all" else f"fewshot/{g}/"
            for p in self.probes:
                out[f"{prefix}{p}_accuracy"] = r[p]["accuracy"]
                out[f"{prefix}{p}_ci95"] = r[p]["ci95"]
        return out


# ----------------------------------------------------------------------------------------------------
# A run or a config, as the command evaluates it
# ----------------------------------------------------------------------------------------------------

def evaluate_run(pretrain_workdir: str = "", *, config=None, step: Optional[int] = None, random_init: bool = False,
                 init_seed: int = 0, episodes: str = "", part: str = "novel", num_episodes: int = 1000,
                 episode_seed: int = 0, way: int = 5, shot: int = 1, protocol: str = "official", queries: int = 0,
                 num_val: int = 5, val_seed: int = 0, class_split_file: str = "", split: str = "",
                 probes: Sequence[str] = DEFAULT_PROBES, modalities: str | Sequence[str] = "all",
                 pooling: str = "mean", feature_depth: int = 0, seq_len: int = 0, image_size: int = 0,
                 resize_to: int = 0, sensor_length: int = 0, normalize_video: bool = True, batch_size: int = 32,
                 progress: bool = False) -> dict[str, Any]:
    """Frozen-feature few-shot accuracy of a pretraining run's checkpoint (`pretrain_workdir`; with
    `random_init`, its architecture with random weights) or of a pretraining `config` (an ml_collections
    config, random weights: needs `random_init`), on an episode list file or a drawn list, for every
    modality group of `modalities`; what the command prints. Exactly one of pretrain_workdir / config.
    `queries`: per episode of a drawn list (`list_queries`).

    Returns {"pretrain_workdir" (None with config), "step", "random_init", "init_seed", "episodes" (the file
    or how the list was drawn), "num_episodes", "num_queries", "geometry", "normalize_video", "pooling",
    "feature_depth", "modalities": {group: names}, "groups": {group: {probe: {"accuracy", "ci95",
    "num_queries"}}}, "num_clips", "seconds"}; with a single group also its <probe> entries at the top level.
    """
    if bool(pretrain_workdir) == (config is not None):
        raise ValueError("give exactly one of pretrain_workdir (a pretraining run) and config (a pretraining config, "
                         f"random weights); got {'both' if pretrain_workdir else 'neither'}")
    if config is not None and not random_init:
        raise ValueError("a config has no weights: pass random_init=True (--random_init), or evaluate a run with "
                         "pretrain_workdir (--pretrain_workdir)")
    if random_init and step is not None:
        raise ValueError(f"step={step} names a checkpoint, but random_init uses none")
    if config is not None and config.get("trainer") != "pretrain":
        raise ValueError(f"config must be a pretraining config, got trainer={config.get('trainer')!r}")
    if episodes and (queries or class_split_file):
        raise ValueError("queries and class_split_file apply to a drawn list; the episode list file fixes them")
    list_queries(protocol, way, queries)  # fails before any model is built
    source = None
    if config is None and random_init:
        config = pretrained.load_config(pretrain_workdir)
    elif config is None:
        config, source, step = pretrained.load_params(pretrain_workdir, step)
    geometry = default_geometry(config, seq_len=seq_len, image_size=image_size, resize_to=resize_to,
                                sensor_length=sensor_length)
    models = group_encoders(config, modalities, geometry, source, seed=init_seed, normalize_video=normalize_video,
                            pooling=pooling, feature_depth=feature_depth)
    data_cfg = _plain(config.data)
    if episodes:
        elist, drawn = E.load_episode_list(episodes), checkpointing.absolute(episodes)
    else:
        elist = draw_episode_list(data_cfg, part=part, way=way, shot=shot, protocol=protocol, queries=queries,
                                  num_episodes=num_episodes, seed=episode_seed, num_val=num_val, val_seed=val_seed,
                                  class_split_file=class_split_file)
        drawn = dict(part=part, num_episodes=num_episodes, seed=episode_seed, way=way, shot=shot, protocol=protocol,
                     queries=queries, class_split_file=class_split_file and checkpointing.absolute(class_split_file))
    res = evaluate_groups(models, data_cfg, elist, probes=tuple(probes), split=split or PART_TO_TFDS_SPLIT[part],
                          batch_size=batch_size, progress=progress, **geometry)
    single = next(iter(res["groups"].values())) if len(res["groups"]) == 1 else {}
    return {"pretrain_workdir": checkpointing.absolute(pretrain_workdir) if pretrain_workdir else None,
            "step": step, "random_init": random_init, "init_seed": init_seed if random_init else None,
            "episodes": drawn, "num_episodes": len(elist), "geometry": geometry, "normalize_video": normalize_video,
            "pooling": pooling, "feature_depth": feature_depth,
            "modalities": {g: [s.name for s in e.specs] for g, (e, _) in models.items()}, **single, **res}


if __name__ == "__main__":  # the command line is frozen_cli.py
    from mumae_jax.evaluators import frozen_cli

    raise SystemExit(frozen_cli.main())
