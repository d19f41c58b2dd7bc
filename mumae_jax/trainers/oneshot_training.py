"""One-shot stage loop: `train_and_evaluate(config, workdir)` for `configs/oneshot.py`.

pretraining run (config + checkpoint) -> one-shot model (MAE encoder and TimeSformer initialised from it)
-> fixed validation / test episode lists (saved in the workdir) -> jitted step over `tasks_per_batch`
training episodes -> periodic validation (best checkpoint kept in best/) -> final report on the test list
(final checkpoint, validation-selected checkpoint, optionally the paper's test-selected maximum).
Checkpoints, metrics (JSONL + TensorBoard), resume and SIGTERM work as in pretraining.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
import tqdm
from etils import epath

from mumae_jax.core import checkpointing, metrics, run_lock, sharding
from mumae_jax.evaluators import episode_accuracy, frozen
from mumae_jax.steps import episodic_step
from mumae_jax.trainers import pretraining
from mumae_jax.weights import pretrained
from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from mumae_jax.models import mae_features, timesformer, variants
from mumae_jax.models.oneshot import MuMAEOneShot

log = logging.getLogger(__name__)

TFDS_SPLITS = {"base": "meta_train", "validation": "meta_val", "novel": "meta_test"}


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------

def init_source(config) -> str:
    """Where the pretrained MAE weights come from: `config.model_init` or its older name
    `config.init.pretrain_workdir` (a pretraining workdir or a converted checkpoint directory)."""
    a, b = config.get("model_init", ""), config.init.pretrain_workdir
    if a and b and checkpointing.absolute(a) != checkpointing.absolute(b):
        raise ValueError(f"config.model_init={a!r} and config.init.pretrain_workdir={b!r} disagree; set one")
    return a or b


def pretrain_config(config):
    """The pretraining config that fixes the MAE encoder's architecture (see configs/oneshot.py)."""
    if init_source(config):
        return pretrained.load_config(init_source(config))
    if config.init.mae == "pretrained" or config.init.video == "mae":
        raise ValueError("config.init.mae='pretrained' / init.video='mae' need config.model_init (older name: "
                         "config.init.pretrain_workdir), a pretraining workdir or a converted checkpoint; use "
                         "configs/oneshot.py:init=random for random initialisation")
    from mumae_jax.configs import pretrain

    return pretrain.get_config(config.init.pretrain_config)


def build_model(config, pcfg) -> MuMAEOneShot:
    ep, m = config.episodes, config.model
    mae = mae_features.from_pretrain_config(pcfg, drop_path=m.mae_drop_path, normalize_video=m.normalize_video,
                                            pooling=m.get("mae_pooling", "mean"),
                                            num_frames=ep.seq_len, image_size=ep.image_size,
                                            sensor_length=ep.sensor_length)
    sizes = variants.resolve(pcfg.model if not m.video_variant else {"variant": m.video_variant})
    patch = [s for s in mae.specs if s.kind == "video"][0].tubelet[1] if any(
        s.kind == "video" for s in mae.specs) else 16
    video = timesformer.TimeSformer(width=sizes["width"], depth=sizes["depth"], num_heads=sizes["num_heads"],
                                    mlp_dim=sizes["mlp_dim"], patch_size=patch, num_frames=ep.seq_len,
                                    image_size=ep.image_size, drop_path=m.video_drop_path)
    return MuMAEOneShot(mae=mae, video=video, sensors=tuple(config.sensors), sensor_layout=m.sensor_layout,
                        sensor_dim=m.sensor_dim, fused_dim=m.fused_dim, channels=m.channels, heads=m.heads,
                        way=ep.way, num_classes=m.num_classes, scale_cls=m.scale_cls, alpha=m.alpha,
                        temperature=m.temperature, cam_hidden=m.cam_hidden, normalize_video=m.normalize_video,
                        fusion_mode=m.get("fusion", "mae_query"), mae_dropout=m.get("mae_dropout", 0.0))


def pretrained_params(config, params, pretrain_params) -> tuple[dict, dict]:
    """Overwrites the MAE encoder / TimeSformer parameters from the pretraining params (strict)."""
    params, report = dict(params), {}
    if config.init.mae == "pretrained":
        params["mae"], report["mae"] = mae_features.load_pretrained(params["mae"], pretrain_params)
    if config.init.video == "mae":
        params["video"], report["video"] = timesformer.init_from_mae(params["video"], pretrain_params,
                                                                    config.init.tube_to_patch)
    return params, report


