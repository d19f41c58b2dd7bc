"""Parameter conversion between a video-only `MultimodalMAE` and Hugging Face `transformers` VideoMAE.

Targets: `VideoMAEForPreTraining` (prefix 'videomae.', with the decoder) and `VideoMAEModel` (no prefix,
embeddings + encoder + final layernorm only). Only key names, shapes and the forward pass of
transformers' modeling_videomae.py are relied on. Key names (ours -> Hugging Face, P = prefix):

  ours                                        Hugging Face
  mask_token [1, 1, Dd]                       mask_token
  embed_video/proj/{kernel,bias}              P embeddings.patch_embeddings.projection.{weight,bias}   (Conv3d)
  encoder/blockNN/...                         P encoder.layer.N....           (layer sub-keys below)
  encoder/norm/{scale,bias}                   P layernorm.{weight,bias}  (only when use_mean_pooling=False)
  encoder_to_decoder/kernel                   encoder_to_decoder.weight  (no bias)
  decoder_video/blocks/blockNN/...            decoder.decoder_layers.N....
  decoder_video/norm/{scale,bias}             decoder.norm.{weight,bias}
  decoder_video/head/{kernel,bias}            decoder.head.{weight,bias}

  inside a block                              inside a layer
  norm1/{scale,bias}                          layernorm_before.{weight,bias}
  attn/qkv/kernel [D, 3D] (q | k | v cols)    attention.attention.{query,key,value}.weight  (3 x (D, D))
  attn/q_bias, attn/v_bias                    attention.attention.query.bias, .value.bias
  (k bias fixed to zero)                      (key has no bias)
  attn/proj/{kernel,bias}                     attention.output.dense.{weight,bias}
  norm2/{scale,bias}                          layernorm_after.{weight,bias}
  mlp/fc1/{kernel,bias}                       intermediate.dense.{weight,bias}
  mlp/fc2/{kernel,bias}                       output.dense.{weight,bias}

Leaf layouts are those of `layouts` (Linear weight = kernel.T, Conv3d weight (out, c, t, h, w)). The
fused qkv kernel is split into three (D, D) Linear weights on export and fused again on import (done
on an "expanded" parameter tree where attn/qkv/kernel is replaced by attn/{query,key,value}/kernel, so
the strict engine sees one tensor per Hugging Face key). The sin-cos tables are not state-dict entries
on either side. Numerics: encoder and decoder-block LayerNorms use the HF `layer_norm_eps` (our
`layer_norm_eps`); HF's `decoder.norm` uses torch's default 1e-5 (our `decoder_norm_eps`). Hidden act
'gelu' in transformers is the exact (erf) GELU, as ours.

`from_hf` specials (listed in the report):
  * qv_bias=False checkpoints (pass `qv_bias=False`, from the HF config) have no query.bias /
    value.bias: they are rebuilt as zeros (report['rebuilt']); with qv_bias=True a missing one is an error.
  * a `...key.bias` entry (not produced by transformers) is dropped if all zero (report['ignored']),
    and is an error naming it otherwise (our k bias is fixed to zero).
  * a missing `videomae.layernorm.*` gets a hint: use_mean_pooling=True models have no final
    encoder norm (theirs is `fc_norm` after mean pooling in the classifier), ours always applies one.

`to_hf` emits keys in torch `state_dict()` order (checked against real models in the tests).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np
from flax import traverse_util

from mumae_jax.weights import layouts

VIDEO = "video"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HF_DECODER_NORM_EPS = 1e-5  # torch nn.LayerNorm default, used by VideoMAEDecoder.norm
QKV = ("query", "key", "value")

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_NORMS = {"norm1": "layernorm_before", "norm2": "layernorm_after"}
_LINEARS = {("attn", "proj"): "attention.output.dense", ("mlp", "fc1"): "intermediate.dense",
            ("mlp", "fc2"): "output.dense"}


def _block_leaf(sub: tuple[str, ...], base: str, full: tuple[str, ...]) -> tuple[str, str]:
    """Path inside one of our Blocks -> (HF key under `base`, kind)."""
    if sub == ("attn", "q_bias"):
        return f"{base}.attention.attention.query.bias", "same"
    if sub == ("attn", "v_bias"):
        return f"{base}.attention.attention.value.bias", "same"
    if sub == ("attn", "qkv", "kernel"):  # the fused kernel: three HF tensors (see module docstring)
        return f"{base}.attention.attention.{{query,key,value}}.weight", "qkv"
    if len(sub) == 3 and sub[0] == "attn" and sub[1] in QKV and sub[2] == "kernel":  # expanded tree
        return f"{base}.attention.attention.{sub[1]}.weight", "linear"
    if len(sub) == 2 and sub[0] in _NORMS and sub[1] in ("scale", "bias"):
        return f"{base}.{_NORMS[sub[0]]}.{_LEAF[sub[1]]}", "same"
    if len(sub) == 3 and sub[:2] in _LINEARS and sub[2] in ("kernel", "bias"):
        return f"{base}.{_LINEARS[sub[:2]]}.{_LEAF[sub[2]]}", ("linear" if sub[2] == "kernel" else "same")
    raise ValueError(f"no Hugging Face VideoMAE name for parameter {'/'.join(full)!r}")


def _block_index(name: str, full: tuple[str, ...]) -> int:
    m = re.fullmatch(r"block(\d+)", name)
    if not m:
        raise ValueError(f"no Hugging Face VideoMAE name for parameter {'/'.join(full)!r}")
    return int(m.group(1))


def hf_key(path: tuple[str, ...], prefix: str = "videomae.") -> tuple[str, str]:
    """(Hugging Face state-dict key, leaf kind) of one of our parameter paths (tuple of names).

    `prefix` is what precedes the VideoMAEModel part ('videomae.' in VideoMAEForPreTraining, '' in
    VideoMAEModel); mask_token / encoder_to_decoder / decoder keys never carry it. The fused
    attn/qkv/kernel returns the pattern '...attention.attention.{query,key,value}.weight' with kind
    'qkv' (three tensors); the expanded paths attn/{query,key,value}/kernel return real keys.
    Only the video modality exists in VideoMAE: other modalities raise ValueError.
    """
    path = tuple(path)
    if path == ("mask_token",):
        return "mask_token", "same"
    if path == ("encoder_to_decoder", "kernel"):
        return "encoder_to_decoder.weight", "linear"
    head = path[0]
    if head == f"embed_{VIDEO}" and len(path) == 3 and path[1] == "proj" and path[2] in ("kernel", "bias"):
        return (f"{prefix}embeddings.patch_embeddings.projection.{_LEAF[path[2]]}",
                "conv3d" if path[2] == "kernel" else "same")
    if head == "encoder" and len(path) >= 2:
        if path[1:] in (("norm", "scale"), ("norm", "bias")):
            return f"{prefix}layernorm.{_LEAF[path[2]]}", "same"
        i = _block_index(path[1], path)
        return _block_leaf(path[2:], f"{prefix}encoder.layer.{i}", path)
    if head == f"decoder_{VIDEO}" and len(path) >= 3:
        if path[1] == "blocks" and len(path) >= 4:
            i = _block_index(path[2], path)
            return _block_leaf(path[3:], f"decoder.decoder_layers.{i}", path)
        if path[1:] in (("norm", "scale"), ("norm", "bias"), ("head", "bias")):
            return f"decoder.{path[1]}.{_LEAF[path[2]]}", "same"
        if path[1:] == ("head", "kernel"):
            return "decoder.head.weight", "linear"
    if head.startswith(("embed_", "decoder_")):
        raise ValueError(f"parameter {'/'.join(path)!r}: Hugging Face VideoMAE has only the '{VIDEO}' "
                         "modality (convert a video-only model, config modalities=('video',))")
    raise ValueError(f"no Hugging Face VideoMAE name for parameter {'/'.join(path)!r}")


# ---- expanded trees (fused qkv kernel <-> three kernels) ----------------------------------------

def _is_qkv(path: tuple[str, ...]) -> bool:
    return len(path) >= 3 and path[-3:] == ("attn", "qkv", "kernel")


def _expand(flat: Mapping[tuple, Any]) -> dict[tuple, Any]:
    """Flat params -> flat params with every attn/qkv/kernel [D, 3D] split into attn/{query,key,value}/kernel."""
    out = {}
    for path, leaf in flat.items():
        if _is_qkv(path):
            x = np.asarray(leaf)
            d = x.shape[1] // 3
            if x.ndim != 2 or x.shape[1] != 3 * d:
                raise ValueError(f"{'/'.join(path)} has shape {x.shape}, expected [D, 3D]")
            for j, name in enumerate(QKV):
                out[path[:-2] + (name, "kernel")] = x[:, j * d:(j + 1) * d]
        else:
            out[path] = leaf
    return out


def _fuse(flat: Mapping[tuple, Any], template_flat: Mapping[tuple, Any]) -> dict[tuple, Any]:
    """Inverse of `_expand`, back in the template's key order."""
    out = {}
    for path in template_flat:
        if _is_qkv(path):
            out[path] = np.concatenate([np.asarray(flat[path[:-2] + (n, "kernel")]) for n in QKV], axis=1)
        else:
            out[path] = flat[path]
    return out


