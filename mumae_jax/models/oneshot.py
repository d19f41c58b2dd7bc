"""The Mu-MAE one-shot episodic model (docs/official_code.md §3.2-3.3): one episode in, few-shot and global logits out.

For one episode with S support and Q query clips (N = S + Q; 5+1 official, 5+5 TRX):

  video [N, T, H, W, 3] in [0, 1] --TimeSformer--> U_video [N, Dv]       (CLS after the final LN)
  sensor_m [N, L, 3] --SensorCNN_m--> U_m [N, 64]                          (one CNN per sensor)
  all modalities --MAEFeatureEncoder--> R [N, Dr]                          (unmasked, mean-pool, fc_norm)
  (U, R) --MultimodalEpisodeFusion--> F [N, 768]  (R -> per-modality queries, cross-attention across the
                                                   N samples, gated concatenation)
  F -> [N, 192, 1, 2, 2] (channel-major) -> support / query -> CAMClassifier
    -> logits [Q, way] (prediction), cls_scores [Q, way, 4], global_logits [Q, num_classes, 4] (training)

`fusion_mode='concat'` replaces the MAE-query cross-attention with a plain gated concatenation of each
sample's own features and R (the paper's fusion ablation). `fusion_mode='late'` (not in the paper) keeps R out of
the trained model (the MAE encoder does not even run in training): the fusion and CAM see the unimodal features
only, and at evaluation the prediction is log_softmax(CAM logits) + late_weight × cos(R_query, mean of the
L2-normalised R of each class's support), an ensemble of the trained stage with the frozen feature's
nearest-prototype probe. By default the whole model is trained; the
one-shot config's `freeze` holds chosen submodules fixed. `normalize_video` (default True) ImageNet-normalises the
[0, 1] frames before the TimeSformer and the MAE encoder, as in pretraining; False feeds [0, 1] frames as
the official code does (docs/official_code.md §5-E). `mae_dropout` p > 0 (not in the paper): in training, each episode's R
is zeroed with probability p, so the unimodal branches must classify on their own too (eval keeps R); a call's
`mae_dropout` argument (a traced scalar: the trainer's schedule, `model.mae_delay_tasks`) overrides p.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mumae_jax.models import cam
from mumae_jax.models.episode_fusion import MultimodalEpisodeFusion
from mumae_jax.models.mae_features import MAEFeatureEncoder
from mumae_jax.models.sensor_cnn import SensorCNN
from mumae_jax.models.timesformer import TimeSformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def episode_samples(batch: Mapping[str, jnp.ndarray], names: Sequence[str]) -> dict[str, jnp.ndarray]:
    """{name: concat(support_<name>, query_<name>)} -> [N = S + Q, ...] for each modality name."""
    return {n: jnp.concatenate([batch[f"support_{n}"], batch[f"query_{n}"]], axis=0) for n in names}


class MuMAEOneShot(nn.Module):
    """Episode dict (one episode, `episode_input` layout) -> dict of logits (see module docstring).

    Submodules: `mae` (MAEFeatureEncoder), `video` (TimeSformer), `cnn_<sensor>`, `fusion`, `classifier`.
    """

    mae: MAEFeatureEncoder
    video: TimeSformer
    sensors: tuple[str, ...] = ("acc_phone", "acc_watch", "gyro", "orientation")
    sensor_layout: str = "transpose"
    sensor_dim: int = 64
    fused_dim: int = 768
    channels: int = 192
    heads: int = 4
    way: int = 5
    num_classes: int = 33
    scale_cls: float = 7.0
    alpha: float = 1.0
    temperature: float = 0.025
    cam_hidden: int = 6
    normalize_video: bool = True
    fusion_mode: str = "mae_query"
    mae_dropout: float = 0.0
    late_weight: float = 5.0

    def setup(self):
        self.cnns = {s: SensorCNN(out=self.sensor_dim, layout=self.sensor_layout, name=f"cnn_{s}")
                     for s in self.sensors}
        dims = (("video", self.video.width),) + tuple((s, self.sensor_dim) for s in self.sensors)
        self.fusion = MultimodalEpisodeFusion(dims, self.heads, self.fused_dim, self.fusion_mode)
        self.classifier = cam.CAMClassifier(self.way, self.num_classes, self.scale_cls, self.alpha,
                                            self.cam_hidden, self.temperature)

    def unimodal(self, samples: Mapping[str, jnp.ndarray], train: bool = False):
        """{video: [N, Dv], <sensor>: [N, sensor_dim]}."""
        v = samples["video"]
        if self.normalize_video:
            v = (v - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        out = {"video": self.video(v, train)}
        for s in self.sensors:
            out[s] = self.cnns[s](samples[s])
        return out

    def encode(self, samples: Mapping[str, jnp.ndarray], train: bool = False):
        """Per-clip encodings of N clips, nothing mixed across clips: {video: [N, Dv], <sensor>: [N, sensor_dim],
        "mae": R [N, Dr]}. In eval mode a clip's encoding is the same in every episode, so an episode list can
        be scored from one encoding per distinct clip (`classify`)."""
        u = self.unimodal(samples, train)
        return {**u, "mae": self.mae({s.name: samples[s.name] for s in self.mae.specs}, train)}

    def _fuse(self, encoded: Mapping[str, jnp.ndarray]):
        enc = dict(encoded)
        rep = enc.pop("mae")
        return self.fusion(enc, rep)

    def features(self, samples: Mapping[str, jnp.ndarray], train: bool = False):
        """Fused episode features F [N, fused_dim] of the N samples {video, <sensor>...} (one episode)."""
        return self._fuse(self.encode(samples, train))

    def classify(self, encoded: Mapping[str, jnp.ndarray], support_labels, query_labels=None, train: bool = False):
        """The episode head on per-clip encodings (`encode`) of one episode's N = S + Q clips, support first:
        fusion across the episode, then CAMClassifier's dict (`global_logits` only with `query_labels`); late
        fusion in eval adds its two parts, `cam_log_probs` and `late_scores` [Q, way] (logits = cam_log_probs +
        late_weight × late_scores), so an evaluator can score other weights without rerunning the head."""
        num_support = support_labels.shape[0]
        f = cam.to_channel_positions(self._fuse(encoded), self.channels)
        out = self.classifier(f[:num_support], support_labels, f[num_support:], query_labels, train)
        if self.fusion_mode == "late" and not train:  # R's nearest-prototype scores join at evaluation
            r = cam.l2_normalize(encoded["mae"], -1)
            protos = cam.prototypes(r[:num_support], support_labels, self.way)  # [way, Dr]
            scores = cam.cosine(r[num_support:, None, :], protos[None])  # [Q, way]
            log_probs = jax.nn.log_softmax(out["logits"], -1)
            out = {**out, "logits": log_probs + self.late_weight * scores, "cam_log_probs": log_probs,
                   "late_scores": scores}
        return out

    def __call__(self, batch: Mapping[str, jnp.ndarray], train: bool = False, with_global: bool = True,
                 mae_dropout=None):
        """batch: support_video [S, T, H, W, 3], query_video [Q, ...], support_/query_<sensor> [., L, 3],
        support_labels [S], query_labels [Q] (episode labels). Returns CAMClassifier's dict
        (`global_logits` only when `with_global`). `mae_dropout` (float or scalar array; None: the attribute)
        is the training-time probability of zeroing this episode's R."""
        names = ("video",) + tuple(self.sensors)
        extra = [s.name for s in self.mae.specs if s.name not in names]
        if extra:
            raise ValueError(f"the MAE encoder needs modalities {extra} that the one-shot model does not feed")
        samples = episode_samples(batch, names)
        if train and self.fusion_mode == "late":  # R is not part of the trained model
            encoded = {**self.unimodal(samples, train), "mae": None}
        else:
            encoded = self.encode(samples, train)
        rate = self.mae_dropout if mae_dropout is None else mae_dropout
        dropping = not isinstance(rate, (int, float)) or rate > 0  # a traced rate (a schedule) always draws
        if train and encoded["mae"] is not None and dropping:  # the whole episode's R, one draw per episode
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate)
            encoded["mae"] = encoded["mae"] * keep.astype(encoded["mae"].dtype)
        return self.classify(encoded, batch["support_labels"], batch["query_labels"] if with_global else None, train)


def episode_loss(out: Mapping[str, jnp.ndarray], batch: Mapping[str, jnp.ndarray], weight: float = 0.5):
    """Global CE (true global class of each query) + weight × per-position few-shot CE (docs/official_code.md §3.3)."""
    real = jnp.take(batch["global_labels"], batch["query_labels"])
    return cam.cam_loss(out["global_logits"], real, out["cls_scores"], batch["query_labels"], weight)
