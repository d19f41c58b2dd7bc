"""Tokenisers: video tube embedding, sensor patching + embedding, and the patch layouts of targets."""
from __future__ import annotations

import einops
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mumae_jax.models.initializers import torch_bias_init, torch_dense, torch_kernel_init


def sensor_tokens(x: jnp.ndarray, num_tokens: int, patching: str = "strided") -> jnp.ndarray:
    """[B, L, C] -> [B, num_tokens, (L/num_tokens)*C].

    strided (official): token p holds samples {p, p+P, p+2P, ...} (P = num_tokens), flattened as
      (sample, channel) with the channel fastest; equals einops 'b c (t p) l s -> b p (t l s c)' on the
      official [B, 1, L, 1, C] layout.
    contiguous: token p holds the window of samples [p*L/P, (p+1)*L/P).
    """
    if patching == "strided":
        return einops.rearrange(x, "b (t p) c -> b p (t c)", p=num_tokens)
    if patching == "contiguous":
        return einops.rearrange(x, "b (p t) c -> b p (t c)", p=num_tokens)
    raise ValueError(f"unknown sensor patching {patching!r}")


def video_patches(x: jnp.ndarray, tubelet: tuple[int, int, int]) -> jnp.ndarray:
    """[B, T, H, W, C] -> [B, N, pt*ph*pw, C] with tokens in (t, h, w) order, pixels (dt, dy, dx)."""
    pt, ph, pw = tubelet
    return einops.rearrange(x, "b (t p0) (h p1) (w p2) c -> b (t h w) (p0 p1 p2) c", p0=pt, p1=ph, p2=pw)


class _TubeProjection(nn.Module):
    """The Conv3d's parameters (kernel [pt, ph, pw, C, D], bias [D]) applied to flattened tubes."""

    width: int
    tubelet: tuple[int, int, int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        fan_in = tokens.shape[-1]
        channels = fan_in // int(np.prod(self.tubelet))
        kernel = self.param("kernel", torch_kernel_init, (*self.tubelet, channels, self.width), jnp.float32)
        bias = self.param("bias", torch_bias_init(fan_in), (self.width,), jnp.float32)
        y = jnp.einsum("bnk,kd->bnd", tokens, kernel.reshape(fan_in, self.width).astype(self.dtype))
        return y + bias.astype(self.dtype)


class TubeEmbed(nn.Module):
    """Conv3d with kernel = stride = tubelet, as a matmul on flattened tubes.

    Takes a video [B, T, H, W, C] (all T'*H'*W' tokens in (t, h, w) order) or tubes already cut by
    `kinds.video.Video.tokens` [B, n, pt*ph*pw*C] (e.g. only the visible ones) -> [B, n, D]. Same parameters
    (proj/kernel [pt, ph, pw, C, D]) and numbers as the convolution, about twice as fast on CPU.
    """

    width: int
    tubelet: tuple[int, int, int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if x.ndim == 5:
            p = video_patches(x, self.tubelet)
            x = p.reshape(p.shape[0], p.shape[1], -1)
        return _TubeProjection(self.width, self.tubelet, self.dtype, name="proj")(x)


class SensorEmbed(nn.Module):
    """Per-token linear map (the official Conv1d with k=1): [B, N, token_dim] -> [B, N, D]."""

    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        return torch_dense(self.width, tokens.shape[-1], name="proj", dtype=self.dtype)(tokens)