_ORDER = ["mask_token", "videomae", "embeddings", "patch_embeddings", "projection", "encoder", "layer",
          "decoder_layers", "attention", "query", "key", "value", "intermediate", "output", "dense",
          "layernorm_before", "layernorm_after", "layernorm", "encoder_to_decoder", "decoder", "norm",
          "head", "weight", "bias"]


def _order(key: str) -> tuple:
    """Sort key giving torch `state_dict()` order (only siblings are ever compared, see _ORDER)."""
    return tuple(int(p) if p.isdigit() else (_ORDER.index(p) if p in _ORDER else 99) for p in key.split("."))


# ---- public API ---------------------------------------------------------------------------------

def to_hf(params: Mapping[str, Any], *, encoder_only: bool = False, prefix: str | None = None
          ) -> dict[str, np.ndarray]:
    """Our video-only `MultimodalMAE` params (optionally wrapped in {'params': ...}) -> HF state dict.

    encoder_only=False: VideoMAEForPreTraining (default prefix 'videomae.'); encoder_only=True:
    VideoMAEModel (embed_video + encoder only, default prefix ''). float32 numpy arrays, keys in
    torch `state_dict()` order.
    """
    if prefix is None:
        prefix = "" if encoder_only else "videomae."
    params, _ = layouts.unwrap_params(params)
    if encoder_only:
        params = {k: v for k, v in params.items() if k in (f"embed_{VIDEO}", "encoder")}
    if not params:
        raise ValueError("no parameters to export")
    expanded = traverse_util.unflatten_dict(_expand(traverse_util.flatten_dict(dict(params))))
    out = layouts.export(expanded, lambda path: hf_key(path, prefix))
    return {k: out[k] for k in sorted(out, key=_order)}


