"""Pretraining: `train_and_evaluate(config, workdir)`, callable from main.py, tests and notebooks.

Reads top to bottom: model and mesh -> data size and schedule -> (loop.TrainLoop: lock, checkpoints,
metrics) restore or init (+ `config.model_init` warm start) -> jitted step -> input from the resumed step
-> steps, each followed by `run.end_step` (log, the periodic evaluators of `config.evals`: few-shot probes and
reconstruction pictures, checkpoint, SIGTERM stop).
"""
from __future__ import annotations

import collections
import logging
from typing import Callable, Optional

import jax
from etils import epath

from mumae_jax.core import loop, optim, sharding
from mumae_jax.data import sources
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.evaluators import common
from mumae_jax.models import layer_stack, mae
from mumae_jax.steps import pretraining_step
from mumae_jax.weights import model_init

log = logging.getLogger(__name__)


def _device_batches(batches, names, mesh, depth: int):
    """Host batches -> global device arrays, transferred `depth` batches ahead of the step that uses them.

    `device_put` is asynchronous, so the next batches' transfers overlap the running step; depth=0
    transfers each batch just before its step.
    """
    queue = collections.deque()
    for host in batches:
        queue.append(sharding.to_global({k: v for k, v in host.items() if k in names}, mesh))
        if len(queue) > depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _apply_model_init(config, state, tx, state_sh, mesh, workdir: str):
    """Replaces the fresh parameters by those of `config.model_init` (strict; see weights/model_init.py)."""
    from mumae_jax.weights import pretrained

    source_config, source, step = pretrained.load_params(config.model_init, config.get("model_init_step", -1), mesh)
    model_init.check_architecture(source_config, config, source)
    template = layer_stack.unstack(jax.device_get(state["params"]))  # both in the per-layer layout
    params, report = model_init.apply(template, jax.device_get(source), config.get("model_init_fresh", ()))
    state = loop.warm_start(state, layer_stack.to_layout(params, bool(config.model.get("scan", False))), tx, state_sh)
    loop.write_json(workdir, "model_init_report.json", {"model_init": config.model_init, "step": step, **report})
    log.info("parameters from %s (step %d): %d loaded, %d kept fresh, %d ignored", config.model_init, step,
             len(report["loaded"]), len(report["kept_init"]), len(report["ignored"]))
    return state


def _check_same_layer_layout(config, workdir: str) -> None:
    """A run resumes only with the layer layout (config.model.scan) its checkpoints were written with."""
    from mumae_jax.weights import pretrained

    if not (epath.Path(workdir) / "config.json").exists():
        return
    saved = bool(pretrained.load_config(workdir).model.get("scan", False))
    if saved != bool(config.model.get("scan", False)):
        raise ValueError(f"{workdir} holds checkpoints written with config.model.scan={saved}; resume with the "
                         f"same setting (or start a new run from them with config.model_init={workdir!r})")


def train_and_evaluate(config, workdir: str, step_hook: Optional[Callable[[int], None]] = None) -> dict:
    """Pretrains per `config`, writing checkpoints and metrics under `workdir`.

    Resumes automatically from the latest checkpoint in `workdir`, as the workdir's only run
    (`run_lock`). `step_hook(step)` (optional) runs on the host after every step. Returns {'step',
    'state', 'history' (logged records), 'preempted', 'summary'} (the summary also goes to
    `<workdir>/summary.json`: `core.loop.TrainLoop.summary`).
    """
    model = mae.from_config(config)  # validates modalities and sizes before any work
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    loop.check_positive(config, ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"))
    source = sources.get_source(config.data)
    geometry = ClipGeometry.from_specs(model.specs, config.input.frame_stride)
    num_examples = source.num_examples(geometry.sensors)  # durations may be in epochs; builds MMAct's TFDS once
    total = loop.steps(config, "total", num_examples, config.batch_size)
    warmup = loop.steps(config, "warmup", num_examples, config.batch_size)
    if total < 1:
        raise ValueError(f"the run has {total} steps; raise config.total_steps or config.total_epochs")
    tx, schedule = optim.make_optimizer(config, total, warmup)
    init, abstract, state_sh = pretraining_step.state_initializer(model, tx, jax.random.key(config.seed), mesh)

    # only now, with the config and the data checked: a failed start leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    with loop.TrainLoop(workdir, config, total=total, desc="pretrain", examples_per_step=config.batch_size,
                        postfix={"loss": "{:.4f}", "lr": "{:.2e}"}) as run:
        if run.ckpt.latest_step():
            _check_same_layer_layout(config, workdir)
        state, start = run.restore_or_init(abstract, init)
        if not start and config.get("model_init", ""):
            state = _apply_model_init(config, state, tx, state_sh, mesh, workdir)
        loop.write_config(config, workdir)
        log.info("model: %s, %d parameters; data: %s %s, %d examples; %d steps (%d warm-up), batch %d on %d "
                 "devices", config.model.variant, pretraining_step.param_count(state["params"]),
                 config.data.name, config.data.split, num_examples, total, warmup, config.batch_size,
                 mesh.devices.size)

        run.evaluators += common.from_config(config.get("evals", {}), dict(config=config, mesh=mesh, workdir=workdir))
        step_fn = pretraining_step.make_train_step(model, tx, schedule, config.seed, config.batch_size, mesh,
                                                   state_sh)
        batches, _ = source.pretrain_input(geometry, global_batch_size=config.batch_size, seed=config.seed,
                                           process_index=jax.process_index(), process_count=jax.process_count(),
                                           start_step=start, augment=config.get("augment"))
        run.closing(batches.close)
        device_batches = _device_batches(batches, [s.name for s in model.specs], mesh,
                                         int(config.input.get("device_prefetch", 0)))
        step = start
        for step in range(start + 1, total + 1):
            state, metrics = step_fn(state, next(device_batches))
            if step_hook is not None:
                step_hook(step)
            if run.end_step(step, state, metrics):
                break
        summary = run.write_summary(step, next_commands(workdir))
    return {"step": step, "state": state, "history": run.history, "preempted": run.preempted, "summary": summary}


def next_commands(workdir: str) -> list[str]:
    """What usually follows a pretraining run: its pictures, frozen probes on novel classes, the one-shot stage."""
    return [f"python -m mumae_jax.evaluators.pictures --workdir={workdir}",
            f"python -m mumae_jax.evaluators.frozen --pretrain_workdir {workdir} --part novel",
            f"python main.py --config=configs/oneshot.py --config.model_init={workdir} --workdir={workdir}_oneshot"]
