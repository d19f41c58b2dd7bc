"""The one-shot stage's trainer: `train_and_evaluate(config, workdir)` for `configs/oneshot.py`.

pretraining run (config + checkpoint) -> one-shot model (MAE encoder and TimeSformer initialised from it)
-> fixed validation / test episode lists (saved in the workdir) -> jitted step over `tasks_per_batch`
training episodes, each step followed by `run.end_step` (log, periodic validation with the best checkpoint
kept in best/, checkpoint, SIGTERM stop; `core/loop.py`) -> final report on the test list (final checkpoint,
validation-selected checkpoint, optionally the paper's test-selected maximum; `evaluators/oneshot_episodes.py`).
`evaluate_checkpoint` / `predict_episode` evaluate a saved checkpoint with the same set-up and no training.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional

import jax
import numpy as np
from etils import epath

from mumae_jax.core import checkpointing, loop, sharding
from mumae_jax.data import sources
from mumae_jax.evaluators import common, oneshot_episodes
from mumae_jax.models import kinds, mae_features, timesformer, variants
from mumae_jax.models.oneshot import MuMAEOneShot
from mumae_jax.steps import episodic_step
from mumae_jax.weights import pretrained

log = logging.getLogger(__name__)


def pretrain_config(config):
    """The pretraining config that fixes the MAE encoder's architecture (see configs/oneshot.py)."""
    if config.model_init:
        return pretrained.load_config(config.model_init)
    if config.init.mae == "pretrained" or config.init.video == "mae":
        raise ValueError("config.init.mae='pretrained' / init.video='mae' need config.model_init, "
                         "a pretraining workdir or a converted checkpoint; use "
                         "configs/oneshot.py:init=random for random initialisation")
    from mumae_jax.configs import pretrain

    return pretrain.get_config(config.init.pretrain_config)


def class_split(config):
    """The stage's class split (`config.class_split` over `config.data`)."""
    return sources.get_source(config.data).class_split(config.class_split.num_val, config.class_split.seed)


def num_classes(config, split=None) -> int:
    """The global classifier's size: `config.model.num_classes`, or (0, the default) every class of the class
    split; a number too small for the split's global ids is an error."""
    need = len((split or class_split(config)).class_to_id)
    n = int(config.model.num_classes) or need
    if n < need:
        raise ValueError(f"config.model.num_classes={n} is smaller than the class split's {need} classes "
                         "(set 0 to derive it)")
    return n


def build_model(config, pcfg, split=None) -> MuMAEOneShot:
    """The one-shot model of `config` around the MAE encoder of the pretraining config `pcfg`."""
    ep, m = config.episodes, config.model
    mae = mae_features.from_pretrain_config(pcfg, drop_path=m.mae_drop_path, normalize_video=m.normalize_video,
                                            pooling=m.get("mae_pooling", "mean"),
                                            num_frames=ep.num_frames, image_size=ep.image_size,
                                            sensor_length=ep.sensor_length)
    sizes = variants.resolve(pcfg.model if not m.video_variant else {"variant": m.video_variant})
    frames = [s for s in mae.specs if kinds.of(s).frames]
    patch = frames[0].tubelet[1] if frames else 16
    video = timesformer.TimeSformer(width=sizes["width"], depth=sizes["depth"], num_heads=sizes["num_heads"],
                                    mlp_dim=sizes["mlp_dim"], patch_size=patch, num_frames=ep.num_frames,
                                    image_size=ep.image_size, drop_path=m.video_drop_path)
    return MuMAEOneShot(mae=mae, video=video, sensors=tuple(config.sensors), sensor_layout=m.sensor_layout,
                        sensor_dim=m.sensor_dim, fused_dim=m.fused_dim, channels=m.channels, heads=m.heads,
                        way=ep.way, num_classes=num_classes(config, split), scale_cls=m.scale_cls, alpha=m.alpha,
                        temperature=m.temperature, cam_hidden=m.cam_hidden, normalize_video=m.normalize_video,
                        fusion_mode=m.get("fusion", "mae_query"), mae_dropout=_mae_dropout(m),
                        late_weight=m.get("late_weight", MuMAEOneShot.late_weight))


def _mae_dropout(m) -> float:
    """`model.mae_dropout`, or the model's default for a config written before the option existed."""
    return m.get("mae_dropout", MuMAEOneShot.mae_dropout)


def pretrained_params(config, params, pretrain_params) -> tuple[dict, dict]:
    """Overwrites the MAE encoder / TimeSformer parameters from the pretraining params (strict)."""
    params, report = dict(params), {}
    if config.init.mae == "pretrained":
        params["mae"], report["mae"] = mae_features.load_pretrained(params["mae"], pretrain_params)
    if config.init.video == "mae":
        params["video"], report["video"] = timesformer.init_from_mae(params["video"], pretrain_params,
                                                                    config.init.tube_to_patch)
    return params, report


