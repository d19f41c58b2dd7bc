"""Few-shot evaluation of a frozen pretrained Mu-MAE encoder (no meta-training).

clips of an episode list --(episode_input.build_clip_input: evaluation transform)--> MAEFeatureEncoder
(eval mode, every token visible) --> features [n, D], extracted ONCE per unique clip --> gathered into
support [E, S, D] / query [E, Q, D] --> `fewshot_probes.evaluate` (prototype, kNN, ridge, linear).

Geometry (`default_geometry`): seq_len frames (default: the pretraining num_frames; a multiple of the
tubelet's time size), image_size (default: the pretraining size), resize_to (default:
round(image_size · 256/224), the official 224 -> 256 ratio), sensor_length (default: the pretraining one).

Episode lists: a saved file, or drawn by `draw_episode_list` from the class split of the data config
(`class_split_file`, else `splits.mumae_split3_with_validation(num_val, val_seed)`). Prepared MMAct reads
the clips of part 'novel' / 'validation' / 'base' from TFDS split meta_test / meta_val / meta_train.

Also used during pretraining (`PeriodicEvaluator`, config.evals.fewshot) on the live parameters.

  python -m mumae_jax.frozen_eval --pretrain_workdir W [--step N] [--episodes F | --part novel
      --num_episodes 1000 --episode_seed 0 --way 5 --shot 1] [--probes prototype,ridge] [--out r.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath

from mumae_jax import checkpointing, fewshot_probes, pretrained, sharding
from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from mumae_jax.models import mae_features

PART_TO_TFDS_SPLIT = {"novel": "meta_test", "validation": "meta_val", "base": "meta_train"}
DEFAULT_PROBES = ("prototype", "knn", "ridge", "linear")


def _plain(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


# ----------------------------------------------------------------------------------------------------
# Encoder
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


def make_encoder(pretrain_config, geometry: Mapping[str, int], normalize_video: bool = True
                 ) -> mae_features.MAEFeatureEncoder:
    """The frozen feature encoder (no drop path) of the pretraining model for `geometry`."""
    return mae_features.from_pretrain_config(
        pretrain_config, drop_path=0.0, normalize_video=normalize_video, num_frames=geometry["seq_len"],
        image_size=geometry["image_size"], sensor_length=geometry["sensor_length"])


def init_params(encoder: mae_features.MAEFeatureEncoder, seed: int = 0):
    """Randomly initialised encoder parameters (a baseline, or the tree `load_pretrained` fills)."""
    dummy = {s.name: jnp.zeros((1, *s.input_shape), jnp.float32) for s in encoder.specs}
    return jax.jit(lambda k: encoder.init(k, dummy, deterministic=True)["params"])(jax.random.key(seed))


def from_pretrain_config(pretrain_config, seed: int = 0, normalize_video: bool = True, **geometry):
    """(encoder, random-init params) of a pretraining config, without a checkpoint (baseline).

    `geometry`: seq_len, image_size, sensor_length as in `default_geometry` (resize_to is ignored).
    """
    encoder = make_encoder(pretrain_config, default_geometry(pretrain_config, **geometry), normalize_video)
    return encoder, init_params(encoder, seed)


def from_pretrain_run(workdir: str, step: Optional[int] = None, *, mesh=None, normalize_video: bool = True,
                      **geometry):
    """(encoder, params, step) from the latest (or given) checkpoint of a pretraining run.

    Every encoder weight comes from the checkpoint (`load_pretrained`, strict) except the fresh fc_norm.
    `geometry` as in `from_pretrain_config`.
    """
    config, mae_params, step = pretrained.load_params(workdir, step, mesh)
    encoder, params = from_pretrain_config(config, normalize_video=normalize_video, **geometry)
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


def extract_features(encoder, params, data_cfg, clip_names: Sequence[str], *, seq_len: int, image_size: int,
                     resize_to: int, sensor_length: int, split: str = "meta_test", batch_size: int = 32,
                     mesh=None, progress: bool = False) -> np.ndarray:
    """Features float32 [len(clip_names), D] of the clips (evaluation transform, encoder in eval mode).

    Batches of `batch_size` (divisible by the device count) are sharded over `mesh` (default: all devices).
    """
    from mumae_jax.data import episode_input  # TensorFlow is imported only here

    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh)
    fn = _feature_fn(encoder, mesh)
    params = jax.device_put(params, sharding.replicated(mesh))
    sensors = tuple(s.name for s in encoder.specs if s.kind == "sensor")
    video = [s.name for s in encoder.specs if s.kind == "video"]
    it = episode_input.build_clip_input(data_cfg, clip_names, sensors=sensors, seq_len=seq_len,
                                        image_size=image_size, resize_to=resize_to, sensor_length=sensor_length,
                                        split=split, batch_size=batch_size)
    n, procs, rank = len(clip_names), jax.process_count(), jax.process_index()
    share = batch_size // procs
    out = None
    try:
        for b in tqdm.tqdm(it, total=-(-n // batch_size), desc="features", unit="batch", disable=not progress):
            inputs = {**{v: b["video"] for v in video}, **{s: b[s] for s in sensors}}
            local = {k: v[rank * share:(rank + 1) * share] for k, v in inputs.items()}
            feats = np.asarray(fn(params, sharding.to_global(local, mesh)), np.float32)
            if out is None:
                out = np.zeros((n, feats.shape[-1]), np.float32)
            valid = b["index"] >= 0
            out[b["index"][valid]] = feats[valid]
    finally:
        it.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------

def class_split(data_cfg, num_val: int = 5, val_seed: int = 0) -> splits.ClassSplit:
    """The data config's `class_split_file`, else Mu-MAE split 3 with `num_val` validation classes."""
    f = _plain(data_cfg).get("class_split_file") or ""
    return splits.ClassSplit.from_file(f) if f else splits.mumae_split3_with_validation(num_val, val_seed)


