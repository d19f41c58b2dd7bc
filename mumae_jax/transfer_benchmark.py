"""Transfer benchmark on the embedded synthetic dataset: does Mu-MAE pretraining help one-shot learning?

Pretrain on the base classes, then 5-way 1-shot on the novel classes, for four initialisations:
  (a) random       no pretraining (the same multimodal encoder, randomly initialised)
  (b) video_mae    MAE pretrained on video only (VideoMAE)
  (c) mumae_sync   Mu-MAE: video + 4 sensors, synchronized sensor masking (the paper)
  (d) mumae_indep  Mu-MAE with independent per-sensor masks (ablation)
Each is evaluated twice on the same fixed novel-class episode list:
  frozen   the pretrained encoder's mean-pooled features with nearest-prototype and ridge probes;
  oneshot  the full Mu-MAE one-shot model trained episodically on the base classes (minus the validation
           classes), reported for the final and the validation-selected checkpoint.
With --diagnose (default) a second table probes the encoders fed sensors only / video only, and the raw
inputs, to show which input carries the few-shot signal.
All numbers are accuracy ± 95% CI (1.96·std/√n) in %.

    python -m mumae_jax.transfer_benchmark --workdir=/tmp/transfer [--pretrain_steps=300] \\
        [--oneshot_tasks=192] [--episodes=1000] [--oneshot_episodes=200] \\
        [--conditions=random,video_mae,mumae_sync,mumae_indep]

Runs are cached in the workdir (a finished stage is not redone), so the command can be re-run to print
the table; `table.md` and `results.json` are written there.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

CONDITIONS = {
    "random": dict(pretrain=None, label="(a) random initialisation"),
    "video_mae": dict(pretrain="runlocal,modalities=video", label="(b) MAE, video only"),
    "mumae_sync": dict(pretrain="runlocal,sensor_masking=synchronized", label="(c) Mu-MAE, synchronized masking"),
    "mumae_indep": dict(pretrain="runlocal,sensor_masking=independent", label="(d) Mu-MAE, independent masking"),
}


def pretrain_config(arg: str, steps: int, seed: int):
    from configs import pretrain

    c = pretrain.get_config(arg)
    c.total_steps, c.seed = steps, seed
    c.warmup_steps = max(1, steps // 10)
    c.checkpoint_every_steps = steps
    c.log_every_steps = max(1, steps // 20)
    c.progress_bar = False
    return c


def oneshot_config(init_workdir: str, tasks: int, seed: int, test_episodes: int):
    from configs import oneshot

    c = oneshot.get_config("runlocal" + ("" if init_workdir else ",init=random"))
    c.init.pretrain_workdir = init_workdir
    c.total_tasks, c.seed = tasks, seed
    c.eval.test_episodes = test_episodes
    c.progress_bar = False
    return c


def _done(path: str) -> Optional[dict]:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return None


def _save(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def run_condition(name: str, workdir: str, a: argparse.Namespace) -> dict:
    """Pretraining (if any), frozen-feature probes and one-shot training of one condition (cached)."""
    from mumae_jax import frozen_eval, oneshot_train, train
    from mumae_jax.data import episodes as E

    cond, out = CONDITIONS[name], os.path.join(workdir, name)
    os.makedirs(out, exist_ok=True)
    result = _done(os.path.join(out, "result.json")) or {"condition": name, "label": cond["label"]}
    pre_dir = os.path.join(out, "pretrain") if cond["pretrain"] else ""
    if pre_dir and "pretrain_seconds" not in result:
        t0 = time.time()
        hist = train.train_and_evaluate(pretrain_config(cond["pretrain"], a.pretrain_steps, a.seed), pre_dir)["history"]
        result.update(pretrain_seconds=time.time() - t0, pretrain_steps=a.pretrain_steps,
                      pretrain_loss_first=hist[0]["loss"], pretrain_loss_last=hist[-1]["loss"])
        _save(os.path.join(out, "result.json"), result)
    if "frozen" not in result or result.get("frozen_frames") != a.frozen_frames:
        t0 = time.time()
        test_list = E.load_episode_list(os.path.join(workdir, "episodes_test.json"))
        geometry = dict(seq_len=a.frozen_frames, image_size=64, resize_to=72, sensor_length=128)
        if pre_dir:
            encoder, params, _ = frozen_eval.from_pretrain_run(pre_dir, **geometry)
        else:
            encoder, params = frozen_eval.from_pretrain_config(pretrain_config("runlocal", 1, a.seed), seed=a.seed,
                                                               **geometry)
        r = frozen_eval.evaluate_episodes(encoder, params, _data_cfg(), test_list, probes=("prototype", "ridge"),
                                          **geometry)
        result["frozen"] = {p: {k: r[p][k] for k in ("accuracy", "ci95", "num_queries")} for p in ("prototype", "ridge")}
        result["frozen_seconds"], result["frozen_frames"] = time.time() - t0, a.frozen_frames
        _save(os.path.join(out, "result.json"), result)
    if a.diagnose and result.get("by_modality_frames") != a.frozen_frames:
        result["by_modality"] = modality_probes(name, pre_dir, a)
        result["by_modality_frames"] = a.frozen_frames
        _save(os.path.join(out, "result.json"), result)
    if "oneshot" not in result and a.oneshot_tasks > 0:
        t0 = time.time()
        c = oneshot_config(pre_dir, a.oneshot_tasks, a.seed, a.oneshot_episodes)
        c.eval.test_list = os.path.join(workdir, "episodes_test_oneshot.json")
        c.episodes.seq_len = a.frames
        rep = oneshot_train.train_and_evaluate(c, os.path.join(out, "oneshot"))["report"]
        result["oneshot"] = rep
        result["oneshot_seconds"] = time.time() - t0
        _save(os.path.join(out, "result.json"), result)
    return result


SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
PROBES = ("prototype", "ridge")


def _geometry(a) -> dict:
    return dict(seq_len=a.frozen_frames, image_size=64, resize_to=72, sensor_length=128)


def modality_probes(name: str, pre_dir: str, a: argparse.Namespace) -> dict:
    """Frozen probes on the encoder fed ONE modality group (sensors only / video only): which input
    carries the few-shot signal through the (pretrained or random) encoder."""
    import jax
    from mumae_jax import frozen_eval, pretrained
    from mumae_jax.data import episodes as E
    from mumae_jax.models import mae_features

    if pre_dir:
        pcfg, pparams, _ = pretrained.load_params(pre_dir)
    else:
        pcfg, pparams = pretrain_config("runlocal", 1, a.seed), None
    lst = E.load_episode_list(os.path.join(a.workdir, "episodes_test.json"))
    out = {}
    for group, mods in (("sensors", SENSORS), ("video", ("video",))):
        if not set(mods) <= set(pcfg.modalities):
            continue
        enc = mae_features.from_pretrain_config(pcfg, drop_path=0.0, modalities=mods, num_frames=a.frozen_frames,
                                                image_size=64, sensor_length=128)
        dummy = {sp.name: jax.numpy.zeros((1,) + sp.input_shape) for sp in enc.specs}
        params = enc.init(jax.random.key(a.seed), dummy)["params"]
        if pparams is not None:
            params, _ = mae_features.load_pretrained(params, pparams)
        r = frozen_eval.evaluate_episodes(enc, params, _data_cfg(), lst, probes=PROBES, **_geometry(a))
        out[group] = {p: {k: r[p][k] for k in ("accuracy", "ci95")} for p in PROBES}
    return out


def raw_input_probes(a: argparse.Namespace) -> dict:
    """The same probes on the preprocessed inputs themselves (pixels; concatenated sensor samples)."""
    import numpy as np
    from mumae_jax import fewshot_probes
    from mumae_jax.data import episode_input
    from mumae_jax.data import episodes as E

    lst = E.load_episode_list(os.path.join(a.workdir, "episodes_test.json"))
    names = sorted({c for e in lst for c in (*e.support, *e.query)})
    it = episode_input.build_clip_input(_data_cfg(), names, sensors=SENSORS, batch_size=32, **_geometry(a))
    feats: dict[str, list] = {"video": [], "sensors": []}
    try:
        for b in it:
            keep = b["index"] >= 0
            feats["video"].append(b["video"][keep].reshape(int(keep.sum()), -1))
            feats["sensors"].append(np.concatenate([b[s][keep].reshape(int(keep.sum()), -1) for s in SENSORS], 1))
    finally:
        it.close()
    pos = {n: i for i, n in enumerate(names)}
    sl, ql = np.asarray([e.support_labels for e in lst]), np.asarray([e.query_labels for e in lst])
    out = {}
    for group, f in feats.items():
        f = np.concatenate(f)[: len(names)]
        sup = np.stack([f[[pos[c] for c in e.support]] for e in lst])
        q = np.stack([f[[pos[c] for c in e.query]] for e in lst])
        r = fewshot_probes.evaluate(sup, sl, q, ql, 5, probes=PROBES)
        out[group] = {p: {k: r[p][k] for k in ("accuracy", "ci95")} for p in PROBES}
    return out


def format_diagnosis(raw: dict, results: Sequence[dict]) -> str:
    def cell(r):
        return f"{r['accuracy']:.1f} ± {r['ci95']:.1f}" if r else "—"

    lines = ["| features | sensors only: prototype | sensors only: ridge | video only: prototype | video only: ridge |",
             "|---|---|---|---|---|"]
    rows = [("raw inputs (no encoder)", raw)] + [(r["label"], r.get("by_modality", {})) for r in results]
    for label, d in rows:
        s, v = d.get("sensors", {}), d.get("video", {})
        lines.append(f"| {label} | {cell(s.get('prototype'))} | {cell(s.get('ridge'))} | {cell(v.get('prototype'))} | "
                     f"{cell(v.get('ridge'))} |")
    return "\n".join(lines)


def _data_cfg() -> dict:
    from configs import oneshot

    return oneshot.get_config("runlocal").data.to_dict()


def make_test_list(workdir: str, num: int, seed: int, name: str = "episodes_test.json"):
    """A fixed novel-class list (drawn once, saved); a shorter list with the same seed is a prefix."""
    from mumae_jax import oneshot_train
    from configs import oneshot
    from mumae_jax.data import episodes as E

    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        c = oneshot.get_config("runlocal,init=random")
        lst = oneshot_train._draw(c, oneshot_train.records(c), oneshot_train.class_split(c), "novel", num, seed)
        E.save_episode_list(path, lst)
    return path


def format_table(results: Sequence[dict]) -> str:
    def cell(r):
        return f"{r['accuracy']:.1f} ± {r['ci95']:.1f}" if r else "—"

    lines = ["| initialisation | pretrain loss (first → last) | frozen: prototype | frozen: ridge | "
             "one-shot model: final | one-shot model: val-selected |", "|---|---|---|---|---|---|"]
    for r in results:
        loss = (f"{r['pretrain_loss_first']:.2f} → {r['pretrain_loss_last']:.2f}" if "pretrain_loss_first" in r
                else "—")
        fr, os_ = r.get("frozen", {}), r.get("oneshot") or {}
        lines.append(f"| {r['label']} | {loss} | {cell(fr.get('prototype'))} | {cell(fr.get('ridge'))} | "
                     f"{cell(os_.get('final'))} | {cell(os_.get('validation_selected'))} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mumae_jax.transfer_benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--pretrain_steps", type=int, default=300)
    p.add_argument("--oneshot_tasks", type=int, default=192, help="0 skips the one-shot model")
    p.add_argument("--episodes", type=int, default=1000, help="novel-class test episodes (frozen probes)")
    p.add_argument("--oneshot_episodes", type=int, default=200,
                   help="test episodes of the one-shot model (the first ones of the same list; the whole model "
                        "runs once per episode, so this is the slow part on a CPU)")
    p.add_argument("--frozen_frames", type=int, default=8,
                   help="frames per clip for the frozen probes (default: the pretraining clips' 8)")
    p.add_argument("--frames", type=int, default=4,
                   help="frames per clip of the one-shot model (even; 4 keeps the CPU run short)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True,
                   help="also probe sensor-only / video-only encoder features and the raw inputs")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in a.conditions.split(",") if n]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        p.error(f"unknown conditions {unknown}; known: {', '.join(CONDITIONS)}")
    os.makedirs(a.workdir, exist_ok=True)
    t0 = time.time()
    make_test_list(a.workdir, a.episodes, a.seed)
    make_test_list(a.workdir, a.oneshot_episodes, a.seed, "episodes_test_oneshot.json")
    results = []
    for n in names:
        print(f"[{time.time() - t0:7.0f}s] {CONDITIONS[n]['label']} ...", flush=True)
        results.append(run_condition(n, a.workdir, a))
    table = format_table(results)
    if a.diagnose:
        raw = _done(os.path.join(a.workdir, "raw.json"))
        if raw is None or raw.get("frames") != a.frozen_frames:
            raw = {"frames": a.frozen_frames, **raw_input_probes(a)}
            _save(os.path.join(a.workdir, "raw.json"), raw)
        table += "\n\nWhich input carries the signal (frozen probes, same episodes):\n\n" + format_diagnosis(raw, results)
    total = time.time() - t0
    with open(os.path.join(a.workdir, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    _save(os.path.join(a.workdir, "results.json"), {"results": results, "seconds_this_invocation": total,
                                                     "args": vars(a)})
    print(table)
    print(f"novel-class 5-way 1-shot episodes: {a.episodes} per frozen-probe cell, {a.oneshot_episodes} (a prefix "
          f"of the same list) per one-shot-model cell; this invocation took {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
