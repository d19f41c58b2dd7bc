"""The paper's ablations as one table, from a config (`configs/ablations.py`).

    python -m mumae_jax.bench.ablations --config configs/ablations.py:runlocal --workdir /tmp/ablations \\
        [--config.rows=random,sync,oneshot_sync] [--config.pretrain_steps=3000]

Under `workdir`:
  episodes_novel.json        the fixed novel-class list every row is scored on (drawn once)
  anchors.json               raw-input probes (no encoder)
  <condition>/pretrain/      a pretraining run (main.py's layout; `random` holds only its config.json)
  <condition>/frozen.json    frozen probes per pooling and modality group
  <oneshot row>/             a one-shot run (report.json: final and validation-selected accuracy)
  table.md, results.json     the table and every number behind it, with each row's seconds
Finished stages are not redone (a rerun prints the table); an interrupted pretraining or one-shot run
resumes from its checkpoint. Cells are accuracy ± 95 % CI in % (5-way 1-shot, novel classes).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Mapping, Optional, Sequence

from etils import epath
from flax import traverse_util

from mumae_jax.core import cli
from mumae_jax.evaluators import anchors, frozen
from mumae_jax.core.config_files import load_config_file, packaged, split_overrides
from mumae_jax.data import episodes as E

log = logging.getLogger(__name__)


def _read(path: epath.Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _write(path: epath.Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def _settings(**parts) -> dict:
    """A JSON-comparable record of what a cached stage was made with: {"<part>.<dotted key>": value}."""
    flat = {f"{part}." + ".".join(k): v for part, cfg in parts.items()
            for k, v in traverse_util.flatten_dict(cfg.to_dict()).items()}
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def _cached(path: epath.Path, settings: dict, fresh: dict) -> dict:
    """The cached result at `path` if it was made with `settings` (else `fresh`); a result made with other
    settings is an error naming the keys that differ (a rerun never reports another run's numbers)."""
    result = _read(path)
    if result is None:
        return {**fresh, "settings": settings}
    old = result.setdefault("settings", settings)  # results written before settings were recorded: adopted
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff[:6])
        raise ValueError(f"{path.parent} was made with other settings than this command's ({shown}"
                         f"{'; ...' if len(diff) > 6 else ''}); use another --workdir or remove {path.parent}")
    return result


def selected_rows(config) -> tuple[list[str], list[str]]:
    """(pretraining conditions, one-shot rows) named by `config.rows`, in its order; ValueError for an
    unknown name. A one-shot row also runs the condition it starts from (first, if `rows` lacks it)."""
    names = [r for r in str(config.rows).split(",") if r]
    known = list(config.conditions) + list(config.oneshot_rows)
    bad = [r for r in names if r not in known]
    if bad or not names:
        raise ValueError(f"config.rows: unknown or no rows {bad or names}; known: {', '.join(known)}")
    shots = [r for r in names if r in config.oneshot_rows]
    conds = [r for r in names if r in config.conditions]
    inits = [config.oneshot_rows[r].init for r in shots]
    return list(dict.fromkeys([i for i in inits if i not in conds] + conds)), shots


