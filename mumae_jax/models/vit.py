"""ViT building blocks as in the official Mu-MAE / VideoMAE code.

Pre-norm blocks (LayerNorm eps 1e-6), attention with learned q and v biases and a k bias fixed to zero,
exact (erf) GELU MLP, xavier-uniform Linear kernels with zero biases, optional stochastic depth.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-6
dense_init = nn.initializers.xavier_uniform()


class Attention(nn.Module):
    """Multi-head self-attention: [B, N, D] -> [B, N, D].

    One fused qkv kernel [D, 3D] without bias, plus `q_bias` and `v_bias` [D]: the k bias is zero,
    exactly like the official `qkv_bias=True` layer. Scale head_dim^-0.5.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None  # None (XLA default) | 'xla' | 'cudnn'

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads {self.num_heads}")
        head_dim = d // self.num_heads
        qkv = nn.Dense(3 * d, use_bias=False, dtype=self.dtype, kernel_init=dense_init, name="qkv")(x)
        q_bias = self.param("q_bias", nn.initializers.zeros, (d,), jnp.float32)
        v_bias = self.param("v_bias", nn.initializers.zeros, (d,), jnp.float32)
        bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
        qkv = (qkv + bias).reshape(b, n, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
        out = out.reshape(b, n, d)
        return nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name="proj")(out)


class Mlp(nn.Module):
    """Dense(mlp_dim) -> exact GELU -> Dense(D)."""

    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name="fc2")(x)


class DropPath(nn.Module):
    """Stochastic depth per example (identity when deterministic or rate == 0); rng stream 'dropout'."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Block(nn.Module):
    """x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x)))."""

    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    ln_eps: float = LN_EPS

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        y = Attention(self.num_heads, self.dtype, self.attention_impl, name="attn")(y)
        x = x + DropPath(self.drop_path, name="drop_path1")(y, deterministic)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        y = Mlp(self.mlp_dim, self.dtype, name="mlp")(y)
        return x + DropPath(self.drop_path, name="drop_path2")(y, deterministic)


class Transformer(nn.Module):
    """`depth` Blocks (drop-path rate rising linearly to `drop_path`) and a final LayerNorm.

    `ln_eps` is the epsilon of every LayerNorm here (1e-6 as in the official code; Hugging Face VideoMAE
    configs carry their own `layer_norm_eps`).
    """

    depth: int
    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    final_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    ln_eps: float = LN_EPS

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        for i in range(self.depth):
            rate = self.drop_path * i / max(self.depth - 1, 1)
            x = Block(self.num_heads, self.mlp_dim, rate, self.dtype, self.attention_impl, self.ln_eps,
                      name=f"block{i:02d}")(x, deterministic)
        if self.final_norm:
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)
        return x
