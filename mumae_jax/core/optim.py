"""Optimizer and learning-rate schedule of Mu-MAE pretraining (optax)."""
from __future__ import annotations

import logging

import jax
import optax

from mumae_jax.models.vit import SCANNED


def lr_schedule(peak: float, end: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Per-step linear warm-up from 0, then cosine from `peak` to `end` (official `cosine_scheduler`).

    The warm-up equals numpy's `linspace(0, peak, warmup_steps)` (it reaches `peak` at its last step);
    the cosine covers the remaining `total_steps - warmup_steps` steps.
    """
    decay_steps = max(total_steps - warmup_steps, 1)
    cosine = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    if warmup_steps <= 0:
        return cosine
    if warmup_steps >= total_steps:
        logging.warning("warm-up (%d steps) is not shorter than the run (%d steps): the learning rate "
                        "never reaches its peak %.3g", warmup_steps, total_steps, peak)
    if warmup_steps == 1:
        warmup = optax.constant_schedule(0.0)
    else:
        warmup = optax.linear_schedule(0.0, peak, warmup_steps - 1)
    return optax.join_schedules([warmup, cosine], [warmup_steps])


def decay_mask(params):
    """True where weight decay applies: not on 1-D params (biases, norms, q/v biases) nor mask_token.

    Inside a scanned Transformer (`layers/...`) the leading layer axis does not count."""

    def keep(path, p):
        names = [getattr(k, "key", str(k)) for k in path]
        ndim = p.ndim - (SCANNED in names)
        return ndim > 1 and "mask_token" not in names and names[-1] != "bias"

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(config, steps_total: int, steps_warmup: int):
    """AdamW with the paper's betas, weight-decay exclusions and batch-scaled lr; returns (tx, schedule)."""
    scale = config.batch_size / config.lr_scaling_batch
    schedule = lr_schedule(config.base_lr * scale, config.min_lr * scale, steps_warmup, steps_total)
    tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                     weight_decay=config.weight_decay, mask=decay_mask)
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedule
