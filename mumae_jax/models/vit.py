"""ViT building blocks as in the official Mu-MAE / VideoMAE code.

Pre-norm blocks (LayerNorm eps 1e-6), attention with learned q and v biases and a k bias fixed to zero,
exact (erf) GELU MLP, xavier-uniform Linear kernels with zero biases, optional stochastic depth.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-6
dense_init = nn.initializers.xavier_uniform()


ATTENTION_IMPLS = ("auto", "xla", "cudnn", "chunked")


@jax.custom_vjp
def gelu(x):
    """Exact (erf) GELU, x * Phi(x), whose backward pass keeps only `x`.

    Same values as `jax.nn.gelu(x, approximate=False)`; JAX's own derivative of erf keeps two more
    activation-sized tensors per MLP for the backward pass (about 40 MB per decoder block of ViT-B at
    batch 2), this one recomputes Phi(x) + x phi(x) from `x`. Computed in float32 for bf16 inputs.
    """
    return _gelu_fwd(x)[0]


def _gelu_fwd(x):
    xf = x.astype(jnp.float32)
    return (xf * 0.5 * (1.0 + jax.lax.erf(xf * 0.7071067811865476))).astype(x.dtype), x


def _gelu_bwd(x, g):
    xf = x.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * 0.7071067811865476))
    pdf = jnp.exp(-0.5 * xf * xf) * 0.3989422804014327
    return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def chunked_attention(q, k, v, chunk: int = 512):
    """Softmax attention [B, N, H, Dh] computed over blocks of at most `chunk` queries (keys whole).

    Each block's logits [B, H, c, N] are made, used and (in the backward pass) recomputed one block at a
    time (`lax.map` of a `jax.checkpoint`ed block), so the full [B, H, N, N] matrix never exists. The
    same numbers as plain attention up to float summation order; on CPU it is about twice as fast as
    `jax.nn.dot_product_attention` for 1568 tokens (README, performance).
    """
    b, n, h, d = q.shape
    q = q * jnp.asarray(d ** -0.5, q.dtype)

    def block(qb):
        logits = jnp.einsum("bqhd,bkhd->bhqk", qb, k, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v)

    c = max(x for x in range(1, min(chunk, n) + 1) if n % x == 0)  # largest divisor of n <= chunk
    if c == n:
        return block(q)
    blocks = q.reshape(b, n // c, c, h, d).swapaxes(0, 1)
    return jax.lax.map(jax.checkpoint(block), blocks).swapaxes(0, 1).reshape(b, n, h, d)


def attend(q, k, v, impl: Optional[str]):
    """Dispatch on `config.model.attention_impl`: auto (chunked on CPU, XLA's default elsewhere), xla,
    cudnn (flash attention on NVIDIA GPUs) or chunked."""
    impl = impl or "auto"
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={impl!r}; expected one of {ATTENTION_IMPLS}")
    if impl == "chunked" or (impl == "auto" and jax.default_backend() == "cpu"):
        return chunked_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, implementation=None if impl == "auto" else impl)


class Attention(nn.Module):
    """Multi-head self-attention: [B, N, D] -> [B, N, D].

    One fused qkv kernel [D, 3D] without bias, plus `q_bias` and `v_bias` [D]: the k bias is zero,
    exactly like the official `qkv_bias=True` layer. Scale head_dim^-0.5.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None  # see `attend`: None/'auto' | 'xla' | 'cudnn' | 'chunked'

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
        out = attend(q, k, v, self.attention_impl)
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
        x = gelu(x)
        return nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name="fc2")(x)


class DropPath(nn.Module):
    """Stochastic depth per example (identity unless `train`, or when rate is 0); rng stream 'dropout'.

    `rate` is a float, or a traced scalar inside a layer scan (each layer its own rate)."""

    rate: Any = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Block(nn.Module):
    """x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x))).

    `drop_rate` (call argument) overrides `drop_path` (used by the layer scan, where it is traced)."""

    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    ln_eps: float = LN_EPS

    @nn.compact
    def __call__(self, x, train: bool = False, drop_rate=None):
        rate = self.drop_path if drop_rate is None else drop_rate
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        y = Attention(self.num_heads, self.dtype, self.attention_impl, name="attn")(y)
        x = x + DropPath(rate, name="drop_path1")(y, train)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        y = Mlp(self.mlp_dim, self.dtype, name="mlp")(y)
        return x + DropPath(rate, name="drop_path2")(y, train)


REMAT = ("none", "block", "dots")


def remat_block(remat: str):
    """The Block class under a rematerialisation policy (parameter names are unchanged).

    none: keep every activation for the backward pass; block: keep only each block's input and
    recompute the rest (least memory); dots: keep the matmul outputs, recompute the element-wise work.
    """
    if remat == "none":
        return Block
    if remat == "block":
        return nn.remat(Block, static_argnums=(2,))
    if remat == "dots":
        return nn.remat(Block, static_argnums=(2,), policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"config.model.remat={remat!r}; expected one of {REMAT}")


SCANNED = "layers"  # name of the stacked blocks of a scanned Transformer (leading axis: layer)


class Transformer(nn.Module):
    """`depth` Blocks (drop-path rate rising linearly to `drop_path`) and a final LayerNorm.

    `ln_eps` is the epsilon of every LayerNorm here (1e-6 as in the official code; Hugging Face VideoMAE
    configs carry their own `layer_norm_eps`). `remat`: see `remat_block`.
    `scan=True` runs the blocks as one `nn.scan` over stacked parameters (`layers/...`, leading axis
    `depth`) instead of `block00..` (one compiled block: faster compilation, smaller executable); the
    two layouts convert into each other with `models/layer_stack.py`.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    final_norm: bool = True
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    ln_eps: float = LN_EPS
    remat: str = "none"
    scan: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        block = remat_block(self.remat)
        rates = [self.drop_path * i / max(self.depth - 1, 1) for i in range(self.depth)]
        if self.scan:
            layers = block(self.num_heads, self.mlp_dim, 0.0, self.dtype, self.attention_impl, self.ln_eps,
                           name=SCANNED)
            if self.drop_path > 0 and train:
                def body(mdl, carry, rate):
                    return mdl(carry, train, rate), None

                xs = jnp.asarray(rates, jnp.float32)
            else:
                def body(mdl, carry, _):
                    return mdl(carry, train), None

                xs = None
            scan = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                           length=self.depth)
            x, _ = scan(layers, x, xs)
        else:
            for i in range(self.depth):
                x = block(self.num_heads, self.mlp_dim, rates[i], self.dtype, self.attention_impl, self.ln_eps,
                          name=f"block{i:02d}")(x, train)
        if self.final_norm:
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)
        return x
