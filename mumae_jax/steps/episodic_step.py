"""Episodic training and evaluation steps of the one-shot stage (no TensorFlow needed).

The official loop (docs/official_code.md §3.4) runs one episode per forward/backward, accumulates gradients of
loss / 32 over 32 episodes ("tasks") and then takes one SGD step (lr 0.01, no momentum, no weight decay).
Here the 32 tasks of one update are a leading batch axis [T, ...] of every episode array and the
per-task forward/backward is `jax.vmap`ped inside ONE jitted step (tasks sharded over the `data` mesh
axis), which gives exactly the accumulated gradient: mean over tasks of the per-task gradients.
`task_chunks > 1` runs the T tasks as a `lax.scan` over chunks of T / task_chunks vmapped tasks, to bound
activation memory on an accelerator; the result is the same.

BatchNorm running statistics (CAM meta-learner): in the official loop they are updated sequentially,
task after task. Every task starts from the same running stats here, so `fold_batch_stats` replays the
sequential updates exactly from the per-task results (an update is affine in the old value).

State: {'step', 'params', 'batch_stats', 'opt_state', 'nonfinite_step'} (`steps/train_state.py`).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from mumae_jax.core import sharding
from mumae_jax.models import cam
from mumae_jax.models.oneshot import MuMAEOneShot, episode_loss
from mumae_jax.steps import train_state


def fold_batch_stats(old: Mapping[str, Any], per_task: Mapping[str, Any], momentum: float = cam.BN_MOMENTUM):
    """Running stats after T tasks applied one after another, from T updates of the same `old` stats.

    per_task: the `batch_stats` tree with a leading [T] axis, entry t = stats after task t started from
    `old`. Each BN module holds `mean`, `var` and `count`; with c = updates per task (from `count`),
    one task maps r -> a·r + d_t where a = (1 - momentum)^c, so after T tasks
    r = a^T·old + sum_t a^(T-1-t)·d_t with d_t = per_task_t - a·old.
    """
    flat_old = traverse_util.flatten_dict(dict(old), sep="/")
    flat_new = traverse_util.flatten_dict(dict(per_task), sep="/")
    out = {}
    for key, value in flat_old.items():
        module, leaf = key.rsplit("/", 1)
        new = flat_new[key]
        t = new.shape[0]
        calls = flat_new[f"{module}/count"][0] - flat_old[f"{module}/count"]
        if leaf == "count":
            out[key] = value + t * calls
            continue
        a = (1.0 - momentum) ** calls.astype(jnp.float32)
        d = new - a * value
        weights = a ** jnp.arange(t - 1, -1, -1, dtype=jnp.float32)
        out[key] = a ** t * value + jnp.tensordot(weights, d, axes=1)
    return traverse_util.unflatten_dict(out, sep="/")


OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}  # the official stage: plain SGD, no momentum


def frozen_names(params: Mapping[str, Any], freeze: Sequence[str]) -> frozenset:
    """Top-level submodules of `params` matched by the `freeze` patterns (fnmatch: 'mae', 'video', 'cnn_*');
    ValueError for a pattern that matches nothing."""
    names = set()
    for pattern in freeze:
        hit = {k for k in params if fnmatch.fnmatchcase(k, pattern)}
        if not hit:
            raise ValueError(f"freeze pattern {pattern!r} matches no submodule; the model has {sorted(params)}")
        names |= hit
    return frozenset(names)


def make_optimizer(name: str, lr: float, freeze: frozenset = frozenset()) -> optax.GradientTransformation:
    """`OPTIMIZERS[name](lr)` on the trained submodules; the `freeze` ones get no update (and no optimizer
    state beyond optax's empty one)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
    base = OPTIMIZERS[name](lr)
    if not freeze:
        return base
    labels = lambda params: {k: "frozen" if k in freeze else "train" for k in params}  # noqa: E731
    return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


def mae_dropout_schedule(rate: float, delay_steps: int) -> Optional[Callable]:
    """step -> the rate of zeroing an episode's MAE representation: 1 for the first `delay_steps` updates (the
    stage's own branches learn alone), then `rate`; None (the model's constant rate) when `delay_steps` is 0."""
    if delay_steps < 0 or not 0.0 <= rate <= 1.0:
        raise ValueError(f"need 0 <= mae_dropout <= 1 and a delay >= 0; got {rate}, {delay_steps} updates")
    if not delay_steps:
        return None
    return lambda step: jnp.where(step < delay_steps, 1.0, rate)


def dummy_episode(model: MuMAEOneShot, num_support: int, num_query: int, num_frames: int, image_size: int,
                  sensor_length: int) -> dict[str, jnp.ndarray]:
    """Zero inputs of one episode (support labels 0..way-1 repeated), for init and shape checks."""
    out = {"support_video": jnp.zeros((num_support, num_frames, image_size, image_size, 3)),
           "query_video": jnp.zeros((num_query, num_frames, image_size, image_size, 3)),
           "support_labels": jnp.arange(num_support, dtype=jnp.int32) % model.way,
           "query_labels": jnp.zeros((num_query,), jnp.int32),
           "global_labels": jnp.arange(model.way, dtype=jnp.int32)}
    for s in model.sensors:
        out[f"support_{s}"] = jnp.zeros((num_support, sensor_length, 3))
        out[f"query_{s}"] = jnp.zeros((num_query, sensor_length, 3))
    return out


def state_initializer(model: MuMAEOneShot, tx: optax.GradientTransformation, rng, mesh, episode):
    """(init, abstract_state, state_shardings) for an example `episode` (`dummy_episode`), replicated."""

    def init_fn(rng):
        variables = model.init({"params": rng, "dropout": rng}, episode, train=False)
        return train_state.new_state(variables["params"], tx, batch_stats=variables["batch_stats"])

    return train_state.replicated_initializer(init_fn, rng, mesh)


def task_losses(model: MuMAEOneShot, params, batch_stats, tasks, keys, loss_weight: float = 0.5, mae_dropout=None):
    """Per-task training losses [T], updated batch stats [T, ...] and hits [T, Q] (train mode); `mae_dropout`
    overrides the model's rate (`MuMAEOneShot.__call__`)."""

    def one(episode, key):
        out, upd = model.apply({"params": params, "batch_stats": batch_stats}, episode, train=True,
                               rngs={"dropout": key}, mutable=["batch_stats"], mae_dropout=mae_dropout)
        hits = jnp.argmax(out["logits"], -1) == episode["query_labels"]
        return episode_loss(out, episode, loss_weight), (upd["batch_stats"], hits)

    return jax.vmap(one)(tasks, keys)


def make_train_step(model: MuMAEOneShot, tx: optax.GradientTransformation, seed: int, num_tasks: int, mesh,
                    state_sh, task_chunks: int = 1, loss_weight: float = 0.5,
                    freeze: frozenset = frozenset(), mae_dropout: Optional[Callable] = None) -> Callable:
    """jit(step)(state, tasks) -> (state, metrics); tasks: episode dict with a leading [num_tasks] axis.

    `mae_dropout(step)` (optional): the rate of zeroing an episode's MAE representation at this (0-based)
    update, overriding the model's `mae_dropout` (`mae_dropout_schedule`).

    `freeze`: top-level submodules held fixed (`frozen_names`): no gradient flows into them (so the
    backward pass skips them) and `tx` (`make_optimizer` with the same set) gives them no update.

    Task t of step s uses the drop-path key split(fold_in(key(seed), s), num_tasks)[t]. Loss and
    gradients are means over the tasks (= the official sum of loss/32 over 32 backward passes).
    """
    if num_tasks % task_chunks:
        raise ValueError(f"tasks_per_batch={num_tasks} is not divisible by task_chunks={task_chunks}")

    def step_fn(state, tasks):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), state["step"]), num_tasks)
        rate = None if mae_dropout is None else mae_dropout(state["step"])

        def chunk_loss(params, chunk, chunk_keys):
            params = {k: jax.lax.stop_gradient(v) if k in freeze else v for k, v in params.items()}
            losses, (stats, hits) = task_losses(model, params, state["batch_stats"], chunk, chunk_keys,
                                                loss_weight, rate)
            return jnp.sum(losses) / num_tasks, (losses, stats, hits)

        grad_fn = jax.value_and_grad(chunk_loss, has_aux=True)
        if task_chunks == 1:
            (loss, (losses, stats, hits)), grads = grad_fn(state["params"], tasks, keys)
        else:
            split = lambda x: x.reshape((task_chunks, num_tasks // task_chunks) + x.shape[1:])  # noqa: E731
            chunks, chunk_keys = jax.tree.map(split, tasks), split(keys)

            def body(acc, xs):
                (l, aux), g = grad_fn(state["params"], *xs)
                return jax.tree.map(jnp.add, acc, (l, g)), aux

            zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state["params"]))
            (loss, grads), (losses, stats, hits) = jax.lax.scan(body, zero, (chunks, chunk_keys))
            merge = lambda x: x.reshape((num_tasks,) + x.shape[2:])  # noqa: E731
            losses, stats, hits = jax.tree.map(merge, (losses, stats, hits))
        out, norms = train_state.guarded_update(tx, state, grads, loss,
                                                {"batch_stats": fold_batch_stats(state["batch_stats"], stats)})
        metrics = {"loss": loss, "train_accuracy": 100.0 * jnp.mean(hits), **norms}
        return out, metrics

    task_sh = sharding.batch_sharding(mesh)
    return jax.jit(step_fn, in_shardings=(state_sh, task_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                   donate_argnums=0)


def make_eval_step(model: MuMAEOneShot, mesh, state_sh) -> Callable:
    """jit(eval)(state, episodes) -> (predictions [E, Q], logits [E, Q, way]); eval mode (running BN
    stats, no drop path), episodes vmapped and sharded over the mesh."""

    def eval_fn(state, episodes):
        def one(episode):
            out = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]}, episode,
                              train=False, with_global=False)
            return jnp.argmax(out["logits"], -1).astype(jnp.int32), out["logits"]

        return jax.vmap(one)(episodes)

    return jax.jit(eval_fn, in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))


