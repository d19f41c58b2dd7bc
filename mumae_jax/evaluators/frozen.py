"""Few-shot evaluation of a frozen pretrained Mu-MAE encoder (no meta-training).

clips of an episode list --(episode_input.build_clip_input: evaluation transform)--> MAEFeatureEncoder
(eval mode, every token visible) --> features [n, D], extracted ONCE per unique clip --> gathered into
support [E, S, D] / query [E, Q, D] --> `fewshot_probes.evaluate` (prototype, kNN, ridge, linear).

Features (`frozen_features.py`): modality groups (several encoders evaluated in one pass over the clips, each
fed only its group's modalities: `all`, `video`, `sensors`, a name, or names joined by `+`), pooling ('mean':
the official mean over all tokens; 'modality': one block per modality; 'tokens') and feature depth; the
geometry defaults to the pretraining one.

Episode lists: a saved file, or drawn by `draw_episode_list` (`queries` per episode: official = all
from one class, trx = as many from every class) from a class split: `class_split_file` if given, else
the data config's `class_split_file`, else `splits.mumae_split3_with_validation(num_val, val_seed)`.
Prepared MMAct reads the clips of part 'novel' / 'validation' / 'base' from TFDS split meta_test /
meta_val / meta_train (built with the data config's class split: a clip that is not in the split read is
an error naming it; `split=` picks another).

Also used during pretraining (`FewshotEvaluator`, config.evals.fewshot) on the live parameters.
Command line (this module; one table, a row per modality group and a column per probe, accuracy ± 95% CI in %;
`--out` writes the whole result as JSON; `--config` is loaded as main.py loads its config):

  python -m mumae_jax.evaluators.frozen --pretrain_workdir W [--step N] [--random_init [--init_seed S]]
      [--episodes F | --part novel --num_episodes 1000 --episode_seed 0 --way 5 --shot 1
       --protocol official|trx --queries Q --class_split_file SPLIT.json]
      [--modalities all,video,sensors,acc_watch+gyro] [--pooling mean|modality] [--feature_depth K]
      [--probes prototype,ridge] [--out r.json]
  python -m mumae_jax.evaluators.frozen --config configs/pretrain.py:runlocal [--config.x=y ...] --random_init
      [--init_seed S] ...                     (an architecture with random weights, no workdir)
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional, Sequence

import jax
from etils import epath

from mumae_jax.core import checkpointing, cli, sharding
from mumae_jax.core.config_files import load_config_file, split_overrides
from mumae_jax.data import episodes as E
from mumae_jax.data import sources
from mumae_jax.data.sources import PART_SPLITS
from mumae_jax.evaluators import fewshot_probes, frozen_features
from mumae_jax.evaluators.frozen_features import _plain
from mumae_jax.models import mae_features
from mumae_jax.weights import pretrained

DEFAULT_PROBES = ("prototype", "knn", "ridge", "linear")


# ----------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------

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
    """A deterministic list of episodes over the `part` classes of the class split (`DataSource.class_split`), with
    `queries` queries per episode (`list_queries`)."""
    source = sources.get_source(data_cfg)
    cs = source.class_split(num_val, val_seed, class_split_file)
    return E.make_episode_list(source.records(), cs, part=part, way=way, shot=shot, protocol=protocol,
                               queries=list_queries(protocol, way, queries), num_episodes=num_episodes, seed=seed)


def evaluate_groups(models: Mapping[str, tuple], data_cfg, episode_list: Sequence[E.Episode], geometry, *,
                    probes: Sequence[str] = DEFAULT_PROBES, probe_options: Optional[Mapping[str, Any]] = None,
                    **feature_kw) -> dict[str, Any]:
    """Frozen-feature few-shot accuracy of each of `models` {group: (encoder, params)} on `episode_list`, clips
    read as `geometry` (a `ClipGeometry`) says; `feature_kw` as in `extract_group_features` (split, batch_size,
    mesh, progress).

    Returns {"groups": {group: {probe: {"accuracy": %, "ci95": pp, "num_queries": E·Q}}}, "num_clips":
    unique clips, "num_queries": E·Q, "seconds": wall time}.
    """
    t0 = time.perf_counter()
    if not episode_list:
        raise ValueError("the episode list is empty")
    if len({(len(e.classes), len(e.support), len(e.query)) for e in episode_list}) != 1:
        raise ValueError("all episodes of a list must have the same way, shot and query count")
    names = sorted({c for e in episode_list for c in (*e.support, *e.query)})
    feats = frozen_features.extract_group_features(models, data_cfg, names, geometry, **feature_kw)
    groups = {g: fewshot_probes.evaluate_on_episodes(f, names, episode_list, probes=tuple(probes),
                                                     **dict(probe_options or {}))
              for g, f in feats.items()}
    return {"groups": groups, "num_clips": len(names), "num_queries": sum(len(e.query) for e in episode_list),
            "seconds": time.perf_counter() - t0}


def evaluate_episodes(encoder, params, data_cfg, episode_list: Sequence[E.Episode], geometry,
                      **kw) -> dict[str, Any]:
    """`evaluate_groups` of one encoder: {probe: {"accuracy", "ci95", "num_queries"}, "num_clips",
    "num_queries", "seconds"}."""
    res = evaluate_groups({"": (encoder, params)}, data_cfg, episode_list, geometry, **kw)
    return {**res.pop("groups")[""], **res}


def probe_results(results: Mapping[str, Any]) -> dict[str, dict]:
    """The per-probe entries of an `evaluate_episodes` result (for `fewshot_probes.format_table`)."""
    return {k: v for k, v in results.items() if isinstance(v, Mapping) and "accuracy" in v}


# ----------------------------------------------------------------------------------------------------
# During pretraining
# ----------------------------------------------------------------------------------------------------

# What the `fewshot` evaluator (and the command, which sets each of them from its flags) reads; defaults are
# those of the periodic evaluator during pretraining.
SETTINGS = dict(episodes="", part="validation", num_episodes=200, seed=0, way=5, shot=1, protocol="official",
                queries=0, num_val=5, val_seed=0, class_split_file="", split="", probes=("prototype", "ridge"),
                modalities="all", pooling="mean", feature_depth=0, num_frames=0, image_size=0, resize_to=0,
                sensor_length=0, normalize_video=True, batch_size=32, init_seed=0)
_SCHEDULE = ("type", "every_steps")  # read by the loop, not here


def resolve_settings(settings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """`SETTINGS` updated by `settings` (a config.evals entry's schedule keys ignored), checked before any model
    or data is read: unknown names, a list file with drawing options, queries that do not fit the protocol."""
    given = {k: v for k, v in dict(settings or {}).items() if k not in _SCHEDULE}
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown few-shot evaluator settings {unknown}; known: {sorted(SETTINGS)}")
    cfg = {**SETTINGS, **given}
    if cfg["episodes"] and (cfg["queries"] or cfg["class_split_file"]):
        raise ValueError("queries and class_split_file apply to a drawn list; the episode list file fixes them")
    list_queries(cfg["protocol"], int(cfg["way"]), int(cfg["queries"]))
    return cfg


class FewshotEvaluator:
    """Frozen-encoder few-shot probes with fixed settings (`SETTINGS`), on any parameters: the live ones during
    pretraining (config.evals.<name>, type 'fewshot'), a saved checkpoint's or a random init's (the command).

    Built once: one encoder per group of `modalities` (`pooling`, `feature_depth`, the geometry), and the episode
    list (the file `episodes`, or drawn: `part`, `num_episodes`, `seed`, `way`, `shot`, `protocol`, `queries` per
    episode, the class split of `class_split_file` or split 3 with `num_val` / `val_seed` validation classes).
    `evaluate(mae_params)` returns the full result; calling it returns the flat metrics
    {"<prefix>/<probe>_accuracy", "_ci95"} for group 'all' and "<prefix>/<group>/<probe>_..." for the others.
    """

    def __init__(self, pretrain_config, settings: Optional[Mapping[str, Any]] = None, mesh=None,
                 prefix: str = "fewshot", progress: bool = False):
        self.cfg = cfg = resolve_settings(settings)  # fails before any model is built
        self.prefix, self.progress, self.config = prefix, progress, pretrain_config
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.geometry = frozen_features.default_geometry(
            pretrain_config, num_frames=int(cfg["num_frames"]), image_size=int(cfg["image_size"]),
            resize_to=int(cfg["resize_to"]), sensor_length=int(cfg["sensor_length"]))
        kw = dict(normalize_video=bool(cfg["normalize_video"]), feature_depth=int(cfg["feature_depth"]))
        groups = frozen_features.modality_groups(pretrain_config, cfg["modalities"])
        self.encoders = {g: frozen_features.make_encoder(pretrain_config, self.geometry, modalities=m,
                                                         pooling=cfg["pooling"], **kw) for g, m in groups.items()}
        self.init = {g: frozen_features.init_params(e, int(cfg["init_seed"])) for g, e in self.encoders.items()}
        self._full = lambda: frozen_features.make_encoder(pretrain_config, self.geometry, **kw)
        self.data_cfg = _plain(pretrain_config.data)
        self.split = cfg["split"] or PART_SPLITS[cfg["part"]]
        if cfg["episodes"]:
            self.episodes = E.load_episode_list(cfg["episodes"])
            self.drawn = checkpointing.absolute(cfg["episodes"])
        else:
            self.episodes = draw_episode_list(
                self.data_cfg, part=cfg["part"], way=int(cfg["way"]), shot=int(cfg["shot"]),
                protocol=cfg["protocol"], queries=int(cfg["queries"]), num_episodes=int(cfg["num_episodes"]),
                seed=int(cfg["seed"]), num_val=int(cfg["num_val"]), val_seed=int(cfg["val_seed"]),
                class_split_file=cfg["class_split_file"])
            self.drawn = {k: cfg[k] for k in ("part", "num_episodes", "seed", "way", "shot", "protocol", "queries")}
            self.drawn["class_split_file"] = cfg["class_split_file"] and checkpointing.absolute(cfg["class_split_file"])
        self.probes = tuple(cfg["probes"])

    def evaluate(self, mae_params=None) -> dict[str, Any]:
        """Probe results for `mae_params` (a `MultimodalMAE` or feature-encoder tree, loaded strictly), or for
        ONE random init (`init_seed`) of the encoder shared by every group when None: {"episodes" (the file or
        how the list was drawn), "num_episodes", "num_queries", "num_clips", "seconds", "geometry",
        "normalize_video", "pooling", "feature_depth", "modalities": {group: names}, "groups": {group: {probe:
        {"accuracy", "ci95", "num_queries"}}}}; with a single group also its <probe> entries at the top level."""
        if mae_params is None:
            mae_params = frozen_features.init_params(self._full(), int(self.cfg["init_seed"]))
        models = {g: (e, mae_features.load_pretrained(self.init[g], mae_params)[0]) for g, e in self.encoders.items()}
        res = evaluate_groups(models, self.data_cfg, self.episodes, self.geometry, probes=self.probes,
                              split=self.split, batch_size=int(self.cfg["batch_size"]), mesh=self.mesh,
                              progress=self.progress)
        single = next(iter(res["groups"].values())) if len(res["groups"]) == 1 else {}
        return {"episodes": self.drawn, "num_episodes": len(self.episodes), "geometry": self.geometry.as_dict(),
                **{k: self.cfg[k] for k in ("normalize_video", "pooling", "feature_depth")},
                "modalities": {g: [s.name for s in e.specs] for g, e in self.encoders.items()}, **single, **res}

    def __call__(self, mae_params) -> dict[str, float]:
        out = {}
        for g, r in self.evaluate(mae_params)["groups"].items():
            prefix = f"{self.prefix}/" if g == "all" else f"{self.prefix}/{g}/"
            for p in self.probes:
                out[f"{prefix}{p}_accuracy"] = r[p]["accuracy"]
                out[f"{prefix}{p}_ci95"] = r[p]["ci95"]
        return out


def make_evaluator(name: str, settings, stage) -> Optional[Any]:
    """The `fewshot` evaluator type (`evaluators/common.py`) of the pretraining stage: `FewshotEvaluator` on the
    live parameters every `settings.every_steps` steps; stage: config (the pretraining config), mesh."""
    every = int(settings.get("every_steps", 0))
    if every <= 0:
        return None
    from mumae_jax.core import loop

    probes = FewshotEvaluator(stage["config"], settings, stage["mesh"], prefix=name)  # episode list drawn once
    return loop.FunctionEvaluator(name, every, lambda step, state: probes(state["params"]))


# ----------------------------------------------------------------------------------------------------
# A saved run (or a config with random weights): the same evaluator, no training
# ----------------------------------------------------------------------------------------------------

def evaluate_run(pretrain_workdir: str = "", *, config=None, step: Optional[int] = None, random_init: bool = False,
                 settings: Optional[Mapping[str, Any]] = None, progress: bool = False) -> dict[str, Any]:
    """`FewshotEvaluator(settings).evaluate` on a pretraining run's checkpoint (`pretrain_workdir`, `step`: default
    the latest), on its architecture with random weights (`random_init`), or on a pretraining `config` with random
    weights (needs `random_init`). Exactly one of pretrain_workdir / config. What the command prints: the result
    of `FewshotEvaluator.evaluate` plus "pretrain_workdir" (None with config), "step", "random_init", "init_seed".
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
    settings = resolve_settings(settings)  # fails before the run is read
    params = None
    if config is None and random_init:
        config = pretrained.load_config(pretrain_workdir)
    elif config is None:
        config, params, step = pretrained.load_params(pretrain_workdir, step)
    evaluator = FewshotEvaluator(config, settings, progress=progress)
    out = evaluator.evaluate(params)
    return {"pretrain_workdir": checkpointing.absolute(pretrain_workdir) if pretrain_workdir else None,
            "step": step, "random_init": random_init,
            "init_seed": evaluator.cfg["init_seed"] if random_init else None, **out}


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

