"""Token masks with exact counts and static shapes. True means masked.

Strategies (per example, from one PRNG key):
  tube          video: one spatial mask of int(ratio*S) of S positions, repeated in every temporal slice.
  random        int(ratio*N) of N tokens, uniformly (video or sensor).
  time_aligned  sensor (contiguous patching): the visible tokens are those whose time slot has the
                most visible video tokens (random tie-break), so visible sensor and video evidence
                coincide in time. With tube video masking every slot is equally visible, so this
                reduces to random; it matters with random video masking.
Modalities with the same `mask_group` share one mask (Mu-MAE's "synchronized" sensor masking).
Masks for a batch are drawn with `jax.vmap` over per-example keys (`draw_masks`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mumae_jax.models.modality import ModalitySpec


def _mask_from_ranking(key, n: int, num_masked: int) -> jnp.ndarray:
    """Random bool [n] with exactly `num_masked` True."""
    order = jax.random.permutation(key, n)
    return jnp.zeros((n,), bool).at[order[:num_masked]].set(True)


def tube_mask(key, num_slices: int, per_slice: int, ratio: float) -> jnp.ndarray:
    """bool [num_slices*per_slice]: the same int(ratio*per_slice) positions masked in every slice."""
    spatial = _mask_from_ranking(key, per_slice, int(ratio * per_slice))
    return jnp.tile(spatial, num_slices)


def random_mask(key, n: int, ratio: float) -> jnp.ndarray:
    """bool [n] with exactly int(ratio*n) True."""
    return _mask_from_ranking(key, n, int(ratio * n))


def time_aligned_mask(key, spec: ModalitySpec, video_mask: jnp.ndarray, video: ModalitySpec) -> jnp.ndarray:
    """bool [spec.num_tokens]: keep visible the sensor tokens lying in the most visible video slots."""
    slices, per_slice = video.grid
    visible_frac = 1.0 - video_mask.reshape(slices, per_slice).mean(axis=1)  # [slices]
    n = spec.num_tokens
    slot = ((np.arange(n) + 0.5) * slices / n).astype(np.int32)  # time slot of each sensor token
    score = visible_frac[slot] + 1e-3 * jax.random.uniform(key, (n,))
    visible = jnp.argsort(-score)[: spec.num_visible]
    return jnp.ones((n,), bool).at[visible].set(False)


def example_masks(key, specs: Sequence[ModalitySpec]) -> dict[str, jnp.ndarray]:
    """Masks of one example: {name: bool [num_tokens]}; one draw per mask group."""
    by_key: dict[str, jnp.ndarray] = {}
    # Aligned masks depend on another modality's mask: draw the independent ones first.
    ordered = sorted(range(len(specs)), key=lambda i: specs[i].mask_type == "time_aligned")
    for i in ordered:
        spec = specs[i]
        if spec.mask_key in by_key:
            continue
        k = jax.random.fold_in(key, i)
        if spec.mask_type == "tube":
            slices, per_slice = spec.grid
            m = tube_mask(k, slices, per_slice, spec.mask_ratio)
        elif spec.mask_type == "random":
            m = random_mask(k, spec.num_tokens, spec.mask_ratio)
        elif spec.mask_type == "time_aligned":
            video = next(s for s in specs if s.name == spec.align_to)
            m = time_aligned_mask(k, spec, by_key[video.mask_key], video)
        else:
            raise ValueError(f"unknown mask_type {spec.mask_type!r} for modality '{spec.name}'")
        by_key[spec.mask_key] = m
    return {s.name: by_key[s.mask_key] for s in specs}


def draw_masks(key, specs: Sequence[ModalitySpec], batch_size: int) -> dict[str, jnp.ndarray]:
    """{name: bool [batch_size, num_tokens]}; example b uses key split(key, batch_size)[b]."""
    keys = jax.random.split(key, batch_size)
    return jax.vmap(lambda k: example_masks(k, specs))(keys)


def decode_mask(key, mask: jnp.ndarray, num_decoded: int) -> jnp.ndarray:
    """bool [N]: `num_decoded` of the masked tokens of `mask` [N], uniformly (VideoMAE V2 decoder masking)."""
    noise = jnp.where(mask, jax.random.uniform(key, mask.shape), 2.0)
    return jnp.zeros(mask.shape, bool).at[jnp.argsort(noise)[:num_decoded]].set(True)


def draw_decode_masks(key, specs: Sequence[ModalitySpec], masks: Mapping[str, jnp.ndarray]):
    """{name: bool [B, N]} reconstruction subsets for the modalities with decoder_ratio < 1 (else {})."""
    out = {}
    for i, s in enumerate(specs):
        if s.num_decoded < s.num_masked:
            keys = jax.random.split(jax.random.fold_in(key, i), masks[s.name].shape[0])
            out[s.name] = jax.vmap(lambda k, m, n=s.num_decoded: decode_mask(k, m, n))(keys, masks[s.name])
    return out


def visible_and_masked_ids(mask: jnp.ndarray, num_visible: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """bool [B, N] -> (visible ids [B, n_vis], masked ids [B, N - n_vis]), each in ascending order."""
    order = jnp.argsort(mask, axis=-1, stable=True)
    return order[:, :num_visible], order[:, num_visible:]


def check_masks(masks: Mapping[str, np.ndarray], specs: Sequence[ModalitySpec], batch_size: int) -> None:
    """Validates caller-supplied concrete masks (shape, dtype, exact per-example masked counts)."""
    for spec in specs:
        if spec.name not in masks:
            raise ValueError(f"masks lack modality '{spec.name}' (got {sorted(masks)})")
        try:
            m = np.asarray(masks[spec.name])
        except jax.errors.TracerArrayConversionError:  # inside jit: shapes are static, counts unchecked
            continue
        if m.dtype != np.bool_ or m.shape != (batch_size, spec.num_tokens):
            raise ValueError(f"mask of '{spec.name}' must be bool [{batch_size}, {spec.num_tokens}], "
                             f"got {m.dtype} {m.shape}")
        counts = m.sum(axis=1)
        if np.any(counts != spec.num_masked):
            raise ValueError(f"mask of '{spec.name}' must mask exactly {spec.num_masked} of "
                             f"{spec.num_tokens} tokens per example (mask_ratio={spec.mask_ratio}); "
                             f"got counts {counts.tolist()}")