def records(data_cfg) -> list:
    """Every clip record of the dataset (synthetic: all classes; MMAct: the kept prepared clips)."""
    cfg = _plain(data_cfg)
    if cfg["name"] == "synthetic":
        from mumae_jax.data import input_pipeline

        return input_pipeline.make_dataset({**cfg, "split": "all"})[1]
    from mumae_jax.data import mmact_tfds

    return mmact_tfds.kept_records(cfg["dir"])


def draw_episode_list(data_cfg, *, part: str = "novel", way: int = 5, shot: int = 1, protocol: str = "official",
                      num_episodes: int = 1000, seed: int = 0, num_val: int = 5, val_seed: int = 0
                      ) -> E.EpisodeList:
    """A deterministic list of episodes over the `part` classes of the data config's class split."""
    cs = class_split(data_cfg, num_val, val_seed)
    return E.make_episode_list(records(data_cfg), cs, part=part, way=way, shot=shot, protocol=protocol,
                               num_episodes=num_episodes, seed=seed)


def evaluate_episodes(encoder, params, data_cfg, episode_list: Sequence[E.Episode], *,
                      probes: Sequence[str] = DEFAULT_PROBES, probe_options: Optional[Mapping[str, Any]] = None,
                      seq_len: int, image_size: int, resize_to: int, sensor_length: int, split: str = "meta_test",
                      batch_size: int = 32, mesh=None, progress: bool = False) -> dict[str, Any]:
    """Frozen-feature few-shot accuracy of `encoder` on `episode_list` (module docstring).

    Returns {probe: {"accuracy": %, "ci95": pp, "num_queries": E·Q}, "num_clips": unique clips,
    "seconds": wall time}.
    """
    t0 = time.perf_counter()
    if not episode_list:
        raise ValueError("the episode list is empty")
    names = sorted({c for e in episode_list for c in (*e.support, *e.query)})
    feats = extract_features(encoder, params, data_cfg, names, seq_len=seq_len, image_size=image_size,
                             resize_to=resize_to, sensor_length=sensor_length, split=split,
                             batch_size=batch_size, mesh=mesh, progress=progress)
    pos = {n: i for i, n in enumerate(names)}
    ways = {len(e.classes) for e in episode_list}
    shapes = {(len(e.support), len(e.query)) for e in episode_list}
    if len(ways) != 1 or len(shapes) != 1:
        raise ValueError("all episodes of a list must have the same way, shot and query count")
    support = feats[np.asarray([[pos[c] for c in e.support] for e in episode_list])]
    query = feats[np.asarray([[pos[c] for c in e.query] for e in episode_list])]
    res = fewshot_probes.evaluate(support, np.asarray([e.support_labels for e in episode_list], np.int32),
                                  query, np.asarray([e.query_labels for e in episode_list], np.int32),
                                  ways.pop(), probes=probes, **dict(probe_options or {}))
    out: dict[str, Any] = {p: {k: r[k] for k in ("accuracy", "ci95", "num_queries")} for p, r in res.items()}
    out.update(num_clips=len(names), seconds=time.perf_counter() - t0)
    return out