def detect_prefix(state_dict: Mapping[str, Any]) -> str:
    """'videomae.' for VideoMAEForPreTraining / ForVideoClassification state dicts, '' for VideoMAEModel."""
    return "videomae." if any(k.startswith("videomae.") for k in state_dict) else ""


# Files written by `save_pretrained` (and every Hub checkpoint) name the q/v biases `attention.attention.
# q_bias` / `v_bias`; transformers renames them to `query.bias` / `value.bias` when it loads them (its
# conversion_mapping), so `model.state_dict()` uses the latter.
_DISK_NAMES = (("attention.attention.q_bias", "attention.attention.query.bias"),
               ("attention.attention.v_bias", "attention.attention.value.bias"))


def _rename_suffixes(state_dict: Mapping[str, Any], pairs) -> dict:
    """Keys ending in `old` end in `new` instead, for each (old, new) pair; two keys meeting is an error."""
    out = {}
    for k, v in state_dict.items():
        for old, new in pairs:
            if k.endswith(old):
                k = k[:-len(old)] + new
        if k in out:
            raise ValueError(f"state dict names the same tensor twice ({k!r} in both spellings)")
        out[k] = v
    return out


def to_disk_names(state_dict: Mapping[str, Any]) -> dict:
    """`model.state_dict()` names -> the names `save_pretrained` writes (q_bias / v_bias)."""
    return _rename_suffixes(state_dict, [(memory, disk) for disk, memory in _DISK_NAMES])


def from_disk_names(state_dict: Mapping[str, Any]) -> dict:
    """The names in a saved file (q_bias / v_bias) -> `model.state_dict()` names; others unchanged."""
    return _rename_suffixes(state_dict, _DISK_NAMES)


def _attention_biases(sd: dict, report: dict, qv_bias: bool) -> dict:
    """Handles qv_bias=False (no query/value biases -> zeros) and stray key biases."""
    for key in [k for k in sd if k.endswith("attention.attention.key.bias")]:
        b = np.asarray(sd[key])
        if np.any(b != 0):
            raise ValueError(f"{key} is nonzero (max |b| = {np.abs(b).max():g}); our attention fixes the k "
                             "bias to zero, so this state dict cannot be represented")
        report["ignored"].append(key)
        del sd[key]
    if qv_bias:  # the model has q/v biases: any missing one is a strict error
        return sd
    if any(k.endswith(("attention.attention.query.bias", "attention.attention.value.bias")) for k in sd):
        raise ValueError("qv_bias=False but the state dict has query/value biases")
    for key in [k for k in sd if k.endswith(("attention.attention.query.weight",
                                             "attention.attention.value.weight"))]:
        bias_key = key[:-len("weight")] + "bias"
        sd[bias_key] = np.zeros((np.shape(sd[key])[0],), np.float32)
        report["rebuilt"].append(f"{bias_key} (zeros: qv_bias=False checkpoint)")
    return sd


