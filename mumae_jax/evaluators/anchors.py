"""Raw-feature anchors: few-shot accuracy of the model's *inputs*, with no encoder at all.

A learned feature is worth something only if it beats what the raw inputs already give. For each
episode of a fixed list this command builds, per clip:

  video    the clip exactly as the frozen evaluators feed it (evaluation transform: `num_frames` frames,
           resize to `resize_to`, centre crop `image_size`, values in [0, 1]), flattened:
           [num_frames · image_size² · 3];
  sensors  every sensor stream as the model gets it (min-max normalised, resampled to `sensor_length`),
           concatenated: [n_sensors · sensor_length · 3];
  all      both blocks, each L2-normalised, concatenated (each modality group weighs the same);

and scores them with the frozen-feature probes (`fewshot_probes`: nearest prototype, ridge, ...),
episodes processed in chunks so that raw pixels fit in memory. Accuracy ± 95 % CI over all queries.

    python -m mumae_jax.evaluators.anchors --config configs/pretrain.py:runlocal [--config.x=y ...] [--episodes F |
        --part novel --num_episodes 2000 --queries 5 --protocol trx [--save_episodes novel2000.json]]
        [--modalities video,sensors,all] [--probes prototype,ridge] [--out anchors.json]

The geometry defaults to the pretraining config's (as `frozen_features.default_geometry`), so an anchor row
and a frozen-encoder row of the same config and episode list are directly comparable.
"""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from etils import epath

from mumae_jax.core import cli
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.data.sources import PART_SPLITS
from mumae_jax.evaluators import fewshot_probes, frozen, frozen_features
from mumae_jax.core.config_files import load_config_file, packaged, split_overrides
from mumae_jax.data import episodes as E

GROUPS = ("video", "sensors", "all")
DEFAULT_PROBES = ("prototype", "ridge")


def raw_features(data_cfg, clip_names: Sequence[str], geometry: ClipGeometry, *, split: str = "meta_test",
                 batch_size: int = 32) -> dict[str, np.ndarray]:
    """{"video": float32 [n, T·S·S·3], "sensors": float32 [n, len(sensors)·L·3]} for `clip_names`
    (in that order), read through the evaluators' clip input as `geometry` says (its `sensors`, in order)."""
    from mumae_jax.data import episode_input  # TensorFlow is imported only here

    it = episode_input.build_clip_input(data_cfg, clip_names, geometry, batch_size=batch_size, split=split)
    sensors, n = geometry.sensors, len(clip_names)
    out: dict[str, Optional[np.ndarray]] = {"video": None, "sensors": None}
    try:
        for b in it:
            keep = b["index"] >= 0
            idx = b["index"][keep]
            blocks = {"video": b["video"][keep].reshape(len(idx), -1)}
            if sensors:
                blocks["sensors"] = np.concatenate([b[s][keep].reshape(len(idx), -1) for s in sensors], 1)
            for k, v in blocks.items():
                if out[k] is None:
                    out[k] = np.zeros((n, v.shape[1]), np.float32)
                out[k][idx] = v
    finally:
        it.close()
    return {k: v for k, v in out.items() if v is not None}


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def group_features(raw: Mapping[str, np.ndarray], group: str) -> np.ndarray:
    """The features of one anchor row (module docstring)."""
    if group == "all":
        return np.concatenate([_l2(raw[k]) for k in ("video", "sensors") if k in raw], 1)
    if group not in raw:
        raise ValueError(f"anchor group {group!r} needs modalities this config does not have (it has {sorted(raw)})")
    return raw[group]


def evaluate_features(feats: np.ndarray, clip_names: Sequence[str], episode_list: Sequence[E.Episode], *,
                      probes: Sequence[str] = DEFAULT_PROBES, chunk: int = 100) -> dict[str, dict]:
    """Probe accuracy of per-clip features [len(clip_names), D] on `episode_list`, `chunk` episodes at a
    time (`fewshot_probes.evaluate_on_episodes`). Returns {probe: {"accuracy", "ci95", "num_queries"}}."""
    return fewshot_probes.evaluate_on_episodes(feats, clip_names, episode_list, probes=tuple(probes), chunk=chunk)


