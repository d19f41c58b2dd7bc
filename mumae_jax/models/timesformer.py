"""TimeSformer with divided space-time attention: the one-shot stage's video encoder (docs/official_code.md §3.2 item 1).

Follows the mx-mark VideoTransformer-pytorch TimeSformer used by the official one-shot code
(`OS/models/video_transformer.py`, `transformer.py`, `weight_init.py`):
  tokens  = Conv2d patch embedding of every frame            [N, T, P, D]   (P = (image_size/patch)^2)
  patch   = tokens + pos_embed[1:] (per patch) + time_embed (per frame)
  cls     = cls_token + pos_embed[0]                          (no temporal PE: docs/official_code.md §6 item 18)
  x       = concat(cls, patches in (t, p) order)              [N, 1 + T*P, D]
  block   : temporal attention over the T tokens of each patch position (CLS not involved),
            x += temporal_fc(DropPath(MHA(LN(.))))    with temporal_fc zero-initialised;
            spatial attention over CLS + the P patches of each frame (CLS copied into every frame,
            its T outputs averaged), x += DropPath(MHA(LN(.)));
            FFN, x += DropPath(MLP(LN(x))).
  output  = LN(x)[:, 0]                                       [N, D]
Block LayerNorms use PyTorch's eps 1e-5; the final one 1e-6. The reference orders patch tokens (p, t); the
order is immaterial here (attention groups are explicit and only CLS is returned). Attention follows
torch nn.MultiheadAttention: fused in-projection [D, 3D] with a full bias (q, k and v parts), heads as
contiguous D/h chunks, scale (D/h)^-0.5, out projection with bias.

Initialisation as the reference: cls_token and pos_embed trunc-normal(0.02), time_embed zeros, patch conv
kaiming-normal(fan_in, relu) with zero bias, in-projection xavier-uniform with zero bias, out projection
PyTorch-default kernel with zero bias, MLP PyTorch-default Linear, temporal_fc zero kernel and bias.

Initialising from a Mu-MAE encoder (`init_from_mae`; docs/official_code.md §5-B). The official `init_from_mae_pretrain_`
expects an image MAE with a Conv2d patch embedding; a Mu-MAE video encoder has a Conv3d tube kernel
[pt, ph, pw, C, D]. It is turned into a Conv2d kernel [ph, pw, C, D] by summing over the pt temporal taps
("sum", default: on a static clip each frame token then equals the pretrained tube token) or averaging them
("mean": responses scaled by 1/pt); the bias is copied. Every encoder block's attention (qkv kernel; bias =
[q_bias, 0, v_bias]; proj) and its norm1 go into BOTH the temporal and the spatial attention and their norms,
norm2 into the FFN norm, mlp fc1/fc2 into the MLP, and the encoder's final norm into the final norm.
`temporal_fc` (zero), `cls_token`, `pos_embed` and `time_embed` keep their init; as in the reference, the
pretrained sin-cos position table is not transferred. Decoders, the mask token and sensor embeddings are
ignored.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mumae_jax.models import vit
from mumae_jax.models.initializers import torch_bias_init, torch_kernel_init

BLOCK_LN_EPS = 1e-5  # torch nn.LayerNorm default, used inside the blocks
FINAL_LN_EPS = 1e-6
patch_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # kaiming_normal(fan_in, relu)
zeros = nn.initializers.zeros


class PatchEmbed(nn.Module):
    """Per-frame Conv2d, kernel = stride = patch: [N, T, H, W, C] -> [N, T, P, D], P in (h, w) order."""

    width: int
    patch_size: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, video):
        n, t, h, w, c = video.shape
        p = self.patch_size
        x = video.astype(self.dtype).reshape(n * t, h, w, c)
        x = nn.Conv(self.width, kernel_size=(p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    kernel_init=patch_kernel_init, bias_init=zeros, name="proj")(x)
        return x.reshape(n, t, -1, self.width)


class MultiheadAttention(nn.Module):
    """torch nn.MultiheadAttention self-attention: [B, L, D] -> [B, L, D].

    `qkv`: kernel [D, 3D] (q | k | v columns, head-major inside each) and bias [3D]; `proj`: [D, D] + bias.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads {self.num_heads}")
        qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                       bias_init=zeros, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return nn.Dense(d, dtype=self.dtype, kernel_init=torch_kernel_init, bias_init=zeros,
                        name="proj")(out.reshape(b, n, d))