def format_table(result: Mapping[str, Any]) -> str:
    """One row per modality group, one column per probe ('accuracy ± ci95' in %), then its modalities."""
    groups = result["groups"]
    probes = list(next(iter(groups.values())))
    rows = [["group", *probes, "modalities"]]
    rows += [[g, *(f"{r[p]['accuracy']:.2f} ± {r[p]['ci95']:.2f}" for p in probes),
              "+".join(result["modalities"][g])] for g, r in groups.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, len(widths) - 1) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.evaluators.frozen", __doc__)
    p.epilog = "--config.x=y overrides of --config are accepted as by main.py."
    a = p.add_argument
    a("--pretrain_workdir", default="", help="pretraining run (config.json + checkpoints/) to evaluate")
    a("--config", default="", help="pretraining config file path[:arg] (e.g. configs/pretrain.py:runlocal) "
      "instead of a run: needs --random_init")
    a("--step", type=int, default=None, help="checkpoint step (default: latest)")
    a("--random_init", action="store_true", help="baseline: random encoder weights, no checkpoint")
    a("--init_seed", type=int, default=0, help="seed of the random init (--random_init)")
    a("--episodes", default="", help="episode list file (otherwise drawn, see --part)")
    a("--part", default="novel", choices=tuple(PART_SPLITS), help="classes of a drawn list")
    a("--num_episodes", type=int, default=1000, help="episodes of a drawn list")
    a("--episode_seed", type=int, default=0, help="seed of a drawn list")
    a("--way", type=int, default=5, help="classes per episode")
    a("--shot", type=int, default=1, help="support clips per class")
    a("--protocol", default="official", choices=E.PROTOCOLS,
      help="official: the queries come from one class of the episode; trx: from every class")
    a("--queries", type=int, default=0, help="queries per episode of a drawn list (trx: a multiple of --way, "
      "spread evenly over the classes); 0: 1 (official) or one per class (trx)")
    a("--num_val", type=int, default=5, help="validation classes of split 3 (no class split file)")
    a("--val_seed", type=int, default=0, help="seed choosing the validation classes of split 3")
    a("--class_split_file", default="", help="class split JSON (splits.ClassSplit) for a drawn list, instead "
      "of the data config's")
    a("--split", default="", help="TFDS split holding the clips (MMAct; default: from --part)")
    a("--probes", default=",".join(DEFAULT_PROBES), help="comma-separated probes")
    a("--modalities", default="all", help="comma-separated modality groups, one result each (default all): all, video, "
      "sensors, a modality name, or names joined by '+' (e.g. acc_watch+gyro)")
    a("--pooling", default="mean", choices=mae_features.POOLINGS,
      help="mean: over all tokens (official); modality: one normalised block per modality, concatenated")
    a("--feature_depth", type=int, default=0, help="0: every encoder block; k: the tokens after the first k blocks")
    a("--num_frames", type=int, default=0, help="0: the pretraining num_frames")
    a("--image_size", type=int, default=0, help="0: the pretraining video size")
    a("--resize_to", type=int, default=0, help="0: round(image_size*256/224)")
    a("--sensor_length", type=int, default=0, help="0: the pretraining sensor length")
    a("--no_normalize_video", action="store_true", help="feed [0, 1] frames (official one-shot)")
    a("--batch_size", type=int, default=32, help="clips per feature batch (a multiple of the device count)")
    a("--out", default="", help="write the results (every group) as JSON here")
    a("--progress", action="store_true", help="show a progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser()
    a, overrides = split_overrides(p, argv)
    if bool(a.pretrain_workdir) == bool(a.config):
        p.error("give exactly one of --pretrain_workdir (a run) and --config (random weights, with --random_init)")
    if overrides and not a.config:
        p.error(f"{overrides[0]} overrides --config, which is not given")
    if a.config and not a.random_init:
        p.error("--config gives no weights: add --random_init (or evaluate a run with --pretrain_workdir)")
    a.overrides = overrides
    return cli.run(_run, a)


def _run(a) -> int:
    overrides = a.overrides
    config = load_config_file(a.config, overrides) if a.config else None
    settings = dict(episodes=a.episodes, part=a.part, num_episodes=a.num_episodes, seed=a.episode_seed, way=a.way,
                    shot=a.shot, protocol=a.protocol, queries=a.queries, num_val=a.num_val, val_seed=a.val_seed,
                    class_split_file=a.class_split_file, split=a.split, probes=[q for q in a.probes.split(",") if q],
                    modalities=a.modalities, pooling=a.pooling, feature_depth=a.feature_depth, num_frames=a.num_frames,
                    image_size=a.image_size, resize_to=a.resize_to, sensor_length=a.sensor_length,
                    normalize_video=not a.no_normalize_video, batch_size=a.batch_size, init_seed=a.init_seed)
    out = evaluate_run(a.pretrain_workdir, config=config, step=a.step, random_init=a.random_init, settings=settings,
                       progress=a.progress)
    if a.config:
        out = {"config": a.config, "config_overrides": overrides, **out}
    if jax.process_index() == 0:
        what = f"random init, seed {a.init_seed}" if a.random_init else f"checkpoint step {out['step']}"
        print(f"{a.pretrain_workdir or a.config} ({what}); pooling {a.pooling}, feature depth "
              f"{a.feature_depth or 'all'}; {out['num_episodes']} episodes, {out['num_queries']} queries, "
              f"{out['num_clips']} clips, {out['seconds']:.1f} s")
        print(format_table(out))
        if a.out:
            epath.Path(a.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    cli.quiet_environment()
    raise SystemExit(main())
