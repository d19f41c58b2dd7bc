"""Command line of the frozen-encoder few-shot evaluation (`frozen.evaluate_run`).

  python -m mumae_jax.evaluators.frozen --pretrain_workdir W [--step N] [--random_init [--init_seed S]]
      [--episodes F | --part novel --num_episodes 1000 --episode_seed 0 --way 5 --shot 1
       --protocol official|trx --queries Q --class_split_file SPLIT.json]
      [--modalities all,video,sensors,acc_watch+gyro] [--pooling mean|modality] [--feature_depth K]
      [--probes prototype,ridge] [--out r.json]
  python -m mumae_jax.evaluators.frozen --config configs/pretrain.py:runlocal [--config.x=y ...] --random_init
      [--init_seed S] ...                     (an architecture with random weights, no workdir)

`--config` is loaded as main.py loads its config (ml_collections `config_flags`: `path[:arg]` and
`--config.x=y` overrides). One table: a row per modality group, a column per probe (accuracy ± 95% CI,
in %); `--out` writes the whole result (every group) as JSON.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Mapping, Optional, Sequence

import jax
from etils import epath

from mumae_jax.evaluators import frozen
from mumae_jax.core.config_files import load_config_file, split_overrides
from mumae_jax.data import episodes as E
from mumae_jax.models import mae_features


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mumae_jax.evaluators.frozen", description=frozen.__doc__.split("\n")[0],
                                epilog="--config.x=y overrides of --config are accepted as by main.py.")
    a = p.add_argument
    a("--pretrain_workdir", default="", help="pretraining run (config.json + checkpoints/) to evaluate")
    a("--config", default="", help="pretraining config file path[:arg] (e.g. configs/pretrain.py:runlocal) "
      "instead of a run: needs --random_init")
    a("--step", type=int, default=None, help="checkpoint step (default: latest)")
    a("--random_init", action="store_true", help="baseline: random encoder weights, no checkpoint")
    a("--init_seed", type=int, default=0, help="seed of the random init (--random_init)")
    a("--episodes", default="", help="episode list file (otherwise drawn, see --part)")
    a("--part", default="novel", choices=tuple(frozen.PART_TO_TFDS_SPLIT), help="classes of a drawn list")
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
    a("--probes", default=",".join(frozen.DEFAULT_PROBES), help="comma-separated probes")
    a("--modalities", default="all", help="comma-separated modality groups, one result each (default all): all, video, "
      "sensors, a modality name, or names joined by '+' (e.g. acc_watch+gyro)")
    a("--pooling", default="mean", choices=mae_features.POOLINGS,
      help="mean: over all tokens (official); modality: one normalised block per modality, concatenated")
    a("--feature_depth", type=int, default=0, help="0: every encoder block; k: the tokens after the first k blocks")
    a("--seq_len", type=int, default=0, help="0: the pretraining num_frames")
    a("--image_size", type=int, default=0, help="0: the pretraining video size")
    a("--resize_to", type=int, default=0, help="0: round(image_size*256/224)")
    a("--sensor_length", type=int, default=0, help="0: the pretraining sensor length")
    a("--no_normalize_video", action="store_true", help="feed [0, 1] frames (official one-shot)")
    a("--batch_size", type=int, default=32, help="clips per feature batch (a multiple of the device count)")
    a("--out", default="", help="write the results (every group) as JSON here")
    a("--progress", action="store_true", help="show a progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _parser()
    a, overrides = split_overrides(p, argv)
    if bool(a.pretrain_workdir) == bool(a.config):
        p.error("give exactly one of --pretrain_workdir (a run) and --config (random weights, with --random_init)")
    if overrides and not a.config:
        p.error(f"{overrides[0]} overrides --config, which is not given")
    if a.config and not a.random_init:
        p.error("--config gives no weights: add --random_init (or evaluate a run with --pretrain_workdir)")
    config = load_config_file(a.config, overrides) if a.config else None
    out = frozen.evaluate_run(
        a.pretrain_workdir, config=config, step=a.step, random_init=a.random_init, init_seed=a.init_seed,
        episodes=a.episodes, part=a.part, num_episodes=a.num_episodes, episode_seed=a.episode_seed, way=a.way,
        shot=a.shot, protocol=a.protocol, queries=a.queries, num_val=a.num_val, val_seed=a.val_seed,
        class_split_file=a.class_split_file, split=a.split, probes=[q for q in a.probes.split(",") if q],
        modalities=a.modalities, pooling=a.pooling, feature_depth=a.feature_depth, seq_len=a.seq_len,
        image_size=a.image_size, resize_to=a.resize_to, sensor_length=a.sensor_length,
        normalize_video=not a.no_normalize_video, batch_size=a.batch_size, progress=a.progress)
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
    raise SystemExit(main())