def condition_config(config, name: str):
    """The pretraining config of condition `name` with the ablation's schedule and data directory (a copy)."""
    p = config.conditions[name].config.copy_and_resolve_references()
    p.seed = config.seed
    if config.pretrain_steps > 0:
        p.total_steps = int(config.pretrain_steps)
        p.warmup_steps = max(1, p.total_steps // 20)
        p.checkpoint_every_steps = max(1, p.total_steps // 4)
    if config.data_dir:
        p.data.dir = config.data_dir
    return p


def episode_list(config, workdir: epath.Path) -> E.EpisodeList:
    """The fixed novel-class trx list (drawn once from the first condition's data, then read back)."""
    path = workdir / "episodes_novel.json"
    if not path.exists():
        data = frozen._plain(condition_config(config, next(iter(config.conditions))).data)
        e = config.episodes
        lst = frozen.draw_episode_list(data, part="novel", protocol="trx", queries=e.queries,
                                            num_episodes=e.num_episodes, seed=e.seed)
        E.save_episode_list(str(path), lst)
    lst = E.load_episode_list(str(path))
    got = {k: lst.meta.get(k) for k in ("num_episodes", "seed")}
    if got != {"num_episodes": config.episodes.num_episodes, "seed": config.episodes.seed}:
        raise ValueError(f"{path} holds {got}, not config.episodes' {dict(config.episodes)}; use another "
                         f"--workdir or remove the file")
    return lst


def run_anchors(config, workdir: epath.Path, elist) -> dict:
    path = workdir / "anchors.json"
    res = _read(path)
    if res is None:
        sync = condition_config(config, "sync" if "sync" in config.conditions else next(iter(config.conditions)))
        res = anchors.evaluate_anchors(sync, elist, groups=_csv(config.frozen.groups),
                                       probes=_csv(config.frozen.probes))
        _write(path, res)
    return res


def _csv(s: str) -> list[str]:
    return [x for x in str(s).split(",") if x]


def present_groups(pretrain_config, groups: Sequence[str]) -> list[str]:
    """The `groups` that select a modality of this pretraining model (VideoMAE has no `sensors`); the
    table shows "—" for the others."""
    names = set(pretrain_config.modalities)
    kinds = {n: pretrain_config.modality[n]["kind"] for n in names}
    have = {"all": names, "video": {n for n in names if kinds[n] == "video"},
            "sensors": {n for n in names if kinds[n] == "sensor"}}
    return [g for g in groups if have.get(g, {g} & names)]


def run_condition(config, name: str, workdir: epath.Path, episodes_file: str) -> dict:
    """Pretraining (unless `random`) and frozen probes of one condition; cached in <name>/result.json."""
    from mumae_jax.trainers import pretraining

    cond, out = config.conditions[name], workdir / name
    pre = out / "pretrain"
    pre.mkdir(parents=True, exist_ok=True)
    p = condition_config(config, name)
    result = _cached(out / "result.json", _settings(pretrain=p, frozen=config.frozen, episodes=config.episodes),
                     {"name": name, "label": cond.label})
    if not cond.pretrain:
        (pre / "config.json").write_text(p.to_json_best_effort(indent=2), encoding="utf-8")
    elif "pretrain_seconds" not in result:
        t0 = time.time()
        hist = pretraining.train_and_evaluate(p, str(pre))["history"]
        result.update(pretrain_seconds=time.time() - t0, pretrain_steps=p.total_steps,
                      pretrain_loss_first=hist[0]["loss"], pretrain_loss_last=hist[-1]["loss"])
        _write(out / "result.json", result)
    groups = present_groups(p, _csv(config.frozen.groups))
    for pooling in _csv(config.frozen.poolings):
        if pooling in result.get("frozen", {}):
            continue
        t0 = time.time()
        kw = dict(config=p, random_init=True) if not cond.pretrain else {}
        settings = dict(episodes=episodes_file, part="novel", modalities=groups, pooling=pooling,
                        probes=_csv(config.frozen.probes), init_seed=config.seed)
        r = frozen.evaluate_run(str(pre) if cond.pretrain else "", settings=settings, **kw)
        result.setdefault("frozen", {})[pooling] = r["groups"]
        result.setdefault("frozen_seconds", {})[pooling] = time.time() - t0
        _write(out / "result.json", result)
    return result


def run_oneshot(config, name: str, workdir: epath.Path, episodes_file: str) -> dict:
    """One one-shot row: the stage initialised from its condition's run (or random), tested on the shared list."""
    from mumae_jax.trainers import oneshot_training

    row, out = config.oneshot_rows[name], workdir / name
    o = config.oneshot.copy_and_resolve_references()
    o.seed = config.seed
    o.model.update(fusion=row.fusion, mae_pooling=row.mae_pooling)
    random = not config.conditions[row.init].pretrain
    o.model_init = str(workdir / row.init / "pretrain")
    o.init.update(mae="random" if random else "pretrained", video="random" if random else row.video_init)
    o.evals.episodes.test_list = episodes_file
    if config.data_dir:
        o.data.dir = config.data_dir
    settings = _settings(oneshot=o, init=condition_config(config, row.init))
    for k in ("oneshot.model_init", "oneshot.evals.episodes.test_list"):  # paths inside the workdir, which may move
        settings.pop(k)
    result = _cached(out / "result.json", settings, {"name": name, "label": row.label})
    if "report" not in result:
        t0 = time.time()
        rep = oneshot_training.train_and_evaluate(o, str(out))["report"]
        if rep is None:
            raise RuntimeError(f"the one-shot run {out} stopped before its report (preempted?); rerun to resume")
        result.update(report=rep, seconds=time.time() - t0, total_tasks=o.total_tasks)
        _write(out / "result.json", result)
    return result


def _cell(r: Optional[Mapping[str, Any]]) -> str:
    return f"{r['accuracy']:.1f} ± {r['ci95']:.1f}" if r else "—"


def format_tables(config, anchor: Mapping[str, Any], conditions: Sequence[dict], shots: Sequence[dict]) -> str:
    """Markdown: frozen probes (one row per condition and pooling, prototype / ridge per group) and the
    one-shot stage (final, validation-selected)."""
    groups, probes = _csv(config.frozen.groups), _csv(config.frozen.probes)
    head = "| features | pooling | " + " | ".join(f"{g}: {p}" for g in groups for p in probes) + " | seconds |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    lines.append("| raw inputs (anchors) | — | " + " | ".join(_cell(anchor.get(g, {}).get(p)) for g in groups
                                                            for p in probes) + f" | {anchor['seconds']:.0f} |")
    for r in conditions:
        for pooling, res in r.get("frozen", {}).items():
            secs = r["frozen_seconds"][pooling] + (r.get("pretrain_seconds", 0.0) if pooling == next(iter(r["frozen"]))
                                                   else 0.0)
            lines.append(f"| {r['label']} | {pooling} | " + " | ".join(_cell(res.get(g, {}).get(p)) for g in groups
                                                                         for p in probes) + f" | {secs:.0f} |")
    if shots:
        lines += ["", "| one-shot stage | final | validation-selected | seconds |", "|---|---|---|---|"]
        for r in shots:
            rep = r["report"]
            lines.append(f"| {r['label']} | {_cell(rep.get('final'))} | {_cell(rep.get('validation_selected'))} | "
                         f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def run(config, workdir: str) -> dict:
    """Every selected row (cached), then the tables; returns {"table", "anchors", "conditions", "oneshot"}."""
    conditions, shots = selected_rows(config)
    wd = epath.Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    elist = episode_list(config, wd)
    episodes_file = str(wd / "episodes_novel.json")
    anchor = run_anchors(config, wd, elist)
    cond_results = []
    for name in conditions:
        print(f"[{time.time() - t0:6.0f} s] {config.conditions[name].label}", flush=True)
        cond_results.append(run_condition(config, name, wd, episodes_file))
    shot_results = []
    for name in shots:
        print(f"[{time.time() - t0:6.0f} s] {config.oneshot_rows[name].label}", flush=True)
        shot_results.append(run_oneshot(config, name, wd, episodes_file))
    table = format_tables(config, anchor, cond_results, shot_results)
    (wd / "table.md").write_text(table + "\n", encoding="utf-8")
    out = {"table": table, "anchors": anchor, "conditions": cond_results, "oneshot": shot_results,
           "num_episodes": len(elist), "num_queries": sum(len(e.query) for e in elist),
           "seconds_this_invocation": time.time() - t0}
    _write(wd / "results.json", out)
    return out


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.bench.ablations", __doc__)
    p.epilog = "--config.x=y overrides of --config are accepted as by main.py."
    p.add_argument("--config", default=packaged("ablations.py:runlocal"), help="ablation config file[:args]")
    p.add_argument("--workdir", required=True, help="where the runs, the episode list and the table go")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser()
    a, overrides = split_overrides(p, argv)
    a.overrides = overrides
    return cli.run(_main, a)


def _main(a) -> int:
    out = run(load_config_file(a.config, a.overrides), a.workdir)
    print(out["table"])
    print(f"novel-class 5-way 1-shot, {out['num_episodes']} episodes, {out['num_queries']} queries per cell; "
          f"this invocation took {out['seconds_this_invocation']:.0f} s; {a.workdir}/table.md")
    return 0


if __name__ == "__main__":
    cli.quiet_environment()
    raise SystemExit(main())