def make_clip_eval_steps(model: MuMAEOneShot, mesh, state_sh,
                         late_weights: Sequence[float] = ()) -> tuple[Callable, Callable]:
    """(encode, head), the eval step split at the episode boundary (same predictions, far less work when
    episodes share clips):

      encode(state, clips {video [B, T, H, W, 3], <sensor> [B, L, 3]}) -> {name: [B, d]} per-clip encodings
          (`MuMAEOneShot.encode`, eval mode), replicated;
      head(state, {<name>: [E, N, d] (support then query clips), "support_labels": [E, S]})
          -> predictions [E, Q] (`MuMAEOneShot.classify`, running BN stats), replicated; with `late_weights`
          (K weights, late fusion only) predictions [E, K, Q], one row per weight in place of the model's.
    """
    variables = lambda state: {"params": state["params"], "batch_stats": state["batch_stats"]}  # noqa: E731
    if late_weights and model.fusion_mode != "late":
        raise ValueError(f"late_weights {tuple(late_weights)} need model.fusion='late', not {model.fusion_mode!r}")
    weights = jnp.asarray(late_weights, jnp.float32)[:, None, None]  # [K, 1, 1]

    def encode_fn(state, clips):
        return model.apply(variables(state), clips, False, method=model.encode)

    def head_fn(state, batch):
        def one(episode):
            enc = {k: v for k, v in episode.items() if k != "support_labels"}
            out = model.apply(variables(state), enc, episode["support_labels"], None, False, method=model.classify)
            logits = out["cam_log_probs"] + weights * out["late_scores"] if late_weights else out["logits"]
            return jnp.argmax(logits, -1).astype(jnp.int32)

        return jax.vmap(one)(batch)

    batch, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    encode = jax.jit(encode_fn, in_shardings=(state_sh, batch), out_shardings=rep)
    head = jax.jit(head_fn, in_shardings=(state_sh, batch), out_shardings=rep)
    return encode, head


def stack_tasks(episodes) -> dict[str, np.ndarray]:
    """List of episode dicts -> one dict of arrays with a leading [T] axis (the `episode` index field is dropped)."""
    return {k: np.stack([e[k] for e in episodes]) for k in episodes[0] if k != "episode"}
