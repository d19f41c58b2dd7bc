"""The sensor kind: a sampled series [L, C] (e.g. 3-axis accelerometer) cut into `num_tokens` tokens.

`patching='strided'` (official, docs/official_code.md §1.2): token p holds samples p, p+N, p+2N, ...;
`'contiguous'`: token p holds one window of L/N samples (needed by time-aligned masking). Random or
time-aligned masking; targets: each token normalised over all its values; a per-token linear embedding
(the official Conv1d with kernel 1).
"""
from __future__ import annotations

from typing import Any, Mapping

import einops
import jax.numpy as jnp

from mumae_jax.models import tokenizers
from mumae_jax.models.kinds.base import Kind, ModalitySpec, fail, register

PATCHINGS = ("strided", "contiguous")


@register
class Sensor(Kind):
    name = "sensor"
    frames = False
    mask_types = ("random", "time_aligned")
    official_embed = "conv1d"
    hidden_value = float("nan")

    def build(self, name: str, cfg: Mapping[str, Any], common: Mapping[str, Any]) -> ModalitySpec:
        length, channels, tokens = int(cfg["length"]), int(cfg.get("channels", 3)), int(cfg["num_tokens"])
        if tokens < 1 or length % tokens:
            fail(name, f"length={length} is not divisible by num_tokens={tokens}")
        patching = cfg.get("patching", "strided")
        if patching not in PATCHINGS:
            fail(name, f"patching={patching!r}, expected one of {PATCHINGS}")
        align_to = cfg.get("align_to", "") or ""
        if common["mask_type"] == "time_aligned":
            if patching != "contiguous":
                fail(name, "mask_type='time_aligned' needs patching='contiguous': a strided token holds "
                           "samples from the whole clip, so it has no position in time to align")
            if not align_to:
                fail(name, "mask_type='time_aligned' needs align_to=<name of a video modality>")
        return ModalitySpec(input_shape=(length, channels), num_tokens_cfg=tokens, patching=patching,
                            align_to=align_to, **common)

    def grid(self, spec):
        return 1, spec.num_tokens_cfg

    def token_dim(self, spec):
        length, channels = spec.input_shape
        return (length // spec.num_tokens_cfg) * channels

    def tokens(self, spec, x):
        return tokenizers.sensor_tokens(x, spec.num_tokens_cfg, spec.patching)

    def embed(self, spec, width, dtype=jnp.float32, name=None):
        return tokenizers.SensorEmbed(width, dtype, name=name)

    def target_groups(self, spec, x):
        return self.tokens(spec, x)[..., None]  # [B, N, token_dim, 1]: one group of all the token's values

    def from_groups(self, spec, groups):
        pattern = "p (t c) -> (t p) c" if spec.patching == "strided" else "p (t c) -> (p t) c"
        return einops.rearrange(groups[..., 0], pattern, c=spec.input_shape[1])