class DividedBlock(nn.Module):
    """Temporal attention -> spatial attention -> FFN on x [N, 1 + T*P, D] (CLS, then patches in (t, p) order).

    DropPath draws one keep/drop per attention group, as the reference: per (example, patch) in the temporal
    branch (before `temporal_fc`), per (example, frame) in the spatial branch, per example in the FFN.
    """

    num_heads: int
    mlp_dim: int
    num_frames: int
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        n, l, d = x.shape
        t = self.num_frames
        if (l - 1) % t:
            raise ValueError(f"{l - 1} patch tokens are not a multiple of num_frames={t}")
        p = (l - 1) // t
        ln = lambda name: nn.LayerNorm(epsilon=BLOCK_LN_EPS, dtype=self.dtype, name=name)  # noqa: E731
        cls, patches = x[:, :1], x[:, 1:].reshape(n, t, p, d)

        # Temporal attention: one sequence of T tokens per (example, patch position); CLS passes through.
        y = patches.transpose(0, 2, 1, 3).reshape(n * p, t, d)
        y = MultiheadAttention(self.num_heads, self.dtype, name="time_attn")(ln("time_norm")(y))
        y = vit.DropPath(self.drop_path, name="drop_path_time")(y, train)
        y = nn.Dense(d, dtype=self.dtype, kernel_init=zeros, bias_init=zeros, name="temporal_fc")(y)
        patches = patches + y.reshape(n, p, t, d).transpose(0, 2, 1, 3)

        # Spatial attention: one sequence [CLS, P patches] per (example, frame); CLS outputs averaged over T.
        y = jnp.concatenate([jnp.broadcast_to(cls[:, None], (n, t, 1, d)), patches], axis=2)
        y = MultiheadAttention(self.num_heads, self.dtype, name="space_attn")(
            ln("space_norm")(y.reshape(n * t, p + 1, d)))
        y = vit.DropPath(self.drop_path, name="drop_path_space")(y, train).reshape(n, t, p + 1, d)
        cls = cls + y[:, :, :1].mean(axis=1)
        patches = patches + y[:, :, 1:]

        x = jnp.concatenate([cls, patches.reshape(n, t * p, d)], axis=1)
        y = ln("ffn_norm")(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=torch_kernel_init,
                     bias_init=torch_bias_init(d), name="fc1")(y)
        y = nn.gelu(y, approximate=False)
        y = nn.Dense(d, dtype=self.dtype, kernel_init=torch_kernel_init,
                     bias_init=torch_bias_init(self.mlp_dim), name="fc2")(y)
        return x + vit.DropPath(self.drop_path, name="drop_path_ffn")(y, train)