# ----------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------

def class_split(config) -> splits.ClassSplit:
    return frozen.class_split(config.data, config.class_split.num_val, config.class_split.seed)


def records(config) -> list:
    return frozen.records(config.data)


def _draw(config, recs, cs, part: str, num: int, seed: int) -> E.EpisodeList:
    ep = config.episodes
    return E.make_episode_list(recs, cs, part=part, way=ep.way, shot=ep.shot, protocol=ep.protocol,
                               queries=ep.queries, num_episodes=num, seed=seed,
                               distinct_instances=ep.distinct_instances)


def eval_list(config, recs, cs, workdir: str, which: str) -> Optional[E.EpisodeList]:
    """The fixed `which` ('val' | 'test') list: a given file, else drawn (and checked against the one a
    resumed run saved). Writes nothing: `_save_eval_list` saves a drawn list once the run is set up."""
    part = {"val": "validation", "test": "novel"}[which]
    given = config.eval.get(f"{which}_list", "")
    if given:
        lst = E.load_episode_list(given)
        E.verify_episode_list(lst, recs)
        return lst
    if not getattr(cs, part):
        return None
    path = epath.Path(workdir) / f"episodes_{which}.json"
    lst = _draw(config, recs, cs, part, config.eval[f"{which}_episodes"], config.eval[f"{which}_seed"])
    if path.exists():
        saved = E.load_episode_list(path)
        if list(saved) != list(lst):
            raise ValueError(f"{path} differs from the list this config draws; a resumed run must keep its "
                             f"episodes (delete the workdir or pass eval.{which}_list={path})")
    return lst


def _save_eval_list(config, workdir: str, which: str, lst: Optional[E.EpisodeList]) -> None:
    """Saves a drawn `which` list as workdir/episodes_{which}.json (process 0, once)."""
    path = epath.Path(workdir) / f"episodes_{which}.json"
    if lst is not None and not config.eval.get(f"{which}_list", "") and not path.exists() \
            and jax.process_index() == 0:
        E.save_episode_list(path, lst)


# ----------------------------------------------------------------------------------------------------
# Loop
# ----------------------------------------------------------------------------------------------------

def _episode_iter(config, lst, part: str, train_mode: bool, start: int = 0, repeat: bool = True):
    from mumae_jax.data import episode_input

    ep = config.episodes
    return episode_input.build_episode_input(
        config.data, lst, sensors=tuple(config.sensors), train=train_mode, seed=config.seed, seq_len=ep.seq_len,
        image_size=ep.image_size, resize_to=ep.resize_to, sensor_length=ep.sensor_length,
        split=TFDS_SPLITS[part], start=start, repeat=repeat)


def clip_evaluator(config, model: MuMAEOneShot, mesh, state_sh) -> Callable:
    """evaluate(state, episode_list, part, progress=False) -> {'accuracy', 'ci95', 'num_queries', 'hits'}:
    every distinct clip of the list encoded once (evaluation transform), then the episode head per episode
    (`episode_accuracy.evaluate_by_clips`; the same predictions as running the model episode by episode)."""
    from mumae_jax.data import episode_input

    encode_step, head_step = episodic_step.make_clip_eval_steps(model, mesh, state_sh)
    ep, be = config.episodes, int(config.eval.batch_episodes)
    rank, procs = jax.process_index(), jax.process_count()

    def local(batch):  # this process's share of a batch every process holds whole
        per = len(next(iter(batch.values()))) // procs
        return sharding.to_global({k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}, mesh)

    def evaluate(state, lst, part: str, progress: bool = False):
        names = sorted({c for e in lst for c in (*e.support, *e.query)})
        it = episode_input.build_clip_input(config.data, names, sensors=tuple(config.sensors), seq_len=ep.seq_len,
                                            image_size=ep.image_size, resize_to=ep.resize_to,
                                            sensor_length=ep.sensor_length, split=TFDS_SPLITS[part], batch_size=be)
        try:
            encoded = episode_accuracy.encode_clips(
                lambda b: jax.device_get(encode_step(state, sharding.to_global(b, mesh))), it, len(names),
                share=(rank, procs), progress=progress)
        finally:
            it.close()
        return episode_accuracy.evaluate_by_clips(lambda b: jax.device_get(head_step(state, local(b))), encoded, names,
                                              lst, be)

    return evaluate


