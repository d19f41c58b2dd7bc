"""Pretraining loop: `train_and_evaluate(config, workdir)`, callable from main.py, tests and notebooks.

mesh -> input pipeline -> model -> sharded state (fresh or restored from the workdir) -> jitted step
-> loop with JSONL/TensorBoard metrics, progress bar, periodic/final orbax checkpoints, the optional
few-shot evaluator on the live params (config.evals.fewshot, `frozen.PeriodicEvaluator`) and
SIGTERM handling (save, then return).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import time
from typing import Callable, Optional

import jax
import numpy as np
import tqdm
from etils import epath

from mumae_jax.core import checkpointing, host_memory, metrics, optim, run_lock, sharding
from mumae_jax.steps import pretraining_step
from mumae_jax.weights import model_init
from mumae_jax.models import layer_stack, mae, masking

log = logging.getLogger(__name__)


def duration_steps(config, prefix: str, num_examples: int) -> int:
    """`<prefix>_steps` if positive, else `<prefix>_epochs` x examples / batch, rounded."""
    steps = config.get(f"{prefix}_steps", -1)
    if steps is not None and steps > 0:
        return int(steps)
    epochs = config.get(f"{prefix}_epochs", -1)
    if epochs is None or epochs < 0:
        raise ValueError(f"set config.{prefix}_steps or config.{prefix}_epochs")
    return int(round(epochs * num_examples / config.batch_size))


class _StopOnSignal:
    """SIGTERM as a stop decision the loop polls once per step: `should_stop(step)`.

    One process: a Python handler sets a flag (only possible in the main thread). Several processes
    (`jax.distributed`): jax's preemption service owns SIGTERM and `reached_preemption_sync_point(step)`
    is True at the same step on every process, so all of them save that step and stop together, even
    when only one was signalled.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._synced = None  # the sync-point check, with several processes

    def __enter__(self):
        from jax._src import distributed as jax_distributed  # where jax keeps its preemption sync manager

        state = getattr(jax_distributed, "global_state", None)
        if jax.process_count() > 1 and getattr(state, "preemption_sync_manager", None) is not None:
            from jax.experimental import multihost_utils

            self._synced = multihost_utils.reached_preemption_sync_point  # SIGTERM is left to jax's notifier
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook kernels)
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def should_stop(self, step: int) -> bool:
        return self._synced(step) if self._synced else self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _raise_if_nonfinite(state):
    bad = int(jax.device_get(state["nonfinite_step"]))
    if bad >= 0:
        raise FloatingPointError(f"non-finite loss or gradient norm at training step {bad}; stopping. "
                                 f"No checkpoint was written for step {bad} or later.")


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