def _episode_iter(config, lst, part: str, train: bool, start: int = 0, repeat: bool = True):
    return sources.get_source(config.data).episode_input(lst, oneshot_episodes.geometry(config), part=part,
                                                         train=train, seed=config.seed, start=start, repeat=repeat)


def _setup(config, workdir: str, mesh) -> dict[str, Any]:
    """Model, episode lists, optimizer and abstract state shared by training and evaluation."""
    t = int(config.tasks_per_batch)
    sharding.check_batch_size(t, mesh, "config.tasks_per_batch")
    sharding.check_batch_size(int(config.evals.episodes.batch_episodes), mesh, "config.evals.episodes.batch_episodes")
    loop.check_positive(config, ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"))
    if config.lr <= 0 or config.total_tasks < t:
        raise ValueError(f"need lr > 0 and total_tasks >= tasks_per_batch; got lr={config.lr}, "
                         f"total_tasks={config.total_tasks}, tasks_per_batch={t}")
    cs, recs = class_split(config), sources.get_source(config.data).records()
    model = build_model(config, pretrain_config(config), cs)
    total = math.ceil(config.total_tasks / t)
    test_list = oneshot_episodes.eval_list(config, recs, cs, workdir, "test")
    ep = config.episodes
    episode = episodic_step.dummy_episode(model, len(test_list[0].support), len(test_list[0].query), ep.num_frames,
                                          ep.image_size, ep.sensor_length)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, episode)["params"])
    freeze = episodic_step.frozen_names(shapes, tuple(config.get("freeze", ())))
    tx = episodic_step.make_optimizer(config.get("optimizer", "sgd"), config.lr, freeze)
    init, abstract, state_sh = episodic_step.state_initializer(model, tx, jax.random.key(config.seed), mesh, episode)
    val_list = oneshot_episodes.eval_list(config, recs, cs, workdir, "val")
    oneshot_episodes.check_late_weights(config, val_list)
    # only now, with the config and the data checked: a failed start leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    for which, lst in (("test", test_list), ("val", val_list)):
        oneshot_episodes.save_eval_list(config, workdir, which, lst)
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
    """(mesh, setup, state, step, fixed `which` list, its episode-input part, chosen) of a saved checkpoint: the
    latest, `step`, or the validation-selected one (`best`). With `evals.episodes.late_weights`, chosen = (the grid
    evaluator, index of the weight chosen on validation, validation result at it) and the setup's model carries that
    weight; otherwise None."""
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
    grid, chosen = oneshot_episodes.late_weights(config), None
    if grid:  # the late weight this checkpoint's evaluation chose on validation (deterministic, as in training)
        evaluate = oneshot_episodes.clip_evaluator(config, s["model"], mesh, s["state_sh"], grid)
        val, k = oneshot_episodes.validate(evaluate, state, s["val_list"], grid)
        s["model"] = s["model"].clone(late_weight=grid[k])
        chosen = (evaluate, k, val)
    return mesh, s, state, step, lst, "novel" if which == "test" else "validation", chosen


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None, which: str = "test",
                        best: bool = False) -> dict[str, Any]:
    """Accuracy ± CI of a saved checkpoint (latest, `step`, or the validation-selected one with
    `best=True`) on the run's fixed `which` ('val' | 'test') episode list. Deterministic. Late fusion adds
    'late_weight' (with `evals.episodes.late_weights`: the one chosen on validation for this checkpoint)."""
    mesh, s, state, step, lst, part, chosen = _saved_run(config, workdir, which, step, best)
    if chosen is None:
        out = oneshot_episodes.clip_evaluator(config, s["model"], mesh, s["state_sh"])(state, lst, part)
    else:  # the evaluator that chose the weight, as in training: validation already scored, the test at that weight
        evaluate, k, val = chosen
        grid = oneshot_episodes.late_weights(config)
        out = val if which == "val" else oneshot_episodes.at_weight(evaluate(state, lst, part), k, grid)
    late = {"late_weight": s["model"].late_weight} if s["model"].fusion_mode == "late" else {}
    return {"step": step, **out, **late}


