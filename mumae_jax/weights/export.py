"""Export a pretraining run (or a converted directory) back to PyTorch layouts.

  python -m mumae_jax.weights.export --src /tmp/pretrain_run --dst mumae.pth --format official
  python -m mumae_jax.weights.export --src /tmp/pretrain_run --dst videomae.pth --format videomae
  python -m mumae_jax.weights.export --src /tmp/pretrain_run --dst hf_folder/ --format hf

official   the official Mu-MAE `PretrainVisionTransformer` state dict, saved as {'model': sd, 'epoch': step}
           (.pth; .safetensors / .npz hold the bare state dict). Needs all five Mu-MAE modalities.
videomae   the official VideoMAE pretraining state dict of the video modality (sensor weights dropped).
hf         a `transformers` `VideoMAEForPreTraining` folder (config.json + model.safetensors) of the video
           modality, loadable with `VideoMAEForPreTraining.from_pretrained(dst)`; an encoder-only source
           gives a `VideoMAEModel` folder.
Conversion back with `python -m mumae_jax.weights.convert` gives the same parameters bit for bit.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from mumae_jax.core import cli
from mumae_jax.models import kinds
from mumae_jax.weights import state_dict_io

FORMATS = ("official", "videomae", "hf")


def _video_only(config, params):
    """(video-only pretraining config, params without the sensor modalities)."""
    config = config.copy_and_resolve_references()
    videos = [n for n in config.modalities if kinds.get(config.modality[n].kind).frames]
    if len(videos) != 1:
        raise ValueError(f"VideoMAE layouts need exactly one video modality; the model has {videos}")
    sensors = [n for n in config.modalities if n not in videos]
    config.modalities = tuple(videos)
    keep = {k: v for k, v in params.items() if not any(k in (f"embed_{s}", f"decoder_{s}") for s in sensors)}
    return config, keep


def export(src: str, dst: str, fmt: str, step: Optional[int] = None) -> dict:
    """Writes `dst` in layout `fmt` from the checkpoint `step` (default latest) of `src`; returns a summary."""
    from mumae_jax.weights import pretrained
    from mumae_jax.models import modality
    from mumae_jax.weights import hf_keys, official_keys

    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt!r}; expected one of {FORMATS}")
    config, params, step = pretrained.load_params(src, step)
    params = jax.tree.map(np.asarray, jax.device_get(params))
    if fmt in ("videomae", "hf"):
        config, params = _video_only(config, params)
    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    encoder_only = not any(k.startswith("decoder_") for k in params)
    notes = []
    if fmt == "hf":
        sd = hf_keys.to_hf(params, encoder_only=encoder_only, prefix="" if encoder_only else "videomae.")
        os.makedirs(dst, exist_ok=True)
        try:
            hf_cfg = hf_keys.hf_config(config)
        except ValueError as e:  # e.g. decoder norm eps 1e-6 vs transformers' fixed 1e-5: export anyway, say so
            hf_cfg, notes = hf_keys.hf_config(config, strict=False), [str(e).split(" (pass strict")[0]]
        # without a final encoder norm (fine-tuned / mean-pooling sources) the HF model must not add one
        hf_cfg.update(use_mean_pooling="norm" not in params["encoder"], model_type="videomae",
                      architectures=["VideoMAEModel" if encoder_only else "VideoMAEForPreTraining"])
        with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf_cfg, f, indent=2)
        state_dict_io.save_state_dict(hf_keys.to_disk_names(sd), os.path.join(dst, "model.safetensors"))
    else:
        if fmt == "official" and len(specs) != 5:
            raise ValueError(f"--format official needs the five Mu-MAE modalities; the model has "
                             f"{[s.name for s in specs]} (use --format videomae for video only)")
        sd = official_keys.to_official(params, specs)
        state_dict_io.save_state_dict(sd, dst, wrap_model=True, metadata={"epoch": int(step)})
    return {"src": src, "dst": dst, "format": fmt, "step": int(step), "tensors": len(sd),
            "encoder_only": encoder_only, "notes": notes}


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.weights.export", __doc__)
    p.add_argument("--src", required=True, help="pretraining workdir or converted directory")
    p.add_argument("--dst", required=True, help=".pth/.safetensors/.npz file, or a folder for --format hf")
    p.add_argument("--format", default="official", choices=FORMATS, help="checkpoint layout to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_run, parser().parse_args(argv))


def _run(a) -> int:
    out = export(a.src, a.dst, a.format, a.step)
    print(f"{out['src']} (step {out['step']}) -> {out['dst']} ({out['format']}, {out['tensors']} tensors"
          f"{', encoder only' if out['encoder_only'] else ''})")
    for note in out["notes"]:
        print(f"note: the exported model will differ slightly: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
