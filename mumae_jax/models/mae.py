"""The multimodal masked autoencoder (Mu-MAE pretraining model), modality-generic.

Forward pass for modalities m_1..m_k (in `specs` order; Mu-MAE: video, acc_phone, acc_watch, gyro,
orientation):
  tokens_m  = Embed_m(raw_m[visible_m]) + PE_m[visible_m]  [B, n_vis_m, D]  (fixed sin-cos, no modality emb.;
              embedding the visible tokens only equals embedding all and selecting: it is per token)
  encoder   = Transformer(concat_m tokens_m)              [B, sum_m n_vis_m, D]   visible tokens only
  z         = encoder_to_decoder(encoder)  (no bias)      [B, sum_m n_vis_m, Dd]
  dec_in_m  = concat(z_m + PEd_m[visible_m], mask_token + PEd_m[masked_m])   visible first
  pred_m    = Head_m(LN(Decoder_m(dec_in_m)[:, -n_masked_m:]))               [B, n_masked_m, token_dim_m]
              (decoder_ratio < 1: only a random subset of the masked tokens enters dec_in_m and is predicted)
One `mask_token` is shared by all decoders; each decoder only sees its own modality.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mumae_jax.models import kinds, masking, modality, posemb, variants, vit
from mumae_jax.models.modality import ModalitySpec


def _gather(x, ids):
    """x [B, N, D], ids [B, K] -> [B, K, D]."""
    return jnp.take_along_axis(x, ids[..., None], axis=1)


class ModalityDecoder(nn.Module):
    """Light decoder of one modality: blocks -> LN on the last `num_masked` tokens -> head."""

    depth: int
    num_heads: int
    mlp_dim: int
    out_dim: int
    num_masked: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    ln_eps: float = vit.LN_EPS
    norm_eps: float = vit.LN_EPS
    remat: str = "none"
    scan: bool = False

    @nn.compact
    def __call__(self, x):
        x = vit.Transformer(self.depth, self.num_heads, self.mlp_dim, final_norm=False, dtype=self.dtype,
                            attention_impl=self.attention_impl, ln_eps=self.ln_eps, remat=self.remat,
                            scan=self.scan, name="blocks")(x)
        x = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name="norm")(x[:, -self.num_masked:])
        return nn.Dense(self.out_dim, dtype=self.dtype, kernel_init=vit.dense_init, name="head")(x)


class MultimodalMAE(nn.Module):
    """Masked autoencoder over a tuple of modalities (see module docstring).

    Call with `inputs` {name: video [B,T,H,W,C] or sensor [B,L,C]} and `masks` {name: bool [B, N_m]}
    (True = masked; exactly `spec.num_masked` per example). Returns {name: [B, n_masked_m, token_dim_m]}
    predictions for the masked tokens in ascending token order (with decoder_ratio < 1: for the
    `num_decoded` tokens of the decode mask).

    `layer_norm_eps` is used by every LayerNorm except the decoders' final one (`decoder_norm_eps`); both
    are 1e-6 in the official code, while Hugging Face VideoMAE uses its config's `layer_norm_eps` and a
    fixed 1e-5 for the decoder norm.
    """

    specs: Sequence[ModalitySpec]
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    decoder_width: int
    decoder_depth: int
    decoder_heads: int
    decoder_mlp_dim: int
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: Optional[str] = None
    layer_norm_eps: float = vit.LN_EPS
    decoder_norm_eps: float = vit.LN_EPS
    remat: str = "none"
    scan: bool = False  # scan over stacked layers (vit.Transformer); parameters `layers/...` not `blockNN/...`

    def setup(self):
        self.embeds = {s.name: kinds.of(s).embed(s, self.width, self.dtype, name=f"embed_{s.name}")
                       for s in self.specs}
        self.encoder = vit.Transformer(self.depth, self.num_heads, self.mlp_dim, self.drop_path,
                                       dtype=self.dtype, attention_impl=self.attention_impl,
                                       ln_eps=self.layer_norm_eps, remat=self.remat, scan=self.scan,
                                       name="encoder")
        self.encoder_to_decoder = nn.Dense(self.decoder_width, use_bias=False, dtype=self.dtype,
                                           kernel_init=vit.dense_init, name="encoder_to_decoder")
        self.mask_token = self.param("mask_token", nn.initializers.truncated_normal(0.02),
                                     (1, 1, self.decoder_width), jnp.float32)
        self.decoders = {
            s.name: ModalityDecoder(self.decoder_depth, self.decoder_heads, self.decoder_mlp_dim,
                                    s.token_dim, s.num_decoded, self.dtype, self.attention_impl,
                                    self.layer_norm_eps, self.decoder_norm_eps, self.remat, self.scan,
                                    name=f"decoder_{s.name}")
            for s in self.specs
        }

    def encode(self, inputs, masks, train: bool = False):
        """Encoder over visible tokens only: [B, sum_m n_vis_m, D] (video first, then sensors).

        Only the visible tokens are embedded (the embedding acts on each token alone, so this equals
        embedding all and then selecting, at a tenth of the cost)."""
        visible = []
        for s in self.specs:
            vis_ids, _ = masking.visible_and_masked_ids(masks[s.name], s.num_visible)
            raw = _gather(kinds.of(s).tokens(s, inputs[s.name].astype(self.dtype)), vis_ids)
            table = jnp.asarray(posemb.sincos_table(s.num_tokens, self.width), self.dtype)
            pe = _gather(jnp.broadcast_to(table, (raw.shape[0],) + table.shape), vis_ids)
            visible.append(self.embeds[s.name](raw) + pe)
        return self.encoder(jnp.concatenate(visible, axis=1), train)

    def __call__(self, inputs, masks, train: bool = False, decode=None):
        """`decode` (optional) {name: bool [B, N_m]}: the masked tokens to reconstruct when a modality has
        decoder_ratio < 1 (`masking.draw_decode_masks`); its decoder then sees visible + those tokens only."""
        decode = decode or {}
        batch = next(iter(inputs.values())).shape[0]
        masking.check_masks(masks, self.specs, batch)
        z = self.encoder_to_decoder(self.encode(inputs, masks, train))
        preds, start = {}, 0
        for s in self.specs:
            z_m = z[:, start:start + s.num_visible]
            start += s.num_visible
            vis_ids, masked_ids = masking.visible_and_masked_ids(masks[s.name], s.num_visible)
            if s.num_decoded < s.num_masked:
                if s.name not in decode:
                    raise ValueError(f"modality '{s.name}' has decoder_ratio={s.decoder_ratio}: pass its decode mask")
                _, masked_ids = masking.visible_and_masked_ids(decode[s.name], s.num_tokens - s.num_decoded)
            table = jnp.asarray(posemb.sincos_table(s.num_tokens, self.decoder_width), self.dtype)
            pe = jnp.broadcast_to(table, (batch,) + table.shape)
            x = jnp.concatenate([z_m + _gather(pe, vis_ids),
                                 self.mask_token.astype(self.dtype) + _gather(pe, masked_ids)], axis=1)
            preds[s.name] = self.decoders[s.name](x)
        return preds


def from_config(config) -> MultimodalMAE:
    """Builds the model (and validates its modalities) from a pretraining config."""
    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    sizes = variants.resolve(config.model)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.get("compute_dtype", "float32"))
    if dtype is None:
        raise ValueError(f"config.compute_dtype={config.compute_dtype!r}, expected 'float32' or 'bfloat16'")
    impl = config.model.get("attention_impl", "") or None
    remat = config.model.get("remat", "none") or "none"
    if remat not in vit.REMAT:
        raise ValueError(f"config.model.remat={remat!r}; expected one of {vit.REMAT}")
    return MultimodalMAE(specs=specs, drop_path=float(config.model.get("drop_path", 0.0)), dtype=dtype,
                         attention_impl=impl, remat=remat, scan=bool(config.model.get("scan", False)),
                         **layer_norm_eps(config.model), **sizes)


def layer_norm_eps(model_cfg) -> dict[str, float]:
    """{'layer_norm_eps', 'decoder_norm_eps'} from `config.model` (default 1e-6; decoder: same as encoder)."""
    eps = float(model_cfg.get("layer_norm_eps", 0.0) or vit.LN_EPS)
    return {"layer_norm_eps": eps, "decoder_norm_eps": float(model_cfg.get("decoder_norm_eps", 0.0) or eps)}