def _setup(config, workdir: str, mesh) -> dict[str, Any]:
    """Model, episode lists, optimizer and abstract state shared by training and evaluation."""
    t = int(config.tasks_per_batch)
    sharding.check_batch_size(t, mesh, "config.tasks_per_batch")
    sharding.check_batch_size(int(config.eval.batch_episodes), mesh, "config.eval.batch_episodes")
    if config.lr <= 0 or config.total_tasks < t:
        raise ValueError(f"need lr > 0 and total_tasks >= tasks_per_batch; got lr={config.lr}, "
                         f"total_tasks={config.total_tasks}, tasks_per_batch={t}")
    model = build_model(config, pretrain_config(config))
    total = math.ceil(config.total_tasks / t)
    cs, recs = class_split(config), records(config)
    test_list = eval_list(config, recs, cs, workdir, "test")
    ep = config.episodes
    episode = episodic_step.dummy_episode(model, len(test_list[0].support), len(test_list[0].query), ep.seq_len,
                                     ep.image_size, ep.sensor_length)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, episode)["params"])
    freeze = episodic_step.frozen_names(shapes, tuple(config.get("freeze", ())))
    tx = episodic_step.make_optimizer(config.get("optimizer", "sgd"), config.lr, freeze)
    init, abstract, state_sh = episodic_step.state_initializer(model, tx, jax.random.key(config.seed), mesh, episode)
    val_list = eval_list(config, recs, cs, workdir, "val")
    # only now, with the config and the data checked: a failed start leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    for which, lst in (("test", test_list), ("val", val_list)):
        _save_eval_list(config, workdir, which, lst)
    return dict(model=model, total=total, tasks=t, class_split=cs, records=recs, val_list=val_list,
                test_list=test_list, tx=tx, freeze=freeze, init=init, abstract=abstract, state_sh=state_sh)


def _checkpoint_dir(workdir: str, best: bool) -> str:
    """The run's checkpoints/ (or best/: validation-selected); FileNotFoundError before anything is created."""
    d = epath.Path(workdir) / ("best" if best else "checkpoints")
    if not d.is_dir():
        raise FileNotFoundError(f"{d} not found: expected a one-shot run written by train_and_evaluate"
                                + (" with validation classes (best/ holds the validation-selected checkpoint)"
                                   if best else ""))
    return str(d)


def _saved_run(config, workdir: str, which: str, step: Optional[int], best: bool):
    """(mesh, setup, state, step, fixed `which` list, its episode-input part) of a saved checkpoint: the latest,
    `step`, or the validation-selected one (`best`)."""
    directory = _checkpoint_dir(workdir, best)  # before _setup creates the workdir
    if which not in ("val", "test"):
        raise ValueError(f"which={which!r}: expected 'val' or 'test'")
    mesh = sharding.make_mesh()
    s = _setup(config, workdir, mesh)
    lst = s[f"{which}_list"]
    if lst is None:
        raise ValueError(f"this run has no {which} episode list")
    ckpt = checkpointing.Checkpointer(directory, 1 << 30)
    try:
        step = step if step is not None else ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {ckpt.directory}")
        state, _ = ckpt.restore(step, s["abstract"])
    finally:
        ckpt.close()
    return mesh, s, state, step, lst, "novel" if which == "test" else "validation"


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None, which: str = "test",
                        best: bool = False) -> dict[str, Any]:
    """Accuracy ± CI of a saved checkpoint (latest, `step`, or the validation-selected one with
    `best=True`) on the run's fixed `which` ('val' | 'test') episode list. Deterministic."""
    mesh, s, state, step, lst, part = _saved_run(config, workdir, which, step, best)
    out = clip_evaluator(config, s["model"], mesh, s["state_sh"])(state, lst, part)
    return {"step": step, **out}


