"""The video kind: frames [T, H, W, C] cut into (pt, ph, pw) tubes (docs/official_code.md §1.1).

Tokens in (t, h, w) order, each flattened as (dt, dy, dx, c) with the channel fastest; tube masking or
random masking; reconstruction targets normalised per tube and colour channel over its pt*ph*pw pixels,
computed on the un-normalised pixels (the official per-channel targets); a Conv3d-equivalent embedding.
"""
from __future__ import annotations

from typing import Any, Mapping

import einops
import jax.numpy as jnp
import numpy as np

from mumae_jax.models import tokenizers
from mumae_jax.models.kinds.base import Kind, ModalitySpec, fail, register


@register
class Video(Kind):
    name = "video"
    frames = True
    mask_types = ("tube", "random")
    official_embed = "conv3d"
    hidden_value = 0.5  # grey

    def build(self, name: str, cfg: Mapping[str, Any], common: Mapping[str, Any]) -> ModalitySpec:
        frames, size, channels = int(cfg["num_frames"]), int(cfg["image_size"]), int(cfg.get("channels", 3))
        tubelet = tuple(int(v) for v in cfg["tubelet"])
        if len(tubelet) != 3 or min(tubelet) < 1:
            fail(name, f"tubelet={tubelet} must be three positive ints (frames, height, width)")
        if frames % tubelet[0]:
            fail(name, f"num_frames={frames} is not divisible by the tubelet's temporal size {tubelet[0]}")
        if size % tubelet[1] or size % tubelet[2]:
            fail(name, f"image_size={size} is not divisible by the tubelet's spatial size {tubelet[1:]}")
        mean = tuple(float(v) for v in cfg.get("input_mean", ()))
        std = tuple(float(v) for v in cfg.get("input_std", ()))
        if len(mean) != len(std) or (mean and len(mean) != channels):
            fail(name, f"input_mean/input_std must both have {channels} values (or both be empty)")
        return ModalitySpec(input_shape=(frames, size, size, channels), tubelet=tubelet, input_mean=mean,
                            input_std=std, **common)

    def grid(self, spec):
        t, h, w, _ = spec.input_shape
        pt, ph, pw = spec.tubelet
        return t // pt, (h // ph) * (w // pw)

    def token_dim(self, spec):
        return int(np.prod(spec.tubelet)) * spec.input_shape[-1]

    def tokens(self, spec, x):
        p = tokenizers.video_patches(x, spec.tubelet)
        return p.reshape(p.shape[0], p.shape[1], -1)

    def embed(self, spec, width, dtype=jnp.float32, name=None):
        return tokenizers.TubeEmbed(width, spec.tubelet, dtype, name=name)

    def display(self, spec, x):
        """Pixels in [0, 1]: the input normalisation (`input_mean/std`) undone."""
        return x * jnp.asarray(spec.input_std) + jnp.asarray(spec.input_mean) if spec.input_mean else x

    def target_groups(self, spec, x):
        return tokenizers.video_patches(x, spec.tubelet)  # [B, N, pt*ph*pw, C]

    def from_groups(self, spec, groups):
        t, h, w, _ = spec.input_shape
        pt, ph, pw = spec.tubelet
        return einops.rearrange(groups, "(t h w) (p0 p1 p2) c -> (t p0) (h p1) (w p2) c", t=t // pt, h=h // ph,
                                w=w // pw, p0=pt, p1=ph, p2=pw)
