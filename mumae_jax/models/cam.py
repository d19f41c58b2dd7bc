"""CAM one-shot classifier ("self + cross" attention, CAN/MASTAF style) for Mu-MAE (docs/official_code.md §3.3).

Features are C channels at P positions ([N, C, P]; Mu-MAE: C = 192, P = 1·2·2 = 4). For a correlation
matrix R [.., P_a, P_b] of cosines between L2-normalised channel vectors the attention map is

    m_j = mean_i R_ij,   w = g(m),   s_i = mean_j R_ij w_j,   α_i = softmax_i(s_i / T) + 1,

with the meta-learner g = Conv1x1(P→6) + BN → ReLU → Conv1x1(6→P), the P positions acting as conv
channels and the (query, prototype) index pairs as the spatial axes (NHWC [B, H, W, P] here).
One meta-learner (conv + BN) is shared by the self- and cross-attention and by both directions.

Batch layout (several queries, as in TRX, are a leading axis Q; CAN's layout [b, n_query, n_way]):
  prototype self-attention  [1, 1, way, P]  (BN over the `way` prototypes)
  query self-attention      [Q, 1, 1, P]    (last spatial axis 1 -> BN skipped)
  cross-attention           [Q, 1, way, P]  (BN over all Q·way pairs)
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mumae_jax.models.initializers import torch_dense

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m)·old + m·batch


def to_channel_positions(x, channels: int = 192):
    """[N, D] -> [N, channels, 1, 2, 2] (channel-major: feature index = c·P + pos, P = D / channels).

    Only P = 4 maps to the (1, 2, 2) grid; other P give [N, channels, P].
    """
    n, d = x.shape
    if d % channels:
        raise ValueError(f"width {d} is not divisible by {channels} channels")
    p = d // channels
    return x.reshape(n, channels, 1, 2, 2) if p == 4 else x.reshape(n, channels, p)


def l2_normalize(x, axis: int, eps: float = 1e-12):
    """x / max(||x||_2, eps) along `axis` (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def cosine(a, b, axis: int = -1):
    """Cosine similarity of L2-normalised a and b along `axis` (broadcasting)."""
    return jnp.sum(l2_normalize(a, axis) * l2_normalize(b, axis), axis=axis)


def conv_init(out_channels: int, k: int = 1):
    """N(0, sqrt(2 / (k²·out))) as in CAN's conv init; flax kernel layout [k, k, in, out]."""
    return nn.initializers.normal(stddev=math.sqrt(2.0 / (k * k * out_channels)))


class BatchNorm(nn.Module):
    """BatchNorm over all axes but the last (PyTorch BatchNorm2d semantics on NHWC).

    Train: batch mean and biased variance; running stats (collection `batch_stats`: `mean`, `var`) are
    updated with momentum 0.1 and the *unbiased* variance, like PyTorch (not updated during init);
    `count` is PyTorch's `num_batches_tracked` (updates so far). Eval: running stats. Params `scale` (1)
    and `bias` (0).
    """

    epsilon: float = BN_EPS
    momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        count = self.variable("batch_stats", "count", jnp.zeros, (), jnp.int32)
        if train:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
                count.value = count.value + 1
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class MetaLearner(nn.Module):
    """g: [B, H, W, P] -> [B, H, W, P]; Conv1x1(P→hidden) (+ BN unless W == 1) → ReLU → Conv1x1(hidden→P).

    Convs have no bias by default (`use_bias`). BN must be created at init with an input whose W > 1.
    """

    hidden: int = 6
    use_bias: bool = False

    @nn.compact
    def __call__(self, m, train: bool = False):
        p = m.shape[-1]
        h = nn.Conv(self.hidden, (1, 1), use_bias=self.use_bias, kernel_init=conv_init(self.hidden),
                    name="conv1")(m)
        if m.shape[-2] != 1:
            h = BatchNorm(name="bn")(h, train)
        h = nn.relu(h)
        return nn.Conv(p, (1, 1), use_bias=self.use_bias, kernel_init=conv_init(p), name="conv2")(h)


def attention_map(r, g, temperature: float = 0.025, offset: float = 1.0):
    """r [B, H, W, P_a, P_b] -> α [B, H, W, P_a] = softmax_a(mean_b(r·g(mean_a r)) / T) + offset.

    `g` maps [B, H, W, P_b] -> [B, H, W, P_b] (a bound MetaLearner).
    """
    w = g(jnp.mean(r, axis=-2))
    s = jnp.mean(r * w[..., None, :], axis=-1)
    return jax.nn.softmax(s / temperature, axis=-1) + offset


def prototypes(support, support_labels, way: int):
    """Class means via one-hot: support [S, ...], labels [S] in 0..way-1 -> [way, ...]."""
    onehot = jax.nn.one_hot(support_labels, way, dtype=support.dtype)  # [S, way]
    counts = jnp.maximum(onehot.sum(0), 1.0)
    flat = support.reshape(support.shape[0], -1)
    return ((onehot.T @ flat) / counts[:, None]).reshape((way,) + support.shape[1:])


class CAM(nn.Module):
    """Self- and cross-attention with one shared MetaLearner.

    `self_attention(x [n, C, P], group)`: `group=True` puts the n items on the last spatial axis
    ([1, 1, n, P], BN over them); `group=False` gives [n, 1, 1, P] (BN skipped). Returns x ⊙ α.
    `cross_attention(p [way, C, P], q [Q, C, P])` -> (p^c, q^c), each [Q, way, C, P].
    """

    hidden: int = 6
    temperature: float = 0.025
    offset: float = 1.0
    use_bias: bool = False

    def setup(self):
        self.meta = MetaLearner(self.hidden, self.use_bias)

    def _attn(self, r, train):
        return attention_map(r, lambda m: self.meta(m, train), self.temperature, self.offset)

    def self_attention(self, x, group: bool, train: bool = False):
        xn = l2_normalize(x, axis=1)
        r = jnp.einsum("ncp,ncq->npq", xn, xn)  # [n, P, P]
        r = r[None, None] if group else r[:, None, None]
        alpha = self._attn(r, train).reshape(x.shape[0], x.shape[-1])  # [n, P]
        return x * alpha[:, None, :]

    def cross_attention(self, p, q, train: bool = False):
        r = jnp.einsum("kcp,qcr->qkpr", l2_normalize(p, 1), l2_normalize(q, 1))  # [Q, way, P_p, P_q]
        a_p = self._attn(r[:, None], train)[:, 0]  # [Q, way, P_p]
        a_q = self._attn(jnp.swapaxes(r, -1, -2)[:, None], train)[:, 0]  # [Q, way, P_q]
        return p[None] * a_p[:, :, None, :], q[:, None] * a_q[:, :, None, :]

    def __call__(self, p, q, train: bool = False):
        """p [way, C, P], q [Q, C, P] -> dict p_s [way, C, P], q_s [Q, C, P], p_c, q_c [Q, way, C, P]."""
        p_s = self.self_attention(p, group=True, train=train)
        q_s = self.self_attention(q, group=False, train=train)
        p_c, q_c = self.cross_attention(p, q, train)
        return dict(p_s=p_s, q_s=q_s, p_c=p_c, q_c=q_c)


class CAMClassifier(nn.Module):
    """Episode classifier on channel-position features.

    __call__(support [S, C, *pos], support_labels [S] (0..way-1), query [Q, C, *pos],
             query_labels [Q] episode labels or None, train) -> dict
      logits        [Q, way]             τ·cos(GAP q_k^c, GAP p_k^c) + α·τ·cos(GAP q^s, GAP p_k^s)
      cls_scores    [Q, way, P]          same with the query taken per position
      global_logits [Q, num_classes, P]  1×1 conv (Dense C→num_classes, bias) on q_y^c; only when
                                         query_labels is given (params are created at init regardless)
    `pos` axes are flattened to P (e.g. [N, 192, 1, 2, 2] -> [N, 192, 4]). Prediction = argmax(logits).
    """

    way: int = 5
    num_classes: int = 33
    scale_cls: float = 7.0
    alpha: float = 1.0
    hidden: int = 6
    temperature: float = 0.025
    offset: float = 1.0
    use_bias: bool = False

    @nn.compact
    def __call__(self, support, support_labels, query, query_labels=None, train: bool = False):
        c = support.shape[1]
        support = support.reshape(support.shape[0], c, -1)
        query = query.reshape(query.shape[0], c, -1)
        p = prototypes(support, support_labels, self.way)  # [way, C, P]
        f = CAM(self.hidden, self.temperature, self.offset, self.use_bias, name="cam")(p, query, train)
        tau, a = self.scale_cls, self.alpha
        gap = lambda x: jnp.mean(x, axis=-1)  # noqa: E731
        p_c, q_c = f["p_c"], f["q_c"]  # [Q, way, C, P]
        p_s, q_s = f["p_s"][None], f["q_s"][:, None]  # [1, way, C, P], [Q, 1, C, P]
        logits = tau * cosine(gap(q_c), gap(p_c)) + a * tau * cosine(gap(q_s), gap(p_s))
        cls_scores = (tau * cosine(q_c, gap(p_c)[..., None], axis=-2)
                      + a * tau * cosine(q_s, gap(p_s)[..., None], axis=-2))  # [Q, way, P]
        out = dict(logits=logits, cls_scores=cls_scores)
        head = torch_dense(self.num_classes, c, name="global_classifier")
        if query_labels is not None:
            y = jax.nn.one_hot(query_labels, self.way, dtype=q_c.dtype)  # [Q, way]
            q_y = jnp.einsum("qk,qkcp->qpc", y, q_c)  # [Q, P, C]
            out["global_logits"] = jnp.swapaxes(head(q_y), 1, 2)  # [Q, num_classes, P]
        elif self.is_initializing():
            head(jnp.zeros((1, c), q_c.dtype))
        return out




def positional_ce(logits, labels):
    """Softmax CE over axis 1 of logits [Q, K, P] at each position, averaged over P and Q."""
    logp = jax.nn.log_softmax(logits, axis=1)
    picked = jnp.take_along_axis(logp, labels[:, None, None].astype(jnp.int32), axis=1)[:, 0]  # [Q, P]
    return -jnp.mean(picked)


def cam_loss(global_logits, real_labels, cls_scores, episode_labels, weight: float = 0.5):
    """CE_pos(global_logits [Q, K, P], real_labels [Q]) + weight·CE_pos(cls_scores [Q, way, P], episode_labels [Q]).

    Scalar, averaged over positions and queries (divide by tasks_per_batch outside).
    """
    return positional_ce(global_logits, real_labels) + weight * positional_ce(cls_scores, episode_labels)
