"""Train state creation and the jitted, mesh-sharded pretraining step (no TensorFlow needed).

State: {'step': int32, 'params', 'opt_state', 'nonfinite_step': int32}. `nonfinite_step` is -1 while
training is healthy; the first step with a non-finite loss or gradient norm stores its (1-based) step
and from then on updates are skipped, so the parameters stay the last finite ones (Adam's moments decay
as for a zero gradient, which keeps the update in place) and the host can stop with a message naming
the step.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mumae_jax.core import sharding
from mumae_jax.objectives import mae_loss
from mumae_jax.models import masking
from mumae_jax.models.mae import MultimodalMAE
from mumae_jax.models.modality import ModalitySpec


def dummy_inputs(specs: Sequence[ModalitySpec], batch: int = 1):
    """Zero inputs and valid (first-n-masked) masks of the right shapes, for init and shape checks."""
    inputs = {s.name: jnp.zeros((batch,) + s.input_shape, jnp.float32) for s in specs}
    masks = {s.name: jnp.broadcast_to(jnp.arange(s.num_tokens) < s.num_masked, (batch, s.num_tokens))
             for s in specs}
    return inputs, masks


def train_state_initializer(model: MultimodalMAE, tx: optax.GradientTransformation, rng, mesh):
    """Returns (init, abstract_state, state_shardings) without allocating anything.

    `init()` builds the state directly with replicated shardings; `abstract_state` (ShapeDtypeStructs
    carrying those shardings) is the restore target of a checkpoint.
    """

    def init_fn(rng):
        inputs, masks = dummy_inputs(model.specs)
        decode = masking.draw_decode_masks(jax.random.key(0), model.specs, masks)
        params = model.init({"params": rng}, inputs, masks, decode=decode)["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
                "nonfinite_step": jnp.full((), -1, jnp.int32)}

    shapes = jax.eval_shape(init_fn, rng)
    state_sh = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
    abstract = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), shapes, state_sh)
    init = jax.jit(init_fn, out_shardings=state_sh)
    return (lambda: init(rng)), abstract, state_sh


def loss_and_metrics(model: MultimodalMAE, params, inputs, masks, dropout_rng=None, decode=None):
    """(total loss, {'loss_<modality>': MSE}) for explicit masks (and decode masks, decoder_ratio < 1)."""
    deterministic = dropout_rng is None
    rngs = {} if deterministic else {"dropout": dropout_rng}
    preds = model.apply({"params": params}, inputs, masks, deterministic=deterministic, rngs=rngs, decode=decode)
    total, per = mae_loss.reconstruction_losses(model.specs, preds, inputs, masks, decode)
    return total, {f"loss_{k}": v for k, v in per.items()}


def make_train_step(model: MultimodalMAE, tx: optax.GradientTransformation, schedule: Callable,
                    seed: int, batch_size: int, mesh, state_sh) -> Callable:
    """jit(step)(state, batch) -> (state, metrics); masks and drop-path use fold_in(key(seed), step).

    Each example's masks come from its own key, split from the step key, and are drawn with
    `jax.vmap` inside the step, so a resumed run replays the same masks and the masks do not depend
    on the number of devices. The state is donated.
    """
    specs = model.specs
    names = [s.name for s in specs]
    use_dropout = model.drop_path > 0

    def step_fn(state, batch):
        step = state["step"]
        mask_rng, drop_rng = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
        masks = masking.draw_masks(mask_rng, specs, batch_size)
        decode = masking.draw_decode_masks(jax.random.fold_in(mask_rng, 1), specs, masks)
        inputs = {k: batch[k] for k in names}

        def loss_fn(params):
            return loss_and_metrics(model, params, inputs, masks, drop_rng if use_dropout else None, decode)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        healthy = finite & (state["nonfinite_step"] < 0)

        # Guard without a second copy of the state: a non-finite gradient enters the optimizer as zeros and
        # the parameter update is masked, so each new leaf is written in place into the donated buffers.
        # (Selecting between old and new state, or a lax.cond, keeps both alive: XLA temp memory of the ViT-B
        # video step +0.13 GB (cond) to +0.35 GB (select); +0.55 GB with the layer scan and remat.) A skipped step leaves params, step and the optimizer's scalar counters exact; Adam's
        # moments decay as for a zero gradient.
        safe_grads = jax.tree.map(lambda g: jnp.where(healthy, g, jnp.zeros_like(g)), grads)
        updates, opt_state = tx.update(safe_grads, state["opt_state"], state["params"])
        out = {"step": jnp.where(healthy, step + 1, step),
               "params": jax.tree.map(lambda p, u: jnp.where(healthy, p + u.astype(p.dtype), p),
                                      state["params"], updates),
               "opt_state": jax.tree.map(lambda new, old: jnp.where(healthy, new, old) if new.ndim == 0 else new,
                                         opt_state, state["opt_state"])}
        update_norm = jnp.where(healthy, optax.tree.norm(updates), 0.0)
        params = out["params"]
        out["nonfinite_step"] = jnp.where((state["nonfinite_step"] < 0) & ~finite, step + 1,
                                          state["nonfinite_step"])
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm, "param_norm": optax.tree.norm(params),
                   "update_norm": update_norm, "lr": schedule(step)}
        return out, metrics

    batch_sh = {k: sharding.batch_sharding(mesh) for k in names}
    return jax.jit(step_fn, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)


def step_for_config(config, batch_size: int, mesh, seed: int = 0):
    """(model, init, abstract_state, jitted step) of a pretraining config on `mesh`, for benchmarks and cost
    analysis (the schedule's length does not change the step's shapes or cost)."""
    from mumae_jax.core import optim
    from mumae_jax.models import mae

    model = mae.from_config(config)
    tx, schedule = optim.make_optimizer(config, 1000, 10)
    init, abstract, state_sh = train_state_initializer(model, tx, jax.random.key(seed), mesh)
    return model, init, abstract, make_train_step(model, tx, schedule, seed, batch_size, mesh, state_sh)


def param_count(params) -> int:
    """Number of parameters."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