def _apply_model_init(config, state, tx, state_sh, mesh, workdir: str, is_main: bool):
    """Replaces the fresh parameters by those of `config.model_init` (strict; see model_init.py)."""
    from mumae_jax.weights import pretrained

    source_config, source, step = pretrained.load_params(config.model_init, config.get("model_init_step", -1), mesh)
    model_init.check_architecture(source_config, config, source)
    template = layer_stack.unstack(jax.device_get(state["params"]))  # both in the per-layer layout
    params, report = model_init.apply(template, jax.device_get(source), config.get("model_init_fresh", ()))
    params = jax.device_put(layer_stack.to_layout(params, bool(config.model.get("scan", False))), state_sh["params"])
    state = {**state, "params": params, "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(params)}
    if is_main:
        (epath.Path(workdir) / "model_init_report.json").write_text(
            json.dumps({"model_init": config.model_init, "step": step, **report}, indent=1), encoding="utf-8")
    log.info("parameters from %s (step %d): %d loaded, %d kept fresh, %d ignored", config.model_init, step,
             len(report["loaded"]), len(report["kept_init"]), len(report["ignored"]))
    return state


def _picture_fn(config, mesh):
    """(params, batch, step, workdir, is_main) -> writes reconstruction pictures of the batch's first clip.

    Every process runs the jitted prediction (the batch is global); process 0 writes."""
    try:
        from mumae_jax.evaluators import pictures
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as e:
        raise ImportError(f"config.pictures_every_steps > 0 needs matplotlib and Pillow (pip install "
                          f"'mumae_jax[viz]'): {e}") from e
    model = mae.from_config(pictures.full_decoding(config))

    def predict(params, batch):
        inputs = {s.name: batch[s.name][:1] for s in model.specs}
        masks = masking.draw_masks(jax.random.key(config.seed), model.specs, 1)
        return inputs, masks, model.apply({"params": params}, inputs, masks)

    predict = jax.jit(predict, out_shardings=sharding.replicated(mesh))

    def write(params, batch, step, workdir, is_main):
        inputs, masks, preds = jax.device_get(predict(params, batch))
        if is_main:
            pictures.write_pictures(model.specs, inputs, masks, preds, os.path.join(workdir, "pictures"),
                                    f"step{step:07d}", title=f"step {step}, first clip of the batch")

    return write


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
    'state', 'history' (logged records), 'preempted'}.
    """
    from mumae_jax.data import input_pipeline  # TensorFlow is imported only here

    model = mae.from_config(config)  # validates modalities and sizes before any work
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if config[field] < 1:
            raise ValueError(f"config.{field}={config[field]} must be >= 1")

    # Data size first: durations may be given in epochs.
    geometry = input_pipeline.input_geometry(model.specs)
    num_examples = input_pipeline.num_examples(config.data, geometry["sensors"])
    total = duration_steps(config, "total", num_examples)
    warmup = duration_steps(config, "warmup", num_examples)
    if total < 1:
        raise ValueError(f"the run has {total} steps; raise config.total_steps or config.total_epochs")

    # only now, with the config and the data checked: a failed start leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local or gs://
    with run_lock.RunLock(workdir):
        return _train(config, workdir, step_hook, model, mesh, geometry, num_examples, total, warmup)


def _train(config, workdir, step_hook, model, mesh, geometry, num_examples: int, total: int, warmup: int) -> dict:
    """The loop of `train_and_evaluate` on a checked config, in an existing, locked workdir."""
    from mumae_jax.data import input_pipeline

    is_main = jax.process_index() == 0
    tx, schedule = optim.make_optimizer(config, total, warmup)
    init, abstract_state, state_sh = pretraining_step.train_state_initializer(
        model, tx, jax.random.key(config.seed), mesh)
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    writer = metrics.MetricWriter(workdir, tensorboard=config.write_tensorboard)
    if ckpt.latest_step():
        _check_same_layer_layout(config, workdir)
    # restore straight into the current mesh's shardings (nothing is initialised); damaged ones are skipped
    newest = ckpt.restore_newest(abstract_state)
    start = newest[0] if newest else 0
    writer.truncate_after(start)  # a rerun replaces what a killed run logged past `start`
    if start:
        state = newest[1]
        log.info("resumed from %s at step %d", ckpt.directory, start)
    else:
        state = jax.block_until_ready(init())
        if config.get("model_init", ""):
            state = _apply_model_init(config, state, tx, state_sh, mesh, workdir, is_main)
    if is_main:
        (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2), encoding="utf-8")
        log.info("model: %s, %d parameters; %d examples, %d steps (%d warm-up), batch %d on %d devices",
                 config.model.variant, pretraining_step.param_count(state["params"]), num_examples, total,
                 warmup, config.batch_size, mesh.devices.size)

    step_fn = pretraining_step.make_train_step(model, tx, schedule, config.seed, config.batch_size, mesh, state_sh)
    every_picture = int(config.get("pictures_every_steps", 0))
    picture_fn = _picture_fn(config, mesh) if every_picture > 0 else None
    batches, _ = input_pipeline.build_pretrain_input(
        config.data, frame_stride=config.input.frame_stride, global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=start, augment=config.get("augment"), **geometry)
    names = [s.name for s in model.specs]
    fewshot = config.get("evals", {}).get("fewshot", None)
    every_eval = int(fewshot.get("every_steps", 0)) if fewshot is not None else 0
    evaluator = None
    if every_eval > 0:
        from mumae_jax.evaluators import frozen

        evaluator = frozen.PeriodicEvaluator(config, fewshot, mesh)  # episode list drawn once

    history, pending, preempted = [], [], False
    bar = tqdm.tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True,
                    disable=not (config.progress_bar and is_main))
    device_batches = _device_batches(batches, names, mesh, int(config.input.get("device_prefetch", 0)))
    t_log, steps_since_log = time.perf_counter(), 0
    step = start
    # the handler stays until the last checkpoint is committed: a SIGTERM during that wait loses nothing
    with _StopOnSignal() as stop:
        try:
            while step < total:
                batch = next(device_batches)
                state, m = step_fn(state, batch)
                if step == start:  # the step was just compiled: give what the compiler freed back
                    host_memory.release_freed()
                step += 1
                steps_since_log += 1
                pending.append(m)
                bar.update(1)
                if step_hook is not None:
                    step_hook(step)
                if picture_fn is not None and step % every_picture == 0:
                    picture_fn(state["params"], batch, step, workdir, is_main)
                last = step == total or stop.requested
                if step % config.log_every_steps == 0 or last:
                    fetched = jax.device_get(pending)
                    _raise_if_nonfinite(state)
                    elapsed = time.perf_counter() - t_log
                    record = {k: float(np.mean([f[k] for f in fetched])) for k in fetched[0]}
                    record["steps_per_sec"] = steps_since_log / elapsed
                    record["clips_per_sec"] = steps_since_log * config.batch_size / elapsed
                    writer.write(step, record)
                    history.append({"step": step, **record})
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                    pending, steps_since_log, t_log = [], 0, time.perf_counter()
                if evaluator is not None and (step % every_eval == 0 or step == total):
                    record = evaluator(state["params"])
                    writer.write(step, record)
                    if history and history[-1]["step"] == step:  # same step as the training record
                        history[-1].update(record)
                    else:
                        history.append({"step": step, **record})
                stopping = stop.should_stop(step)  # read again: the signal may have come during logging or evaluation
                if last or stopping or step % config.checkpoint_every_steps == 0:
                    _raise_if_nonfinite(state)
                    ckpt.save(step, state, {"step": step, "total_steps": total})
                if stopping:
                    preempted = True
                    ckpt.wait()  # async save: say "saved" only once it is committed
                    log.warning("SIGTERM received: saved a checkpoint at step %d and stopping", step)
                    break
        finally:
            batches.close()
            bar.close()
            ckpt.wait()
            ckpt.close()
            writer.close()
    return {"step": step, "state": state, "history": history, "preempted": preempted}