def probe_results(results: Mapping[str, Any]) -> dict[str, dict]:
    """The per-probe entries of an `evaluate_episodes` result (for `fewshot_probes.format_table`)."""
    return {k: v for k, v in results.items() if isinstance(v, Mapping) and "accuracy" in v}


# ----------------------------------------------------------------------------------------------------
# During pretraining
# ----------------------------------------------------------------------------------------------------

class PeriodicEvaluator:
    """Few-shot probes on the live pretraining parameters (config.evals.fewshot).

    The encoder, its fc_norm init and the episode list are built once; each call copies the current
    `MultimodalMAE` parameters in (`load_pretrained`) and returns {"fewshot/<probe>_accuracy", "_ci95"}.
    """

    def __init__(self, pretrain_config, eval_cfg, mesh=None):
        self.cfg = dict(eval_cfg)
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.geometry = default_geometry(pretrain_config, seq_len=int(self.cfg.get("seq_len", 0)),
                                         image_size=int(self.cfg.get("image_size", 0)),
                                         resize_to=int(self.cfg.get("resize_to", 0)))
        self.encoder = make_encoder(pretrain_config, self.geometry)
        self.init = init_params(self.encoder, int(self.cfg.get("seed", 0)))
        part = self.cfg.get("part", "validation")
        self.data_cfg = _plain(pretrain_config.data)
        self.split = PART_TO_TFDS_SPLIT[part]
        self.episodes = draw_episode_list(self.data_cfg, part=part, way=int(self.cfg.get("way", 5)),
                                          shot=int(self.cfg.get("shot", 1)),
                                          num_episodes=int(self.cfg.get("num_episodes", 200)),
                                          seed=int(self.cfg.get("seed", 0)))
        self.probes = tuple(self.cfg.get("probes", ("prototype", "ridge")))

    def __call__(self, mae_params) -> dict[str, float]:
        params, _ = mae_features.load_pretrained(self.init, mae_params)
        res = evaluate_episodes(self.encoder, params, self.data_cfg, self.episodes, probes=self.probes,
                                split=self.split, batch_size=int(self.cfg.get("batch_size", 32)), mesh=self.mesh,
                                **self.geometry)
        out = {}
        for p in self.probes:
            out[f"fewshot/{p}_accuracy"] = res[p]["accuracy"]
            out[f"fewshot/{p}_ci95"] = res[p]["ci95"]
        return out


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mumae_jax.frozen_eval", description=__doc__.split("\n")[0])
    p.add_argument("--pretrain_workdir", required=True, help="pretraining run (config.json + checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--random_init", action="store_true", help="baseline: random encoder, no checkpoint")
    p.add_argument("--episodes", default="", help="episode list file (otherwise drawn, see --part)")
    p.add_argument("--part", default="novel", choices=tuple(PART_TO_TFDS_SPLIT))
    p.add_argument("--num_episodes", type=int, default=1000)
    p.add_argument("--episode_seed", type=int, default=0)
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--protocol", default="official")
    p.add_argument("--num_val", type=int, default=5, help="validation classes of split 3 (no class_split_file)")
    p.add_argument("--val_seed", type=int, default=0)
    p.add_argument("--split", default="", help="TFDS split holding the clips (MMAct; default: from --part)")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES))
    p.add_argument("--seq_len", type=int, default=0, help="0: the pretraining num_frames")
    p.add_argument("--image_size", type=int, default=0, help="0: the pretraining video size")
    p.add_argument("--resize_to", type=int, default=0, help="0: round(image_size*256/224)")
    p.add_argument("--sensor_length", type=int, default=0, help="0: the pretraining sensor length")
    p.add_argument("--no_normalize_video", action="store_true", help="feed [0, 1] frames (official one-shot)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--progress", action="store_true")
    return p


