"""Model size variants (pure data; importable without JAX)."""
from __future__ import annotations

from typing import Any, Mapping

# name: (width, depth, heads, mlp_dim, decoder_width, decoder_heads). Decoder depth is a separate
# setting (Mu-MAE's pretrain.sh uses 4). S and B are the official VideoMAE/Mu-MAE pretraining
# presets; Ti is the standard ViT-Ti encoder with a 96-wide decoder, for tests and CPU runs.
VARIANTS = {
    "Ti": (192, 12, 3, 768, 96, 3),
    "S": (384, 12, 6, 1536, 192, 3),
    "B": (768, 12, 12, 3072, 384, 6),
}


def check_variant(name: str) -> str:
    if name not in VARIANTS:
        raise ValueError(f"unknown model variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return name


def nearest(width: int) -> str:
    """The preset whose encoder width is closest to `width` (a label for explicitly sized models)."""
    return min(VARIANTS, key=lambda name: (abs(VARIANTS[name][0] - width), VARIANTS[name][0]))


def resolve(model_cfg: Mapping[str, Any]) -> dict[str, int]:
    """Sizes of `model_cfg.variant`, with any positive explicit field (width, depth, ...) overriding it."""
    width, depth, heads, mlp, dec_width, dec_heads = VARIANTS[check_variant(model_cfg["variant"])]
    sizes = dict(width=width, depth=depth, num_heads=heads, mlp_dim=mlp, decoder_width=dec_width,
                 decoder_depth=4, decoder_heads=dec_heads, decoder_mlp_dim=4 * dec_width)
    for k in sizes:
        v = int(model_cfg.get(k, 0) or 0)
        if v < 0:
            raise ValueError(f"config.model.{k}={v} must be positive (or 0 for the variant's value)")
        if v:
            sizes[k] = v
    if not model_cfg.get("decoder_mlp_dim"):
        sizes["decoder_mlp_dim"] = 4 * sizes["decoder_width"]
    for w, h in (("width", "num_heads"), ("decoder_width", "decoder_heads")):
        if sizes[w] % sizes[h]:
            raise ValueError(f"config.model: {w}={sizes[w]} is not divisible by {h}={sizes[h]}")
    return sizes