def evaluate_anchors(pretrain_config, episode_list: Sequence[E.Episode], *, groups: Sequence[str] = GROUPS,
                     probes: Sequence[str] = DEFAULT_PROBES, split: str = "meta_test", batch_size: int = 32,
                     **geometry) -> dict[str, Any]:
    """{group: {probe: {...}}, "geometry", "num_clips", "num_queries", "seconds"} for the raw inputs of
    `pretrain_config`'s data and modalities on `episode_list`."""
    t0 = time.perf_counter()
    if not episode_list:
        raise ValueError("the episode list is empty")
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise ValueError(f"anchor groups must be among {GROUPS}, got {list(groups)}")
    geo = frozen_features.default_geometry(pretrain_config, **geometry)
    names = sorted({c for e in episode_list for c in (*e.support, *e.query)})
    raw = raw_features(frozen_features._plain(pretrain_config.data), names, geo, split=split, batch_size=batch_size)
    out: dict[str, Any] = {g: evaluate_features(group_features(raw, g), names, episode_list, probes=probes)
                           for g in groups}
    out.update(geometry=geo.as_dict(), num_clips=len(names), num_queries=sum(len(e.query) for e in episode_list),
               seconds=time.perf_counter() - t0)
    return out


def format_table(results: Mapping[str, Any], groups: Sequence[str], probes: Sequence[str]) -> str:
    """Markdown table: one row per anchor group, one column per probe (accuracy ± CI, %)."""
    lines = ["| raw features | " + " | ".join(probes) + " |", "|---" * (len(probes) + 1) + "|"]
    for g in groups:
        cells = [f"{results[g][p]['accuracy']:.1f} ± {results[g][p]['ci95']:.1f}" for p in probes]
        lines.append(f"| raw {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.evaluators.anchors", __doc__)
    p.add_argument("--config", default=packaged("pretrain.py:runlocal"),
                   help="pretraining config file[:args] whose data, modalities and geometry are used "
                        "(default: %(default)s)")
    p.add_argument("--episodes", default="", help="episode list file (otherwise drawn, see --part)")
    p.add_argument("--part", default="novel", choices=tuple(PART_SPLITS),
                   help="classes of the drawn list (default: %(default)s)")
    p.add_argument("--num_episodes", type=int, default=2000, help="drawn episodes (default: %(default)s)")
    p.add_argument("--queries", type=int, default=5,
                   help="queries per episode (trx: a multiple of --way, spread over the classes; default: 5)")
    p.add_argument("--protocol", default="trx", choices=("official", "trx"),
                   help="trx: queries from every class; official: from one class (default: %(default)s)")
    p.add_argument("--episode_seed", type=int, default=0, help="seed of the drawn list (default: 0)")
    p.add_argument("--way", type=int, default=5, help="classes per episode (default: 5)")
    p.add_argument("--shot", type=int, default=1, help="support clips per class (default: 1)")
    p.add_argument("--modalities", default=",".join(GROUPS), help="anchor rows (default: %(default)s)")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES), help="probes (default: %(default)s)")
    p.add_argument("--num_frames", type=int, default=0, help="frames per clip (0: the config's)")
    p.add_argument("--image_size", type=int, default=0, help="frame size (0: the config's)")
    p.add_argument("--save_episodes", default="",
                   help="write the drawn episode list here, to evaluate encoders on the same episodes")
    p.add_argument("--out", default="", help="write the results as JSON here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a, a.overrides = split_overrides(parser(), argv)
    return cli.run(_run, a)


def _run(a) -> int:
    config = load_config_file(a.config, a.overrides)
    groups = [g for g in a.modalities.split(",") if g]
    probes = [p for p in a.probes.split(",") if p]
    data_cfg = frozen_features._plain(config.data)
    if a.episodes:
        elist = E.load_episode_list(a.episodes)
    else:
        elist = frozen.draw_episode_list(data_cfg, part=a.part, way=a.way, shot=a.shot, protocol=a.protocol,
                                              queries=a.queries, num_episodes=a.num_episodes, seed=a.episode_seed)
        if a.save_episodes:
            E.save_episode_list(a.save_episodes, elist)
    res = evaluate_anchors(config, elist, groups=groups, probes=probes,
                           split=PART_SPLITS[a.part], num_frames=a.num_frames,
                           image_size=a.image_size)
    print(f"{a.config}: {len(elist)} episodes, {res['num_queries']} queries, {res['num_clips']} clips, "
          f"{res['seconds']:.0f} s")
    print(format_table(res, groups, probes))
    if a.out:
        epath.Path(a.out).write_text(json.dumps({"config": a.config, "episodes": a.episodes or vars(a), **res},
                                                indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    cli.quiet_environment()
    raise SystemExit(main())