def evaluate_run(pretrain_workdir: str, *, step: Optional[int] = None, random_init: bool = False,
                 episodes: str = "", part: str = "novel", num_episodes: int = 1000, episode_seed: int = 0,
                 way: int = 5, shot: int = 1, protocol: str = "official", num_val: int = 5, val_seed: int = 0,
                 split: str = "", probes: Sequence[str] = DEFAULT_PROBES, seq_len: int = 0, image_size: int = 0,
                 resize_to: int = 0, sensor_length: int = 0, normalize_video: bool = True, batch_size: int = 32,
                 progress: bool = False) -> dict[str, Any]:
    """Frozen-feature few-shot accuracy of a pretraining run's checkpoint (or, `random_init`, of its
    architecture with random weights) on an episode list file or a drawn list; what the command prints.

    Returns {"pretrain_workdir", "step", "random_init", "episodes" (the file or how the list was drawn),
    "num_episodes", "geometry", "normalize_video", <probe>: {"accuracy", "ci95", "num_queries"}, "num_clips",
    "seconds"}.
    """
    config = pretrained.load_config(pretrain_workdir)
    geometry = default_geometry(config, seq_len=seq_len, image_size=image_size, resize_to=resize_to,
                                sensor_length=sensor_length)
    if random_init:
        encoder, params = from_pretrain_config(config, normalize_video=normalize_video, **geometry)
        step = None
    else:
        encoder, params, step = from_pretrain_run(pretrain_workdir, step, normalize_video=normalize_video,
                                                  **geometry)
    data_cfg = _plain(config.data)
    if episodes:
        elist = E.load_episode_list(episodes)
        source: Any = checkpointing.absolute(episodes)
    else:
        elist = draw_episode_list(data_cfg, part=part, way=way, shot=shot, protocol=protocol,
                                  num_episodes=num_episodes, seed=episode_seed, num_val=num_val, val_seed=val_seed)
        source = dict(part=part, num_episodes=num_episodes, seed=episode_seed, way=way, shot=shot,
                      protocol=protocol)
    res = evaluate_episodes(encoder, params, data_cfg, elist, probes=tuple(probes),
                            split=split or PART_TO_TFDS_SPLIT[part], batch_size=batch_size, progress=progress,
                            **geometry)
    return {"pretrain_workdir": checkpointing.absolute(pretrain_workdir), "step": step, "random_init": random_init,
            "episodes": source, "num_episodes": len(elist), "geometry": geometry,
            "normalize_video": normalize_video, **res}


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
    out = evaluate_run(a.pretrain_workdir, step=a.step, random_init=a.random_init, episodes=a.episodes,
                       part=a.part, num_episodes=a.num_episodes, episode_seed=a.episode_seed, way=a.way,
                       shot=a.shot, protocol=a.protocol, num_val=a.num_val, val_seed=a.val_seed, split=a.split,
                       probes=[p for p in a.probes.split(",") if p], seq_len=a.seq_len, image_size=a.image_size,
                       resize_to=a.resize_to, sensor_length=a.sensor_length,
                       normalize_video=not a.no_normalize_video, batch_size=a.batch_size, progress=a.progress)
    if jax.process_index() == 0:
        what = "random init" if a.random_init else f"checkpoint step {out['step']}"
        print(f"{a.pretrain_workdir} ({what}); {out['num_episodes']} episodes, {out['num_clips']} clips, "
              f"{out['seconds']:.1f} s")
        print(fewshot_probes.format_table(probe_results(out)))
        if a.out:
            epath.Path(a.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