def predict_episode(config, workdir: str, index: int = 0, which: str = "test", step: Optional[int] = None,
                    best: bool = False) -> dict[str, Any]:
    """One episode of the run's fixed `which` list, through a saved checkpoint (as `evaluate_checkpoint`, late
    weight included).

    Returns {"step", "episode" (data.episodes.Episode: clip and class names), "support_video"
    [S, T, H, W, 3] and "query_video" [Q, T, H, W, 3] (the model's input frames, in [0, 1]),
    "support_labels" [S], "query_labels" [Q], "logits" [Q, way], "probabilities" [Q, way] (softmax of
    the logits), "prediction" [Q] (episode labels)}.
    """
    mesh, s, state, step, lst, part, _ = _saved_run(config, workdir, which, step, best)
    if not 0 <= index < len(lst):
        raise IndexError(f"episode {index} of a {which} list of {len(lst)} episodes")
    it = _episode_iter(config, lst, part, False, start=index, repeat=False)
    try:
        episode = next(it)
    finally:
        it.close()
    if int(episode["episode"]) != index:
        raise RuntimeError(f"the episode input returned episode {int(episode['episode'])}, not {index}")
    n = int(config.evals.episodes.batch_episodes)  # the eval step's sharded batch: the episode, repeated
    batch = {k: np.stack([v] * n) for k, v in episode.items() if k != "episode"}
    eval_step = episodic_step.make_eval_step(s["model"], mesh, s["state_sh"])
    pred, logits = jax.device_get(eval_step(state, sharding.to_global(batch, mesh)))
    logits = np.asarray(logits[0], np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return {"step": step, "episode": lst[index], "support_video": episode["support_video"],
            "query_video": episode["query_video"], "support_labels": episode["support_labels"],
            "query_labels": episode["query_labels"], "logits": logits,
            "probabilities": probs / probs.sum(-1, keepdims=True), "prediction": np.asarray(pred[0])}


def _warm_start(config, state, tx, state_sh, mesh, workdir: str) -> dict:
    """The MAE encoder / TimeSformer parameters from the pretraining run (`config.model_init`), strict."""
    _, pparams, pstep = pretrained.load_params(config.model_init, config.model_init_step, mesh)
    params, report = pretrained_params(config, state["params"], pparams)
    loop.write_json(workdir, "init_report.json", {"model_init": config.model_init, "step": pstep, **report})
    log.info("initialised from %s step %d: %s", config.model_init, pstep,
             {k: len(v["loaded"]) for k, v in report.items()})
    return loop.warm_start(state, params, tx, state_sh)


def train_and_evaluate(config, workdir: str, step_hook: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Episodic training per `config` under `workdir` (resumes from its latest checkpoint, as the
    workdir's only run: `run_lock`). `step_hook(step)` (optional) runs on the host after every step.

    Returns {'step', 'state', 'history' (logged records), 'report' (None when preempted), 'preempted'}.
    """
    mesh = sharding.make_mesh()
    s = _setup(config, workdir, mesh)  # checks everything, then creates the workdir
    model, total, t, tx, state_sh = s["model"], s["total"], s["tasks"], s["tx"], s["state_sh"]
    show = bool(config.progress_bar) and jax.process_index() == 0
    with loop.TrainLoop(workdir, config, total=total, desc="one-shot", examples_per_step=t, example_name="tasks",
                        postfix={"loss": "{:.3f}", "train_accuracy": "{:.0f}"}) as run:
        state, start = run.restore_or_init(s["abstract"], s["init"])
        if not start and (config.init.mae == "pretrained" or config.init.video == "mae"):
            state = _warm_start(config, state, tx, state_sh, mesh, workdir)
        loop.write_config(config, workdir)
        stage = dict(config=config, mesh=mesh, workdir=workdir, model=model, state_sh=state_sh, val_list=s["val_list"],
                     test_list=s["test_list"], tasks_per_step=t, start=start, history=run.history, progress=show)
        run.evaluators += common.from_config(config.evals, stage)
        episodes = [e for e in run.evaluators if isinstance(e, oneshot_episodes.EpisodeEvaluator)]
        if len(episodes) != 1:
            raise ValueError(f"the one-shot stage needs one evaluator of type 'episodes' in config.evals (its lists "
                             f"and report); got {len(episodes)}")
        episodes = episodes[0]

        m = config.model
        delay = math.ceil(m.get("mae_delay_tasks", 0) / t)  # updates whose episodes all see R zeroed
        step_fn = episodic_step.make_train_step(model, tx, config.seed, t, mesh, state_sh, config.task_chunks,
                                                m.loss_weight, s["freeze"],
                                                episodic_step.mae_dropout_schedule(_mae_dropout(m), delay))
        # drawn only here: evaluating a checkpoint does not need the (paper: 256,020-episode) training list
        train_list = oneshot_episodes.draw(config, s["records"], s["class_split"], "base", total * t, config.seed)
        episodes_in = _episode_iter(config, train_list, "base", True, start=start * t, repeat=False)
        run.closing(episodes_in.close)
        step = start
        for step in range(start + 1, total + 1):
            batch = episodic_step.stack_tasks([next(episodes_in) for _ in range(t)])
            state, metrics = step_fn(state, sharding.to_global(batch, mesh))
            if step_hook is not None:
                step_hook(step)
            if run.end_step(step, state, metrics):
                break
        report = None if run.preempted else episodes.final_report(state, step, s["abstract"], run.history, workdir)
        summary = run.write_summary(step)
    return {"step": step, "state": state, "history": run.history, "report": report, "preempted": run.preempted,
            "summary": summary}