class TimeSformer(nn.Module):
    """Divided space-time TimeSformer: video [N, T, H, W, 3] -> CLS after the final LayerNorm [N, width].

    T must equal `num_frames` and H = W = `image_size` (they fix the shapes of `time_embed` and
    `pos_embed`). Drop-path rates rise linearly from 0 to `drop_path` over the blocks (rng 'dropout').
    The embedded input [N, 1 + T*P, D] is sown as intermediates/tokens.
    """

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 16
    num_frames: int = 8
    image_size: int = 224
    drop_path: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, video, train: bool = False):
        n, t, h, w, _ = video.shape
        if t != self.num_frames or h != self.image_size or w != self.image_size:
            raise ValueError(f"video {video.shape} does not match num_frames={self.num_frames}, "
                             f"image_size={self.image_size}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        p, d = (self.image_size // self.patch_size) ** 2, self.width
        x = PatchEmbed(d, self.patch_size, self.dtype, name="patch_embed")(video)       # [N, T, P, D]
        cls_token = self.param("cls_token", nn.initializers.truncated_normal(0.02), (1, 1, d), jnp.float32)
        pos = self.param("pos_embed", nn.initializers.truncated_normal(0.02), (1, p + 1, d), jnp.float32)
        time = self.param("time_embed", zeros, (1, t, d), jnp.float32)
        x = x + pos[:, None, 1:].astype(self.dtype) + time[:, :, None].astype(self.dtype)
        cls = jnp.broadcast_to((cls_token + pos[:, :1]).astype(self.dtype), (n, 1, d))
        x = jnp.concatenate([cls, x.reshape(n, t * p, d)], axis=1)
        self.sow("intermediates", "tokens", x)
        for i in range(self.depth):
            rate = self.drop_path * i / max(self.depth - 1, 1)  # np.linspace(0, drop_path, depth)
            x = DividedBlock(self.num_heads, self.mlp_dim, t, rate, self.dtype, name=f"block{i:02d}")(
                x, train)
        x = nn.LayerNorm(epsilon=FINAL_LN_EPS, dtype=self.dtype, name="norm")(x)
        return x[:, 0]


def _mae_block_map(i: int) -> list[tuple[str, str]]:
    """(TimeSformer key, MAE key) pairs of block i; qkv/bias is handled separately."""
    src, dst = f"encoder/block{i:02d}", f"block{i:02d}"
    pairs = []
    for attn, norm in (("time_attn", "time_norm"), ("space_attn", "space_norm")):
        pairs += [(f"{dst}/{attn}/qkv/kernel", f"{src}/attn/qkv/kernel"),
                  (f"{dst}/{attn}/proj/kernel", f"{src}/attn/proj/kernel"),
                  (f"{dst}/{attn}/proj/bias", f"{src}/attn/proj/bias"),
                  (f"{dst}/{norm}/scale", f"{src}/norm1/scale"),
                  (f"{dst}/{norm}/bias", f"{src}/norm1/bias")]
    pairs += [(f"{dst}/ffn_norm/scale", f"{src}/norm2/scale"), (f"{dst}/ffn_norm/bias", f"{src}/norm2/bias")]
    for fc in ("fc1", "fc2"):
        pairs += [(f"{dst}/{fc}/kernel", f"{src}/mlp/{fc}/kernel"), (f"{dst}/{fc}/bias", f"{src}/mlp/{fc}/bias")]
    return pairs


def _count_blocks(flat: dict, prefix: str = "") -> int:
    """Number of distinct `{prefix}blockNN` sub-trees among the '/'-joined keys."""
    return len({k[len(prefix):].split("/")[0] for k in flat if k.startswith(prefix + "block")})


def init_from_mae(ts_params: Any, mae_params: Any, tube_to_patch: str = "sum", *,
                  num_heads: Optional[tuple[int, int]] = None) -> tuple[Any, dict[str, list[str]]]:
    """Initialises TimeSformer params from a pretrained `MultimodalMAE` param tree (see module docstring).

    Both trees may be bare or wrapped as {'params': ...}; the result is wrapped like `ts_params`.
    `tube_to_patch`: "sum" | "mean" over the tube kernel's temporal axis (a 4-D kernel is used as-is).
    `num_heads`: optional (timesformer_heads, mae_heads), checked for equality (param shapes do not encode
    the head count). Raises ValueError on any width/depth/head mismatch, naming the key and both shapes.
    Returns (params, report) with report lists `loaded`, `kept_init` (TimeSformer keys, '/'-joined) and
    `ignored` (MAE keys not used).
    """
    if tube_to_patch not in ("sum", "mean"):
        raise ValueError(f"tube_to_patch={tube_to_patch!r}, expected 'sum' or 'mean'")
    if num_heads is not None and num_heads[0] != num_heads[1]:
        raise ValueError(f"num_heads mismatch: TimeSformer {num_heads[0]} vs MAE {num_heads[1]}")
    wrapped = set(ts_params) == {"params"}
    ts = traverse_util.flatten_dict(ts_params["params"] if wrapped else ts_params, sep="/")
    mae_tree = mae_params["params"] if set(mae_params) == {"params"} else mae_params
    mae = traverse_util.flatten_dict(mae_tree, sep="/")

    depth, mae_depth = _count_blocks(ts), _count_blocks(mae, "encoder/")
    if depth != mae_depth:
        raise ValueError(f"depth mismatch: TimeSformer has {depth} blocks (block00..), MAE encoder/block* has "
                         f"{mae_depth}")

    def get(key):
        if key not in mae:
            raise ValueError(f"MAE params lack {key!r} (is this a MultimodalMAE with a video modality?)")
        return jnp.asarray(mae[key])

    kernel = get("embed_video/proj/kernel")
    if kernel.ndim == 5:
        kernel = kernel.sum(axis=0) if tube_to_patch == "sum" else kernel.mean(axis=0)
    sources: dict[str, tuple[jnp.ndarray, tuple[str, ...]]] = {
        "patch_embed/proj/kernel": (kernel, ("embed_video/proj/kernel",)),
        "patch_embed/proj/bias": (get("embed_video/proj/bias"), ("embed_video/proj/bias",)),
        "norm/scale": (get("encoder/norm/scale"), ("encoder/norm/scale",)),
        "norm/bias": (get("encoder/norm/bias"), ("encoder/norm/bias",)),
    }
    for i in range(depth):
        for dst, src in _mae_block_map(i):
            sources[dst] = (get(src), (src,))
        qb, vb = f"encoder/block{i:02d}/attn/q_bias", f"encoder/block{i:02d}/attn/v_bias"
        q_bias, v_bias = get(qb), get(vb)
        bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])  # torch in_proj_bias, k part zero
        for attn in ("time_attn", "space_attn"):
            sources[f"block{i:02d}/{attn}/qkv/bias"] = (bias, (qb, vb))

    out, used = dict(ts), set()
    for dst, (value, src) in sources.items():
        if dst not in ts:
            raise ValueError(f"TimeSformer params lack {dst!r} (to be loaded from {src[0]!r})")
        if value.shape != ts[dst].shape:
            raise ValueError(f"shape mismatch for {dst!r} <- {src[0]!r}: TimeSformer {tuple(ts[dst].shape)} vs "
                             f"MAE {tuple(value.shape)}")
        out[dst] = value.astype(ts[dst].dtype)
        used.update(src)
    report = {"loaded": sorted(sources), "kept_init": sorted(set(ts) - set(sources)),
              "ignored": sorted(set(mae) - used)}
    params = traverse_util.unflatten_dict(out, sep="/")
    return ({"params": params} if wrapped else params), report