def from_hf(state_dict: Mapping[str, Any], params_template: Mapping[str, Any], skip: Iterable[str] = (),
            qv_bias: bool = True):
    """HF VideoMAE state dict -> (params shaped like the template, report).

    The template is a full video-only `MultimodalMAE` params tree or an encoder-only subset
    ({'embed_video', 'encoder'}); optionally wrapped in {'params': ...}. The 'videomae.' prefix is
    detected. Strict like `layouts.strict_import`: missing / unexpected / shape-mismatched keys raise
    ValueError naming them unless in `skip` (HF key names; a skipped query/key/value weight keeps the
    template's third of the qkv kernel). report = {'missing', 'unexpected', 'mismatched', 'skipped',
    'loaded', 'rebuilt', 'ignored', 'prefix'}. Values may be numpy arrays or CPU torch tensors. Files
    written by `save_pretrained` (q_bias / v_bias names) are accepted as well.
    """
    skip = set(skip)
    state_dict = from_disk_names(state_dict)
    prefix = detect_prefix(state_dict)
    extra = {"rebuilt": [], "ignored": [], "prefix": prefix}
    sd = {k: (v if isinstance(v, np.ndarray) else _numpy(v)) for k, v in state_dict.items()}
    sd = _attention_biases(sd, extra, qv_bias)
    template, wrapped = layouts.unwrap_params(params_template)
    tflat = traverse_util.flatten_dict(dict(template))
    expanded = traverse_util.unflatten_dict(_expand(tflat))
    try:
        new, report = layouts.strict_import(sd, expanded, lambda path: hf_key(path, prefix), skip,
                                            source="Hugging Face VideoMAE state dict")
    except ValueError as e:
        norm_key = f"{prefix}layernorm.weight"
        if ("encoder", "norm", "scale") in tflat and norm_key not in sd and norm_key not in skip:
            hint = (f"\n  hint: {norm_key} is absent: the Hugging Face model was probably built with "
                    "use_mean_pooling=True, which has no final encoder LayerNorm (its classifier mean-pools "
                    "then applies fc_norm); our encoder always ends with encoder/norm. Convert a "
                    "use_mean_pooling=False model, or skip the encoder norm keys on purpose.")
            raise ValueError(str(e) + hint) from e
        raise
    report.update(extra)
    params = traverse_util.unflatten_dict(_fuse(traverse_util.flatten_dict(new), tflat))
    return ({"params": params} if wrapped else params), report


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu()
        if v.dtype.is_floating_point and v.element_size() < 4:
            v = v.float()
        return v.numpy()
    return np.asarray(v)


# ---- configs -------------------------------------------------------------------------------------

