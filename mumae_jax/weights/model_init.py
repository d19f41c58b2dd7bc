"""Converted checkpoints and `config.model_init`: starting a run from parameters made elsewhere.

A converted directory (written by `python -m mumae_jax.weights.convert`) looks like a pretraining workdir:
  config.json              a pretraining config whose model/modality fields describe the weights
  checkpoints/<step>/      orbax checkpoint {'state': {'params': tree}, 'meta': {...}} (no optimizer state;
                           encoder-only sources hold only embed_* and encoder/*)
  conversion_report.json   source file, format and the strict key report
`pretrained.load_params` reads both kinds, so the one-shot stage, the frozen evaluators and
`config.model_init` accept either. Position tables are fixed sin-cos constants, not parameters: they
are rebuilt from the config of the run that loads the weights, so frame count and image size may differ.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
from etils import epath
from flax import traverse_util

from mumae_jax.core import checkpointing

REPORT = "conversion_report.json"


def is_converted(path: str) -> bool:
    return (epath.Path(path) / REPORT).is_file()


def check_free(dst: str) -> None:
    """FileExistsError when `dst` already holds checkpoints (the converter checks before reading anything)."""
    ckpt_dir = os.path.join(dst, "checkpoints")
    if os.path.exists(ckpt_dir) and os.listdir(ckpt_dir):
        raise FileExistsError(f"{dst} already holds checkpoints; choose an empty --dst")


def save_converted(dst: str, pretrain_config, params: Mapping[str, Any], report: Mapping[str, Any],
                   step: int = 0) -> str:
    """Writes a converted directory (see module docstring); refuses to overwrite one."""
    check_free(dst)
    ckpt_dir = os.path.join(dst, "checkpoints")
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
        f.write(pretrain_config.to_json_best_effort(indent=2))
    ckpt = checkpointing.Checkpointer(ckpt_dir, keep=1)
    try:
        ckpt.save(step, {"params": params}, {"kind": "converted", "source": report.get("source", "")})
        ckpt.wait()
    finally:
        ckpt.close()
    with open(os.path.join(dst, REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    return dst


def check_architecture(source_config, config, source_params: Mapping[str, Any]) -> None:
    """Raises if settings that parameter shapes cannot reveal differ: head counts and LayerNorm eps.

    (Decoder heads only matter when the source has decoders.)
    """
    from mumae_jax.models import mae, variants

    src, dst = variants.resolve(source_config.model), variants.resolve(config.model)
    src.update(mae.layer_norm_eps(source_config.model))
    dst.update(mae.layer_norm_eps(config.model))
    fields = ["num_heads", "layer_norm_eps"]
    if any(k.startswith("decoder_") for k in source_params):
        fields += ["decoder_heads", "decoder_norm_eps"]
    diff = [f"config.model.{f}: model_init has {src[f]!r}, this run {dst[f]!r}" for f in fields if src[f] != dst[f]]
    if diff:
        raise ValueError("config.model_init was built with other settings that its parameter shapes do not show "
                         "(set them as in the source's config.json):\n  " + "\n  ".join(diff))


def apply(template: Mapping[str, Any], source: Mapping[str, Any], fresh: Iterable[str] = ()):
    """Copies `source` params into `template` strictly -> (params, report).

    Every template leaf must exist in `source` with the same shape; a path starting with one of the
    `fresh` prefixes (e.g. 'decoder_', 'mask_token') may be absent and keeps its fresh value. Source leaves
    the model does not have are listed as 'ignored' (e.g. sensor weights when only video is trained).
    """
    fresh = tuple(fresh)
    dst = traverse_util.flatten_dict(dict(template), sep="/")
    src = traverse_util.flatten_dict(dict(source), sep="/")
    out, loaded, kept, missing, problems = {}, [], [], {}, []
    for k, v in dst.items():
        if k not in src:
            if any(k.startswith(p) for p in fresh):
                out[k] = v
                kept.append(k)
            else:
                missing.setdefault(k.split("/")[0], []).append(k)
        elif np.shape(src[k]) != np.shape(v):
            problems.append(f"{k}: model_init shape {np.shape(src[k])} != model shape {np.shape(v)}")
        else:
            out[k] = np.asarray(src[k], np.asarray(v).dtype)
            loaded.append(k)
    for top, keys in sorted(missing.items()):
        problems.append(f"{top}: {len(keys)} parameter(s) missing from the model_init parameters "
                        f"({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if problems:
        hint = (f"\n(to keep them freshly initialised on purpose, set config.model_init_fresh={tuple(sorted(missing))})"
                if missing else "")
        raise ValueError("config.model_init does not fit the model:\n  " + "\n  ".join(problems) + hint)
    report = {"loaded": sorted(loaded), "kept_init": sorted(kept), "ignored": sorted(set(src) - set(dst))}
    return traverse_util.unflatten_dict(out, sep="/"), report
