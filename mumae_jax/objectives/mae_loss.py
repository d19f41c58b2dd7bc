"""Reconstruction targets and the Mu-MAE pretraining loss.

video target:  un-normalise the input (x*std + mean), cut into tubes [B, N, pt*ph*pw, C], normalise each
               tube per colour channel over its pt*ph*pw pixels with (x - mean)/(std_unbiased + 1e-6),
               flatten as (dt, dy, dx, c) with the channel fastest -> [B, N, pt*ph*pw*C].
sensor target: the (strided) tokens [B, N, token_dim] of the model input, each normalised over all its
               values (axes pooled) with (x - mean)/(std_unbiased + 1e-6).
loss:          sum_m weight_m * MSE_m over the masked tokens (Mu-MAE: video 1.0, each sensor 0.5).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp

from mumae_jax.models import kinds, masking
from mumae_jax.models.modality import ModalitySpec

def modality_targets(spec: ModalitySpec, x: jnp.ndarray) -> jnp.ndarray:
    """Targets of every token [B, N, token_dim] (float32): the kind's target groups of the displayed input,
    each normalised over its values when `spec.normalize_target`."""
    kind = kinds.of(spec)
    groups = kind.target_groups(spec, kind.display(spec, x.astype(jnp.float32)))  # [B, N, P, G]
    if spec.normalize_target:
        groups = kinds.base.normalize(groups, axis=-2)
    return groups.reshape(groups.shape[0], groups.shape[1], -1)


def masked_targets(spec: ModalitySpec, x: jnp.ndarray, mask: jnp.ndarray, count: int | None = None) -> jnp.ndarray:
    """Targets of the True tokens of `mask` in ascending order: [B, count, token_dim] (count: default
    spec.num_masked; spec.num_decoded for a decode mask)."""
    count = spec.num_masked if count is None else count
    _, masked_ids = masking.visible_and_masked_ids(mask, spec.num_tokens - count)
    return jnp.take_along_axis(modality_targets(spec, x), masked_ids[..., None], axis=1)


def reconstruction_losses(specs: Sequence[ModalitySpec], preds: Mapping[str, jnp.ndarray],
                          inputs: Mapping[str, jnp.ndarray], masks: Mapping[str, jnp.ndarray], decode=None):
    """Returns (total loss, {name: MSE}); total = sum_m spec.loss_weight * MSE_m.

    With decoder masking (`decode` {name: bool [B, N]}, decoder_ratio < 1) a modality's MSE is over its
    reconstructed subset only.
    """
    decode = decode or {}
    per_modality = {}
    for s in specs:
        if s.name in decode:
            target = masked_targets(s, inputs[s.name], decode[s.name], s.num_decoded)
        else:
            target = masked_targets(s, inputs[s.name], masks[s.name])
        per_modality[s.name] = jnp.mean(jnp.square(preds[s.name].astype(jnp.float32) - target))
    total = sum(s.loss_weight * per_modality[s.name] for s in specs)
    return total, per_modality
