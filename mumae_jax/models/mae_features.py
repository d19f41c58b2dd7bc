"""The pretrained Mu-MAE encoder as a feature extractor (one-shot stage and frozen-feature evaluators).

docs/official_code.md §3.2 item 3, §6 item 10. Every token is visible (no masking):

  video [N, T, H, W, 3] in [0, 1] --(ImageNet normalisation, see `normalize_video`)--> TubeEmbed + PE
      8 frames of 224²: 4·196 = 784 tokens (the sin-cos table is built for the actual token count)
  sensor_m [N, L, 3] --strided tokens + SensorEmbed + PE rows 0..15--> 16 tokens each
  concat (video, then sensors in `specs` order) [N, 784 + 64, D] -> 12 blocks (drop path, NO final norm)
  -> mean over all tokens -> fresh `fc_norm` LayerNorm -> R [N, D]

The last line is `pooling="mean"` (default; the official fine-tuning feature). `pooling="modality"`
keeps the modalities apart: the mean over each modality's own tokens, each through its own fresh
LayerNorm `fc_norm_<name>`, multiplied by 1/sqrt(number of modalities of its kind in `specs`), then
concatenated in `specs` order -> R [N, n_modalities·D]. With one video and four sensors the video block
is weighted 1 and each sensor block 1/2, so the video block and the sensor blocks together have the
same squared norm (each LayerNorm output has squared norm ~D at the fresh init).
`pooling="tokens"` keeps the spatial and temporal layout instead of averaging it away: each modality's
output tokens flattened, scaled to L2 norm sqrt(D / number of modalities of its kind) (the block weights
of "modality") -> R [N, Σ num_tokens · D]. (Standardising each token instead would blow the near-constant
background tokens' noise up to the scale of the person's tokens.) A mean over tokens keeps where the person's limbs are only as far as the
position embedding survives the encoder; the token layout keeps it as raw pixels do.
`feature_depth=k` (> 0) takes the tokens after the first k encoder blocks (an earlier layer's feature);
0 = all `depth` blocks. The later blocks have no parameters here (`load_pretrained` lists them as ignored).

Parameter names equal those of `MultimodalMAE` (`embed_<name>/proj`, `encoder/blockXX/...`), so a
pretraining checkpoint loads by name (`load_pretrained`). The pretrained final `encoder/norm` is dropped
(the official fine-tuning model replaces it by Identity under mean pooling); `fc_norm*` start fresh.

`normalize_video`: the official one-shot code feeds [0, 1] frames to the MAE encoder although it was
pretrained on ImageNet-normalised frames (docs/official_code.md §5-E). True (default) applies the pretraining
normalisation (`spec.input_mean/std`) inside the model; False reproduces the official behaviour.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mumae_jax.models import kinds, layer_stack, mae, modality, posemb, variants, vit
from mumae_jax.models.modality import ModalitySpec


POOLINGS = ("mean", "modality", "tokens")


class MAEFeatureEncoder(nn.Module):
    """{name: video [N, T, H, W, C] | sensor [N, L, C]} -> R (see module docstring).

    R is [N, width] for pooling="mean" and [N, len(specs)·width] for pooling="modality" (`feature_dim`).
    """

    specs: Sequence[ModalitySpec]
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    drop_path: float = 0.1
    normalize_video: bool = True
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    layer_norm_eps: float = vit.LN_EPS
    pooling: str = "mean"
    feature_depth: int = 0

    @property
    def feature_dim(self) -> int:
        if self.pooling == "tokens":
            return self.width * sum(s.num_tokens for s in self.specs)
        return self.width * (len(self.specs) if self.pooling == "modality" else 1)

    @nn.compact
    def __call__(self, inputs: Mapping[str, jnp.ndarray], train: bool = False):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {', '.join(POOLINGS)}")
        if not 0 <= self.feature_depth <= self.depth:
            raise ValueError(f"feature_depth={self.feature_depth} must be in 0..depth={self.depth}")
        depth = self.feature_depth or self.depth
        drop_path = self.drop_path  # block i keeps the full-depth model's rate drop_path·i/(depth-1):
        if depth < self.depth:
            drop_path = self.drop_path * max(depth - 1, 1) / max(self.depth - 1, 1)
        tokens = []
        for s in self.specs:
            x = inputs[s.name].astype(jnp.float32)
            if self.normalize_video and s.input_mean:
                x = (x - jnp.asarray(s.input_mean)) / jnp.asarray(s.input_std)
            t = kinds.of(s).embed(s, self.width, self.dtype, name=f"embed_{s.name}")(
                kinds.of(s).tokens(s, x.astype(self.dtype)))
            tokens.append(t + jnp.asarray(posemb.sincos_table(s.num_tokens, self.width), self.dtype))
        x = vit.Transformer(depth, self.num_heads, self.mlp_dim, drop_path, final_norm=False,
                            dtype=self.dtype, attention_impl=self.attention_impl, ln_eps=self.layer_norm_eps,
                            name="encoder")(
            jnp.concatenate(tokens, axis=1), train).astype(jnp.float32)
        if self.pooling == "mean":
            return nn.LayerNorm(epsilon=vit.LN_EPS, name="fc_norm")(jnp.mean(x, axis=1))
        per_kind = Counter(s.kind for s in self.specs)
        blocks, start = [], 0
        for s in self.specs:
            tokens = x[:, start:start + s.num_tokens]
            start += s.num_tokens
            if self.pooling == "tokens":  # keep the layout: the block flattened, scaled to unit L2 norm
                flat = tokens.reshape(tokens.shape[0], -1)
                flat = flat / jnp.maximum(jnp.linalg.norm(flat, axis=-1, keepdims=True), 1e-6)
                blocks.append(flat * np.sqrt(self.width / per_kind[s.kind]))
                continue
            blocks.append(nn.LayerNorm(epsilon=vit.LN_EPS, name=f"fc_norm_{s.name}")(jnp.mean(tokens, axis=1))
                          / np.sqrt(per_kind[s.kind]))
        return jnp.concatenate(blocks, axis=-1)


def oneshot_specs(pretrain_config, num_frames: int = 8, image_size: Optional[int] = None,
                  sensor_length: Optional[int] = None, modalities: Optional[Sequence[str]] = None
                  ) -> tuple[ModalitySpec, ...]:
    """The pretraining modality specs with the one-shot input geometry (8 frames by default).

    `modalities` selects a subset (default: all modalities of the pretraining model, in its order).
    """
    names = tuple(pretrain_config.modalities)
    cfgs = {n: dict(pretrain_config.modality[n]) for n in names}
    for n in names:
        if cfgs[n]["kind"] == "video":
            cfgs[n]["num_frames"] = num_frames
            if image_size:
                cfgs[n]["image_size"] = image_size
        elif sensor_length:
            cfgs[n]["length"] = sensor_length
    if modalities is not None:
        unknown = [m for m in modalities if m not in names]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the pretraining model {names}")
        names = tuple(m for m in names if m in modalities)
    for n in names:  # the feature encoder masks nothing: a mask aligned to a video left out does not matter
        if cfgs[n].get("align_to") and cfgs[n]["align_to"] not in names:
            cfgs[n].update(align_to="", mask_type="random")
    return modality.specs_from_config(names, cfgs)


def from_pretrain_config(pretrain_config, *, drop_path: float = 0.1, normalize_video: bool = True,
                         dtype=jnp.float32, pooling: str = "mean", feature_depth: int = 0,
                         **geometry) -> MAEFeatureEncoder:
    """The feature encoder with the pretraining model's sizes; `geometry` (num_frames, image_size,
    sensor_length, modalities) goes to `oneshot_specs`; `pooling`, `feature_depth`: module docstring."""
    sizes = variants.resolve(pretrain_config.model)
    return MAEFeatureEncoder(specs=oneshot_specs(pretrain_config, **geometry), width=sizes["width"],
                             depth=sizes["depth"], num_heads=sizes["num_heads"], mlp_dim=sizes["mlp_dim"],
                             drop_path=drop_path, normalize_video=normalize_video, dtype=dtype,
                             pooling=pooling, feature_depth=feature_depth,
                             layer_norm_eps=mae.layer_norm_eps(pretrain_config.model)["layer_norm_eps"])


FRESH = ("fc_norm",)  # name prefixes of parameters that never come from a checkpoint (fc_norm, fc_norm_<name>)


def load_pretrained(params: Mapping[str, Any], pretrained: Mapping[str, Any]) -> tuple[dict, dict]:
    """Copies every matching parameter of a `MultimodalMAE` tree into a `MAEFeatureEncoder` tree.

    Returns (params, report) with report lists `loaded`, `kept_init` (only the fresh `fc_norm*/*`) and
    `ignored` (decoders, mask token, encoder_to_decoder, the final encoder norm, unused modalities, blocks
    after `feature_depth`). A parameter of the feature encoder that is missing from `pretrained` (other than
    fc_norm*) or has another shape is a ValueError naming it: weights are never silently left random.
    `pretrained` may also be another feature encoder's tree (same names).
    """
    dst = traverse_util.flatten_dict(dict(params), sep="/")
    src = traverse_util.flatten_dict(layer_stack.unstack(pretrained), sep="/")  # a scanned run's `layers` too
    out, loaded, kept, problems = {}, [], [], []
    for k, v in dst.items():
        if k.split("/")[0].startswith(FRESH):
            out[k] = v
            kept.append(k)
        elif k not in src:
            problems.append(f"{k}: missing from the pretrained parameters")
        elif np.shape(src[k]) != np.shape(v):
            problems.append(f"{k}: pretrained shape {np.shape(src[k])} != model shape {np.shape(v)}")
        else:
            out[k] = jnp.asarray(src[k], jnp.asarray(v).dtype)
            loaded.append(k)
    if problems:
        raise ValueError("cannot initialise the MAE feature encoder from the pretrained parameters:\n  "
                         + "\n  ".join(problems))
    report = {"loaded": sorted(loaded), "kept_init": sorted(kept), "ignored": sorted(set(src) - set(dst))}
    return traverse_util.unflatten_dict(out, sep="/"), report
