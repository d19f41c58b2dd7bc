"""The jitted, mesh-sharded MAE pretraining step and its state initialiser (no TensorFlow needed).

State: {'step', 'params', 'opt_state', 'nonfinite_step'} (`steps/train_state.py`: creation and the guarded update).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mumae_jax.core import sharding
from mumae_jax.models import masking
from mumae_jax.models.mae import MultimodalMAE
from mumae_jax.models.modality import ModalitySpec
from mumae_jax.objectives import mae_loss
from mumae_jax.steps import train_state


def dummy_inputs(specs: Sequence[ModalitySpec], batch: int = 1):
    """Zero inputs and valid (first-n-masked) masks of the right shapes, for init and shape checks."""
    inputs = {s.name: jnp.zeros((batch,) + s.input_shape, jnp.float32) for s in specs}
    masks = {s.name: jnp.broadcast_to(jnp.arange(s.num_tokens) < s.num_masked, (batch, s.num_tokens))
             for s in specs}
    return inputs, masks


def state_initializer(model: MultimodalMAE, tx: optax.GradientTransformation, rng, mesh):
    """(init, abstract_state, state_shardings) of the pretraining state, replicated
    (`train_state.replicated_initializer`)."""

    def init_fn(rng):
        inputs, masks = dummy_inputs(model.specs)
        decode = masking.draw_decode_masks(jax.random.key(0), model.specs, masks)
        return train_state.new_state(model.init({"params": rng}, inputs, masks, decode=decode)["params"], tx)

    return train_state.replicated_initializer(init_fn, rng, mesh)


def loss_and_metrics(model: MultimodalMAE, params, inputs, masks, dropout_rng=None, decode=None):
    """(total loss, {'loss_<modality>': MSE}) for explicit masks (and decode masks, decoder_ratio < 1)."""
    train = dropout_rng is not None
    rngs = {"dropout": dropout_rng} if train else {}
    preds = model.apply({"params": params}, inputs, masks, train=train, rngs=rngs, decode=decode)
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
        out, norms = train_state.guarded_update(tx, state, grads, loss)
        metrics = {"loss": loss, **aux, **norms, "lr": schedule(step)}
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
    init, abstract, state_sh = state_initializer(model, tx, jax.random.key(seed), mesh)
    return model, init, abstract, make_train_step(model, tx, schedule, seed, batch_size, mesh, state_sh)


def param_count(params) -> int:
    """Number of parameters."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