def hf_config(pretrain_config, strict: bool = True) -> dict:
    """kwargs for `transformers.VideoMAEConfig` equal to a video-only pretraining config.

    use_mean_pooling=False (our encoder has a final norm), qv_bias=True, hidden_act='gelu'.
    strict=True also refuses settings under which the HF model would compute something else than ours:
    decoder_norm_eps != 1e-5 (HF's decoder.norm is fixed at 1e-5) and, for 3 channels, an input
    normalisation other than ImageNet's (HF un-normalises loss targets with it). strict=False skips
    these (fine for encoder features).
    """
    from mumae_jax.models import mae, variants

    mods = tuple(pretrain_config.modalities)
    if mods != (VIDEO,):
        raise ValueError(f"Hugging Face VideoMAE is video-only; config.modalities={mods} (use modalities=video)")
    v = pretrain_config.modality[VIDEO]
    sizes = variants.resolve(pretrain_config.model)
    eps = mae.layer_norm_eps(pretrain_config.model)
    pt, ph, pw = (int(x) for x in v["tubelet"])
    if ph != pw:
        raise ValueError(f"tubelet {v['tubelet']}: Hugging Face VideoMAE needs square patches")
    channels = int(v.get("channels", 3))
    if strict:
        if abs(eps["decoder_norm_eps"] - HF_DECODER_NORM_EPS) > 1e-12:
            raise ValueError(f"decoder_norm_eps={eps['decoder_norm_eps']:g}: Hugging Face's decoder.norm uses "
                             f"a fixed {HF_DECODER_NORM_EPS:g} (pass strict=False to export anyway)")
        mean = tuple(float(x) for x in v.get("input_mean", ()))
        std = tuple(float(x) for x in v.get("input_std", ()))
        want = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((), ())
        same = all(len(a) == len(b) and np.allclose(a, b) for a, b in zip((mean, std), want))
        if not same:
            raise ValueError(f"input_mean/std {mean}/{std}: Hugging Face's pretraining loss assumes "
                             f"{want[0]}/{want[1]} (pass strict=False to export anyway)")
    return dict(image_size=int(v["image_size"]), patch_size=ph, num_channels=channels,
                num_frames=int(v["num_frames"]), tubelet_size=pt, hidden_size=sizes["width"],
                num_hidden_layers=sizes["depth"], num_attention_heads=sizes["num_heads"],
                intermediate_size=sizes["mlp_dim"], hidden_act="gelu", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, layer_norm_eps=eps["layer_norm_eps"], qv_bias=True,
                use_mean_pooling=False, decoder_num_attention_heads=sizes["decoder_heads"],
                decoder_hidden_size=sizes["decoder_width"], decoder_num_hidden_layers=sizes["decoder_depth"],
                decoder_intermediate_size=sizes["decoder_mlp_dim"],
                norm_pix_loss=bool(v.get("normalize_target", True)))


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"Hugging Face {name}={value}: only square sizes can be represented")
        value = value[0]
    return int(value)


def pretrain_overrides(hf: Mapping[str, Any], encoder_only: bool = False) -> dict:
    """Nested dict of pretraining-config fields reproducing a Hugging Face VideoMAE config (`to_dict()`).

    Apply with `apply_overrides(config, ...)` on `configs/pretrain.py:modalities=video`. Raises ValueError
    for settings we cannot represent: hidden_act other than 'gelu', dropout, use_mean_pooling=True
    (no final encoder norm), non-square images/patches. qv_bias=False is representable (zero q/v
    biases; `from_hf` rebuilds them). `encoder_only=True` (a `VideoMAEModel` state dict) accepts
    use_mean_pooling=True: the encoder is then converted without its final norm.
    """
    get = lambda k, d=None: hf.get(k, d)  # noqa: E731
    problems = []
    if get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act={get('hidden_act')!r} (ours is the exact GELU, 'gelu')")
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if float(get(k, 0.0) or 0.0) != 0.0:
            problems.append(f"{k}={get(k)} (our model has no dropout)")
    if get("use_mean_pooling", True) and not encoder_only:
        problems.append("use_mean_pooling=True (such models have no final encoder LayerNorm; ours always "
                        "has one)")
    if problems:
        raise ValueError("Hugging Face VideoMAE config cannot be represented: " + "; ".join(problems))
    image, patch = _square(get("image_size", 224), "image_size"), _square(get("patch_size", 16), "patch_size")
    channels, tubelet = int(get("num_channels", 3)), int(get("tubelet_size", 2))
    return {
        "modalities": (VIDEO,),
        "model": dict(width=int(get("hidden_size", 768)), depth=int(get("num_hidden_layers", 12)),
                      num_heads=int(get("num_attention_heads", 12)), mlp_dim=int(get("intermediate_size", 3072)),
                      decoder_width=int(get("decoder_hidden_size", 384)),
                      decoder_depth=int(get("decoder_num_hidden_layers", 4)),
                      decoder_heads=int(get("decoder_num_attention_heads", 6)),
                      decoder_mlp_dim=int(get("decoder_intermediate_size", 1536)),
                      layer_norm_eps=float(get("layer_norm_eps", 1e-12)), decoder_norm_eps=HF_DECODER_NORM_EPS),
        "modality": {VIDEO: dict(num_frames=int(get("num_frames", 16)), image_size=image, channels=channels,
                                 tubelet=(tubelet, patch, patch), normalize_target=bool(get("norm_pix_loss", True)),
                                 # HF un-normalises loss targets with ImageNet statistics only for 3 channels
                                 input_mean=IMAGENET_MEAN if channels == 3 else (),
                                 input_std=IMAGENET_STD if channels == 3 else ())},
    }


def apply_overrides(config, overrides: Mapping[str, Any]):
    """Sets the (nested) `overrides` on an ml_collections config in place, field by field; returns it."""
    for k, v in overrides.items():
        if isinstance(v, Mapping):
            apply_overrides(config[k], v)
        else:
            config[k] = v
    return config