def predict_episode(config, workdir: str, index: int = 0, which: str = "test", step: Optional[int] = None,
                    best: bool = False) -> dict[str, Any]:
    """One episode of the run's fixed `which` list, through a saved checkpoint (as `evaluate_checkpoint`).

    Returns {"step", "episode" (data.episodes.Episode: clip and class names), "support_video"
    [S, T, H, W, 3] and "query_video" [Q, T, H, W, 3] (the model's input frames, in [0, 1]),
    "support_labels" [S], "query_labels" [Q], "logits" [Q, way], "probabilities" [Q, way] (softmax of
    the logits), "prediction" [Q] (episode labels)}.
    """
    mesh, s, state, step, lst, part = _saved_run(config, workdir, which, step, best)
    if not 0 <= index < len(lst):
        raise IndexError(f"episode {index} of a {which} list of {len(lst)} episodes")
    it = _episode_iter(config, lst, part, False, start=index, repeat=False)
    try:
        episode = next(it)
    finally:
        it.close()
    if int(episode["episode"]) != index:
        raise RuntimeError(f"the episode input returned episode {int(episode['episode'])}, not {index}")
    n = int(config.eval.batch_episodes)  # the eval step's sharded batch: the episode, repeated
    batch = {k: np.stack([v] * n) for k, v in episode.items() if k != "episode"}
    eval_step = episodic_step.make_eval_step(s["model"], mesh, s["state_sh"])
    pred, logits = jax.device_get(eval_step(state, sharding.to_global(batch, mesh)))
    logits = np.asarray(logits[0], np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return {"step": step, "episode": lst[index], "support_video": episode["support_video"],
            "query_video": episode["query_video"], "support_labels": episode["support_labels"],
            "query_labels": episode["query_labels"], "logits": logits,
            "probabilities": probs / probs.sum(-1, keepdims=True), "prediction": np.asarray(pred[0])}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Episodic training per `config` under `workdir` (resumes from its latest checkpoint, as the
    workdir's only run: `run_lock`).

    Returns {'step', 'state', 'history' (evaluation records), 'report', 'preempted'}.
    """
    mesh = sharding.make_mesh()
    s = _setup(config, workdir, mesh)
    with run_lock.RunLock(workdir):
        return _train(config, workdir, mesh, s)


def _train(config, workdir: str, mesh, s: dict) -> dict[str, Any]:
    """The loop of `train_and_evaluate` on `_setup`'s checked set-up `s`, in an existing, locked workdir."""
    is_main = jax.process_index() == 0
    model, total, t, tx = s["model"], s["total"], s["tasks"], s["tx"]
    val_list, test_list = s["val_list"], s["test_list"]
    # drawn only here: evaluating a checkpoint does not need the (paper: 256,020-episode) training list
    train_list = _draw(config, s["records"], s["class_split"], "base", total * t, config.seed)
    init, abstract, state_sh = s["init"], s["abstract"], s["state_sh"]
    eval_every = max(1, round(config.eval.every_tasks / t))
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    best_ckpt = checkpointing.Checkpointer(os.path.join(workdir, "best"), 1)
    writer = metrics.MetricWriter(workdir, tensorboard=config.write_tensorboard)
    newest = ckpt.restore_newest(abstract)  # damaged checkpoints are moved aside and skipped
    start = newest[0] if newest else 0
    writer.truncate_after(start)  # a rerun replaces what a killed run logged past `start`
    if start:
        state = newest[1]
        for b in best_ckpt.all_steps():
            if b > start:  # saved after the checkpoint we resume from; it will be re-evaluated
                best_ckpt.manager.delete(b)
    else:
        state = init()
        if config.init.mae == "pretrained" or config.init.video == "mae":
            _, pparams, pstep = pretrained.load_params(init_source(config), config.init.pretrain_step, mesh)
            params, report = pretrained_params(config, state["params"], pparams)
            # via host copies: the conversion reuses arrays (one MAE kernel feeds both TimeSformer
            # attentions), and a donated state must not hold one buffer twice
            params = jax.device_put(jax.tree.map(np.array, jax.device_get(params)), state_sh["params"])
            state = {**state, "params": params,
                     "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(params)}
            if is_main:
                (epath.Path(workdir) / "init_report.json").write_text(json.dumps(
                    {"pretrain_workdir": init_source(config), "pretrain_step": pstep, **report}, indent=1),
                    encoding="utf-8")
            log.info("initialised from %s step %d: %s", init_source(config), pstep,
                     {k: len(v["loaded"]) for k, v in report.items()})
    if is_main:
        (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2), encoding="utf-8")

    step_fn = episodic_step.make_train_step(model, tx, config.seed, t, mesh, state_sh, config.task_chunks,
                                       config.model.loss_weight, s["freeze"])
    evaluate = clip_evaluator(config, model, mesh, state_sh)

    def run_eval(st, lst, part):
        return evaluate(st, lst, part, progress=config.progress_bar and is_main)

    train_it = _episode_iter(config, train_list, "base", True, start=start * t, repeat=False)
    history = [r for r in (metrics.read_jsonl(writer.path) if writer.path.exists() else [])
               if "val_accuracy" in r or "test_accuracy" in r]
    best = max((h["val_accuracy"] for h in history if "val_accuracy" in h), default=-1.0)

    bar = tqdm.tqdm(total=total, initial=start, desc="one-shot", unit="step", dynamic_ncols=True,
                    disable=not (config.progress_bar and is_main))
    pending, step, preempted = [], start, False
    # the handler stays until the last checkpoint is committed: a SIGTERM during that wait loses nothing
    with pretraining._StopOnSignal() as stop:
        try:
            while step < total:
                tasks = [next(train_it) for _ in range(t)]
                batch = episodic_step.stack_tasks(tasks)
                state, m = step_fn(state, sharding.to_global(batch, mesh))
                step += 1
                pending.append(m)
                bar.update(1)
                last = step == total or stop.requested
                if step % config.log_every_steps == 0 or last:
                    fetched = jax.device_get(pending)
                    pretraining._raise_if_nonfinite(state)
                    record = {k: float(np.mean([f[k] for f in fetched])) for k in fetched[0]}
                    writer.write(step, {**record, "tasks": step * t})
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_accuracy']:.0f}")
                    pending = []
                if (step % eval_every == 0 or step == total) and not stop.requested:
                    rec = {"step": step, "tasks": step * t}
                    if val_list:
                        v = run_eval(state, val_list, "validation")
                        rec.update(val_accuracy=v["accuracy"], val_ci95=v["ci95"])
                        if v["accuracy"] > best:
                            best = v["accuracy"]
                            best_ckpt.save(step, state, {"step": step, "val_accuracy": best})
                    if config.eval.report_test_selection:
                        r = run_eval(state, test_list, "novel")
                        rec.update(test_accuracy=r["accuracy"], test_ci95=r["ci95"])
                    writer.write(step, {k: v for k, v in rec.items() if k != "step"})
                    history.append(rec)
                    log.info("evaluation at step %d: %s", step, rec)
                stopping = stop.should_stop(step)  # read again: the signal may have come during evaluation
                if last or stopping or step % config.checkpoint_every_steps == 0:
                    pretraining._raise_if_nonfinite(state)
                    ckpt.save(step, state, {"step": step, "total_steps": total})
                if stopping:
                    preempted = True
                    break
            report = None
            if not preempted:
                report = _final_report(config, state, step, best_ckpt, abstract, history,
                                       lambda st: run_eval(st, test_list, "novel"), workdir, is_main)
        finally:
            train_it.close()
            bar.close()
            for c in (ckpt, best_ckpt):
                c.wait()
                c.close()
            writer.close()
    return {"step": step, "state": state, "history": history, "report": report, "preempted": preempted}


def _final_report(config, state, step, best_ckpt, abstract, history, test_eval, workdir, is_main):
    final = test_eval(state)
    final_rec = {"step": step, "accuracy": final["accuracy"], "ci95": final["ci95"],
                 "num_queries": final["num_queries"]}
    val_rec = None
    best_ckpt.wait()
    best_step = best_ckpt.latest_step()
    if best_step is not None:
        if best_step == step:
            chosen = final
        else:
            best_state, _ = best_ckpt.restore(best_step, abstract)
            chosen = test_eval(best_state)
        val_acc = next(h["val_accuracy"] for h in history if h["step"] == best_step)
        val_rec = {"step": best_step, "accuracy": chosen["accuracy"], "ci95": chosen["ci95"],
                   "num_queries": chosen["num_queries"], "val_accuracy": val_acc}
    report = episode_accuracy.selection_report(history, final_rec, val_rec, config.eval.report_test_selection)
    text = episode_accuracy.format_report(report)
    if is_main:
        (epath.Path(workdir) / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        (epath.Path(workdir) / "report.txt").write_text(text + "\n", encoding="utf-8")
    log.info("one-shot report written to %s", os.path.join(workdir, "report.txt"))
    return report
