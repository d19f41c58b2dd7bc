"""Mu-MAE one-shot fusion head: MAE->query projections, episode cross-attention, gated concat fusion.

docs/official_code.md §3.2 items 4-6, §5-H, §6 items 11-12. All rows are the N samples of ONE episode (support then query,
e.g. N = 6 for 5+1, N = 10 for TRX 5+5). The cross-attention runs ACROSS those N samples, so the output for a
sample depends on every other sample of the episode (transductive, docs/official_code.md §5-H).

  R [N, 384] --QueryProjections--> Q~_m [N, d_m]                          (Linear, no bias)
  Q~_m, U_m [N, d_m] --EpisodeCrossAttention(d_m, 4)--> O_m [N, d_m]      (one per modality)
  {O_m} --GatedConcatFusion(768)--> F = W_f [O_v*w_v ; O_1*w_1 ; ...] + b_f   [N, 768]

Linear layers use PyTorch's default init U(+-1/sqrt(fan_in)); gates are N(0, 1) (`torch.randn`).
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mumae_jax.models.initializers import torch_dense

# Mu-MAE default: video TimeSformer CLS (768) and four SensorCNN outputs (64 each), in concat order.
DEFAULT_MODALITIES = (("video", 768), ("acc_phone", 64), ("acc_watch", 64), ("gyro", 64), ("orientation", 64))

ModalityDims = Union[Mapping[str, int], Sequence[tuple[str, int]]]


def _items(modalities: ModalityDims) -> tuple[tuple[str, int], ...]:
    items = modalities.items() if isinstance(modalities, Mapping) else modalities
    return tuple((str(k), int(v)) for k, v in items)


def episode_attention(q, k, v, num_heads: int):
    """Multi-head attention across the N samples: q, k, v [N, d] -> [N, d].

    Head i uses the contiguous feature chunk [i*d/h, (i+1)*d/h); A_i = softmax_row(Q_i K_i^T / sqrt(d/h)).
    """
    n, d = q.shape
    if d % num_heads:
        raise ValueError(f"width {d} is not divisible by num_heads {num_heads}")
    dh = d // num_heads
    qh, kh, vh = (t.reshape(t.shape[0], num_heads, dh) for t in (q, k, v))
    logits = jnp.einsum("qhd,khd->hqk", qh, kh) / np.sqrt(dh)  # [h, N, N]
    attn = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("hqk,khd->qhd", attn, vh).reshape(n, d)


class EpisodeCrossAttention(nn.Module):
    """Q from the projected MAE representation, K/V from the unimodal features, across samples.

    q_tilde [N, d], u [N, d_u] -> O [N, d]. Q/K/V are Linear with bias; no out-projection, residual or norm.
    """

    dim: int
    heads: int = 4

    @nn.compact
    def __call__(self, q_tilde, u):
        q = torch_dense(self.dim, q_tilde.shape[-1], name="query")(q_tilde)
        k = torch_dense(self.dim, u.shape[-1], name="key")(u)
        v = torch_dense(self.dim, u.shape[-1], name="value")(u)
        return episode_attention(q, k, v, self.heads)


class QueryProjections(nn.Module):
    """R [N, rep] -> {name: R P_name [N, d_name]} (Linear without bias), one per modality."""

    modalities: ModalityDims = DEFAULT_MODALITIES

    @nn.compact
    def __call__(self, rep):
        return {name: torch_dense(d, rep.shape[-1], use_bias=False, name=f"proj_{name}")(rep)
                for name, d in _items(self.modalities)}


class GatedConcatFusion(nn.Module):
    """{name: O [N, d_name]} -> F [N, out] = W_f concat_m(O_m * w_m) + b_f, gates w_m [d_m] ~ N(0, 1).

    Concatenation follows `modalities` order (Mu-MAE: video, then the 4 sensors): W_f is Linear(1024 -> 768).
    """

    out: int = 768
    modalities: ModalityDims = DEFAULT_MODALITIES

    @nn.compact
    def __call__(self, feats: Mapping[str, jnp.ndarray]):
        gated = []
        for name, d in _items(self.modalities):
            gate = self.param(f"gate_{name}", nn.initializers.normal(1.0), (d,), jnp.float32)
            gated.append(feats[name] * gate)
        x = jnp.concatenate(gated, axis=-1)
        return torch_dense(self.out, x.shape[-1], name="fuse")(x)


FUSIONS = ("mae_query", "concat", "late")


class MultimodalEpisodeFusion(nn.Module):
    """Unimodal features {name: [N, d_name]} + MAE representation R [N, rep] -> fused F [N, out].

    mode 'mae_query' (Mu-MAE): R gives the queries of a cross-attention across the episode per modality,
    then gated concatenation. 'concat' (the ablation "plain concatenation"): no attention, each sample's
    own features and R are gated and concatenated, F = W_f [U_v*w_v ; U_1*w_1 ; ... ; R*w_mae] + b_f.
    'late': R does not enter the fusion (F = W_f [U_v*w_v ; U_1*w_1 ; ...] + b_f, `rep` ignored); the one-shot
    model adds R's nearest-prototype scores to the classifier's at evaluation (`MuMAEOneShot`).
    """

    modalities: ModalityDims = DEFAULT_MODALITIES
    heads: int = 4
    out: int = 768
    mode: str = "mae_query"

    @nn.compact
    def __call__(self, unimodal: Mapping[str, jnp.ndarray], rep):
        items = _items(self.modalities)
        missing = [name for name, _ in items if name not in unimodal]
        if missing:
            raise KeyError(f"unimodal features missing for {missing}; got {sorted(unimodal)}")
        if self.mode not in FUSIONS:
            raise ValueError(f"fusion mode {self.mode!r}: expected one of {FUSIONS}")
        if self.mode == "late":
            return GatedConcatFusion(self.out, items, name="fusion")(unimodal)
        if self.mode == "concat":
            feats = {**dict(unimodal), "mae": rep}
            return GatedConcatFusion(self.out, items + (("mae", rep.shape[-1]),), name="fusion")(feats)
        queries = QueryProjections(items, name="query_proj")(rep)
        attended = {name: EpisodeCrossAttention(d, self.heads, name=f"xattn_{name}")(queries[name], unimodal[name])
                    for name, d in items}
        return GatedConcatFusion(self.out, items, name="fusion")(attended)
