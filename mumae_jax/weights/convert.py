"""Import PyTorch checkpoints into a directory that `config.model_init` (and the one-shot stage) accepts.

  python -m mumae_jax.weights.convert --src checkpoint-799.pth --dst /tmp/mumae_official [--format official]
  python -m mumae_jax.weights.convert --src videomae_pretrain.pth --dst /tmp/videomae --format videomae
  python -m mumae_jax.weights.convert --src hf_videomae_folder/ --dst /tmp/hf --format hf

Formats (default `auto`: guessed from the keys; see weights/official_keys.py and weights/hf_keys.py):
  official   official Mu-MAE pretraining (`PretrainVisionTransformer`: video + 4 sensors).
  videomae   official VideoMAE / VideoMAE V2 pretraining (video only, same key names as `official`), or a
             VideoMAE fine-tuning checkpoint (`patch_embed.*`, `blocks.*`, `fc_norm`/`head`): encoder only.
  hf         transformers `VideoMAEForPreTraining` or `VideoMAEModel` (encoder only); sizes come from the
             folder's config.json (or --hf_config).
The file is read safely (weights/state_dict_io.py). Every key must be used and every parameter found with
its shape; otherwise the command fails naming the keys (`--skip k1,k2` leaves named keys out on purpose).
Sizes are read off the weights; head counts are not in the weights: by default they are those of the
ViT-Ti/S/B preset of that width (override with --num_heads / --decoder_heads). The frame count, image
size and sensor length are not in the weights either (sin-cos tables are rebuilt): --num_frames,
--image_size, --sensor_length set the saved config's defaults (an official training checkpoint's `args`
gives frame count and image size when the flags do not); a run may use others. The saved `model.variant`
names the preset nearest in width; every size is explicit beside it.
<dst> must not hold checkpoints yet (checked first). Writes <dst>/config.json, <dst>/checkpoints/<step>/
(orbax) and <dst>/conversion_report.json.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mumae_jax.core import cli
from mumae_jax.weights import layouts, state_dict_io

FORMATS = ("auto", "official", "videomae", "hf")
SENSOR_KEYS = {"acc_phone": "encoder.patch_embed_phone.proj.weight",
               "acc_watch": "encoder.patch_embed_watch.proj.weight",
               "gyro": "encoder.patch_embed_gyro.proj.weight",
               "orientation": "encoder.patch_embed_orientation.proj.weight"}


def guess_format(sd: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """'official' | 'videomae' | 'hf' from the key names."""
    if "hf_config" in info or any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in sd):
        return "hf"
    if any(k in sd for k in SENSOR_KEYS.values()):
        return "official"
    if "encoder.patch_embed.proj.weight" in sd or "patch_embed.proj.weight" in sd:
        return "videomae"
    raise ValueError("cannot tell the checkpoint's format from its keys (first keys: "
                     f"{list(sd)[:5]}); pass --format official|videomae|hf")


def _count(sd, pattern: str) -> int:
    return len({m.group(1) for k in sd for m in [re.match(pattern, k)] if m})


def _heads(width: int, given: int, what: str) -> int:
    from mumae_jax.models import variants

    if given:
        return given
    for w, _, h, _, dw, dh in variants.VARIANTS.values():
        if what == "encoder" and w == width:
            return h
        if what == "decoder" and dw == width:
            return dh
    flag = "num_heads" if what == "encoder" else "decoder_heads"
    raise ValueError(f"the {what} width {width} matches no ViT preset; pass --{flag}")


def official_pretrain_config(sd: Mapping[str, Any], a, encoder_only: bool, info: Mapping[str, Any] = None):
    """A pretraining config describing an official Mu-MAE / VideoMAE state dict (sizes from the weights; the
    clip geometry from the flags, else from the checkpoint's training `args`, else the defaults)."""
    from mumae_jax.configs import pretrain
    from mumae_jax.models import variants

    need = ["encoder.patch_embed.proj.weight", "encoder.blocks.0.mlp.fc1.weight"]
    if not encoder_only:
        need += ["encoder_to_decoder.weight", "decoder.blocks.0.mlp.fc1.weight"]
    absent = [k for k in need if k not in sd]
    if absent:
        raise ValueError(f"not an official Mu-MAE / VideoMAE state dict: no {', '.join(absent)} (first keys: "
                         f"{list(sd)[:4]}); is --format right?")

    sensors = [n for n, k in SENSOR_KEYS.items() if k in sd]
    if sensors and len(sensors) != len(SENSOR_KEYS):
        raise ValueError(f"the checkpoint has sensor embeddings for {sensors} only; Mu-MAE has all four")
    c = pretrain.get_config("modalities=all" if sensors else "modalities=video")
    w = np.shape(sd["encoder.patch_embed.proj.weight"])  # (D, C, t, h, w)
    width = int(w[0])
    sizes = dict(width=width, depth=_count(sd, r"encoder\.blocks\.(\d+)\."),
                 num_heads=_heads(width, a.num_heads, "encoder"),
                 mlp_dim=int(np.shape(sd["encoder.blocks.0.mlp.fc1.weight"])[0]))
    if not encoder_only:
        dec_width = int(np.shape(sd["encoder_to_decoder.weight"])[0])
        sizes.update(decoder_width=dec_width, decoder_depth=_count(sd, r"decoder\.blocks\.(\d+)\."),
                     decoder_heads=_heads(dec_width, a.decoder_heads, "decoder"),
                     decoder_mlp_dim=int(np.shape(sd["decoder.blocks.0.mlp.fc1.weight"])[0]))
    c.model.update(sizes, variant=variants.nearest(width))  # every size is explicit; the variant only names it
    c.modality.video.update(channels=int(w[1]), tubelet=tuple(int(v) for v in w[2:]))
    _geometry(c, a, info or {})
    for name in sensors:
        token_dim = int(np.shape(sd[SENSOR_KEYS[name]])[1])
        s = c.modality[name]
        if token_dim != (s.length // s.num_tokens) * s.channels:
            raise ValueError(f"{SENSOR_KEYS[name]} takes {token_dim} values per token, but --sensor_length "
                             f"{s.length} in {s.num_tokens} tokens of {s.channels} axes gives "
                             f"{(s.length // s.num_tokens) * s.channels}")
    return c


def _geometry(c, a, info: Mapping[str, Any]):
    """Frame count and image size: the flags, else the source's training `args` (official checkpoints)."""
    args = info.get("args", {})
    if a.num_frames or args.get("num_frames"):
        c.modality.video.num_frames = a.num_frames or args["num_frames"]
    if a.image_size or args.get("input_size"):
        c.modality.video.image_size = a.image_size or args["input_size"]
    for name in SENSOR_KEYS:
        if name in c.modality and a.sensor_length:
            c.modality[name].length = a.sensor_length


def _template(config, encoder_only: bool, seed: int = 0):
    """Freshly initialised params of the model `config` describes (numpy), optionally encoder-only."""
    import jax

    from mumae_jax.steps import pretraining_step
    from mumae_jax.models import mae

    model = mae.from_config(config)
    inputs, masks = pretraining_step.dummy_inputs(model.specs)
    params = jax.device_get(jax.jit(model.init)({"params": jax.random.key(seed)}, inputs, masks)["params"])
    if encoder_only:
        params = {k: v for k, v in params.items() if k.startswith("embed_") or k == "encoder"}
    return model, params


def _finetune_to_pretrain_keys(sd: Mapping[str, Any]) -> dict:
    """VideoMAE fine-tuning keys (patch_embed., blocks., norm.) -> pretraining encoder keys."""
    out = {}
    for k, v in sd.items():
        out["encoder." + k if re.match(r"(patch_embed|blocks|norm)\.", k) else k] = v
    return out


def convert(src: str, dst: str, fmt: str = "auto", skip: Sequence[str] = (), args=None) -> dict:
    """Reads `src`, converts it strictly and writes the converted directory `dst`; returns the report."""
    from mumae_jax.weights import model_init
    from mumae_jax.weights import hf_keys, official_keys

    a = args or parser().parse_args(["--src", src, "--dst", dst])
    model_init.check_free(dst)  # before minutes of reading and converting
    sd, info = state_dict_io.load_state_dict(src)
    fmt = guess_format(sd, info) if fmt == "auto" else fmt
    if fmt not in FORMATS[1:]:
        raise ValueError(f"--format={fmt!r}; expected one of {FORMATS}")
    if fmt == "hf":
        hf_cfg = info.get("hf_config")
        if a.hf_config:
            import json

            with open(a.hf_config, encoding="utf-8") as f:
                hf_cfg = json.load(f)
        if hf_cfg is None:
            raise ValueError(f"{src}: a Hugging Face state dict needs its config.json: pass the save_pretrained "
                             "folder or --hf_config")
        from mumae_jax.configs import pretrain

        encoder_only = not any(k.startswith("decoder.") for k in sd)
        config = pretrain.get_config("modalities=video")
        hf_keys.apply_overrides(config, hf_keys.pretrain_overrides(hf_cfg, encoder_only))
        _geometry(config, a, info)
        _, template = _template(config, encoder_only)
        if encoder_only and hf_cfg.get("use_mean_pooling", True):  # such a model has no final encoder norm
            template["encoder"] = {k: v for k, v in template["encoder"].items() if k != "norm"}
        params, report = hf_keys.from_hf(sd, template, skip=skip, qv_bias=bool(hf_cfg.get("qv_bias", True)))
    else:
        finetune = fmt == "videomae" and "patch_embed.proj.weight" in sd
        if finetune:
            sd = _finetune_to_pretrain_keys(sd)
        elif fmt == "official" and not any(k in sd for k in SENSOR_KEYS.values()):
            raise ValueError(f"{src}: --format official expects the Mu-MAE sensor embeddings "
                             f"({SENSOR_KEYS['acc_phone']}, ...); a video-only model is --format videomae")
        encoder_only = finetune or "encoder_to_decoder.weight" not in sd
        config = official_pretrain_config(sd, a, encoder_only, info)
        model, template = _template(config, encoder_only)
        if finetune and "encoder.norm.weight" not in sd:
            template["encoder"] = {k: v for k, v in template["encoder"].items() if k != "norm"}
        params, report = official_keys.from_official(sd, template, model.specs, skip=skip)
    step = int(a.step if a.step >= 0 else info.get("epoch", 0) or 0)
    report = {"source": os.path.abspath(src), "format": fmt, "encoder_only": encoder_only,
              "source_info": {k: v for k, v in info.items() if k != "hf_config"},
              "rebuilt": ["position tables (fixed sin-cos, from the config of the run that loads them)"],
              **report}
    model_init.save_converted(dst, config, params, report, step)
    return report


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.weights.convert", __doc__)
    p.add_argument("--src", required=True, help=".pth/.pt/.bin, .safetensors, .npz or a Hugging Face folder")
    p.add_argument("--dst", required=True, help="output directory (must not hold checkpoints yet)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="source layout (auto: detected)")
    p.add_argument("--skip", default="", help="comma-separated source keys to leave out on purpose")
    p.add_argument("--num_heads", type=int, default=0, help="encoder heads (default: the preset of its width)")
    p.add_argument("--decoder_heads", type=int, default=0, help="decoder heads (default: the preset)")
    p.add_argument("--num_frames", type=int, default=0, help="saved config's frame count (default 16)")
    p.add_argument("--image_size", type=int, default=0, help="saved config's image size (default 224)")
    p.add_argument("--sensor_length", type=int, default=0, help="saved config's sensor length (default 128)")
    p.add_argument("--hf_config", default="", help="config.json of a bare Hugging Face state dict")
    p.add_argument("--step", type=int, default=-1, help="checkpoint step to write (default: the epoch or 0)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_run, parser().parse_args(argv))


def _run(a) -> int:
    report = convert(a.src, a.dst, a.format, [k for k in a.skip.split(",") if k], a)
    print(f"{a.src} ({report['format']}{', encoder only' if report['encoder_only'] else ''}) -> {a.dst}")
    print(layouts.format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
