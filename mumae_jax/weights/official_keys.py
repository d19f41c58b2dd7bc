"""Parameter conversion between our `MultimodalMAE` and the official Mu-MAE pretraining state dict.

The official model is `PretrainVisionTransformer` (mu-mae-pretrain/modeling_pretrain.py, with Block,
Attention, Mlp and PatchEmbed from modeling_finetune.py). Only key names and shapes are taken from it.

Modality names (ours -> official module prefixes):

  ours          embedding                         decoder
  video         encoder.patch_embed.proj          decoder.
  acc_phone     encoder.patch_embed_phone.proj    phone_decoder.
  acc_watch     encoder.patch_embed_watch.proj    watch_decoder.
  gyro          encoder.patch_embed_gyro.proj     gyro_decoder.
  orientation   encoder.patch_embed_orientation.proj   ori_decoder.

Leaf layouts (ours -> official):
  Conv3d tube embed  kernel [t, h, w, c, out]  -> weight (out, c, t, h, w)
  Conv1d k=1 sensor  kernel [in, out]          -> weight (out, in, 1)
  Linear             kernel [in, out]          -> weight (out, in)    (bias unchanged)
  LayerNorm          scale, bias               -> weight, bias
  Attention          qkv/kernel [D, 3D], q_bias, v_bias -> attn.qkv.weight (3D, D) (no bias),
                     attn.q_bias, attn.v_bias  (the k bias is fixed to zero in both codes)
  mask_token [1, 1, Dd], encoder_to_decoder.weight (Dd, D) (no bias).
The sin-cos tables (encoder and decoder) are plain tensors in the official code, not state-dict
entries, and have no parameters here either. With `init_values=0` (the official default) blocks have
no gamma_1/gamma_2, and the encoder head is an Identity, so neither appears.

`to_official` emits keys in `state_dict()` order (a module's own parameters before its children's:
`mask_token` first, `attn.q_bias`/`attn.v_bias` before `attn.qkv.weight`).
Checkpoints of the official code are `{'model': state_dict, ...}`; `from_official` unwraps them.
Official VideoMAE (and VideoMAE V2) pretraining checkpoints use the same names for the video part, so a
video-only model converts with the same functions (`convert --format videomae`).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mumae_jax.models import kinds
from mumae_jax.models.modality import ModalitySpec
from mumae_jax.weights import layouts, state_dict_io

# Our modality name -> (official embedding prefix, official decoder prefix).
OFFICIAL_NAMES: dict[str, tuple[str, str]] = {
    "video": ("encoder.patch_embed.proj", "decoder"),
    "acc_phone": ("encoder.patch_embed_phone.proj", "phone_decoder"),
    "acc_watch": ("encoder.patch_embed_watch.proj", "watch_decoder"),
    "gyro": ("encoder.patch_embed_gyro.proj", "gyro_decoder"),
    "orientation": ("encoder.patch_embed_orientation.proj", "ori_decoder"),
}

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _block_leaf(rest: tuple[str, ...], prefix: str) -> tuple[str, str]:
    """('blockNN', ...) inside a Transformer -> (official key, kind)."""
    m = re.fullmatch(r"block(\d+)", rest[0])
    if not m:
        raise ValueError(f"unexpected transformer entry {'/'.join(rest)!r}")
    key = f"{prefix}.blocks.{int(m.group(1))}"
    sub = rest[1:]
    if sub in (("attn", "q_bias"), ("attn", "v_bias")):
        return f"{key}.{sub[0]}.{sub[1]}", "same"
    if len(sub) >= 2 and sub[-2] in ("norm1", "norm2") and sub[-1] in ("scale", "bias"):
        return f"{key}.{sub[0]}.{_LEAF[sub[-1]]}", "same"
    if sub[:-1] in (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc1"), ("mlp", "fc2")) and sub[-1] in _LEAF:
        return f"{key}.{'.'.join(sub[:-1])}.{_LEAF[sub[-1]]}", ("linear" if sub[-1] == "kernel" else "same")
    raise ValueError(f"no official name for transformer entry {'/'.join(rest)!r}")


def official_key(path: tuple[str, ...], specs: Sequence[ModalitySpec]) -> tuple[str, str]:
    """(official state-dict key, leaf kind) of one of our parameter paths (tuple of names)."""
    by_name = {s.name: s for s in specs}
    head = path[0]
    if path == ("mask_token",):
        return "mask_token", "same"
    if path == ("encoder_to_decoder", "kernel"):
        return "encoder_to_decoder.weight", "linear"
    if head == "encoder":
        if path[1:] in (("norm", "scale"), ("norm", "bias")):
            return f"encoder.norm.{_LEAF[path[2]]}", "same"
        return _block_leaf(path[1:], "encoder")
    for part, tag in (("embed", "embed_"), ("decoder", "decoder_")):
        if head.startswith(tag) and head[len(tag):] in by_name:
            name = head[len(tag):]
            if name not in OFFICIAL_NAMES:
                raise ValueError(f"modality {name!r} has no official counterpart; known: {sorted(OFFICIAL_NAMES)}")
            embed_prefix, dec_prefix = OFFICIAL_NAMES[name]
            if part == "embed":
                if path[1:-1] != ("proj",) or path[-1] not in ("kernel", "bias"):
                    break
                conv = kinds.of(by_name[name]).official_embed
                return f"{embed_prefix}.{_LEAF[path[-1]]}", (conv if path[-1] == "kernel" else "same")
            if path[1] == "blocks":
                return _block_leaf(path[2:], dec_prefix)
            if path[1:] in (("norm", "scale"), ("norm", "bias")):
                return f"{dec_prefix}.norm.{_LEAF[path[2]]}", "same"
            if path[1:] in (("head", "kernel"), ("head", "bias")):
                return f"{dec_prefix}.head.{_LEAF[path[2]]}", ("linear" if path[2] == "kernel" else "same")
            break
    raise ValueError(f"no official name for parameter {'/'.join(path)!r}")


def _order(key: str) -> tuple:
    """Sort key giving torch `state_dict()` order (own parameters before children, registration order)."""
    tops = ["mask_token", "encoder", "decoder", "phone_decoder", "watch_decoder", "gyro_decoder",
            "ori_decoder", "encoder_to_decoder"]
    enc = ["patch_embed", "patch_embed_phone", "patch_embed_watch", "patch_embed_gyro",
           "patch_embed_orientation", "blocks", "norm", "head"]
    blk = ["norm1", "attn", "norm2", "mlp"]
    sub = ["q_bias", "v_bias", "qkv", "proj", "fc1", "fc2"]
    leaf = ["weight", "bias"]
    parts = key.split(".")
    out = [tops.index(parts[0]) if parts[0] in tops else len(tops)]
    for p in parts[1:]:
        if p.isdigit():
            out.append(int(p))
        else:
            for table in (enc, blk, sub, leaf):
                if p in table:
                    out.append(table.index(p))
                    break
            else:
                out.append(99)
    return tuple(out)


def to_official(params: Mapping[str, Any], specs: Sequence[ModalitySpec]) -> dict[str, np.ndarray]:
    """Our `MultimodalMAE` params (optionally wrapped in {'params': ...}) -> official state dict."""
    out = layouts.export(params, lambda path: official_key(path, specs))
    return {k: out[k] for k in sorted(out, key=_order)}


def _qkv_bias_to_qv(sd: dict) -> dict:
    """Turns any fused `attn.qkv.bias` into q_bias/v_bias entries (its k third must be zero)."""
    sd = dict(sd)
    for key in [k for k in sd if k.endswith("attn.qkv.bias")]:
        b = np.asarray(sd[key], np.float32)
        d = b.shape[0] // 3
        if b.ndim != 1 or b.shape[0] != 3 * d:
            continue  # left as unexpected
        if np.any(b[d:2 * d] != 0):
            raise ValueError(f"{key} has a nonzero k bias (max |k| = {np.abs(b[d:2 * d]).max():g}); our attention "
                             "fixes the k bias to zero, so this state dict cannot be represented")
        base = key[:-len("qkv.bias")]
        if base + "q_bias" in sd or base + "v_bias" in sd:
            if np.any(b != 0):
                raise ValueError(f"{key} is nonzero and {base}q_bias/v_bias are present too: ambiguous biases")
        else:
            sd[base + "q_bias"], sd[base + "v_bias"] = b[:d], b[2 * d:]
        del sd[key]
    return sd


def from_official(state_dict: Mapping[str, Any], params_template: Mapping[str, Any],
                  specs: Sequence[ModalitySpec], skip: Iterable[str] = ()):
    """Official state dict (or checkpoint {'model': sd, ...}) -> (params shaped like the template, report).

    Strict: report = {'missing': [official keys with no source], 'unexpected': [state-dict keys not
    used], 'mismatched': [(key, official shape, expected shape)], 'skipped': [...]}. Any non-empty
    list raises ValueError unless all its keys are in `skip` (official key names); skipped entries
    keep the template value. Leaves come back as numpy arrays in the template's dtypes.
    """
    state_dict, _ = state_dict_io.unwrap_checkpoint(state_dict)
    sd = _qkv_bias_to_qv(dict(state_dict))
    return layouts.strict_import(sd, params_template, lambda path: official_key(path, specs), skip,
                                 source="official state dict")

