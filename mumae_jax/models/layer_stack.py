"""Converts parameters between the per-layer layout (`block00`, `block01`, ...) and the scanned layout
(`layers`, every leaf stacked along a new leading axis), wherever a Transformer sits in the tree.

The per-layer layout is the canonical one: converted checkpoints, the official/Hugging Face converters
and the one-shot models use it; a pretraining run with `config.model.scan=True` keeps `layers`.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from mumae_jax.models.vit import SCANNED

_BLOCK = re.compile(r"block(\d+)")


def _stack(node: Mapping[str, Any]) -> dict:
    blocks = sorted((int(_BLOCK.fullmatch(k).group(1)), k) for k in node if _BLOCK.fullmatch(k))
    if [i for i, _ in blocks] != list(range(len(blocks))):
        raise ValueError(f"cannot stack layers {[k for _, k in blocks]}: not block00..block{len(blocks) - 1:02d}")
    layers = [node[k] for _, k in blocks]
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
    return {SCANNED: stacked, **{k: v for k, v in node.items() if not _BLOCK.fullmatch(k)}}


def _unstack(node: Mapping[str, Any]) -> dict:
    layers = node[SCANNED]
    depth = {np.shape(x)[0] for x in jax.tree.leaves(layers)}
    if len(depth) != 1:
        raise ValueError(f"stacked '{SCANNED}' leaves disagree on the number of layers: {sorted(depth)}")
    (depth,) = depth
    out = {f"block{i:02d}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(depth)}
    return {**out, **{k: v for k, v in node.items() if k != SCANNED}}


def unstack(params: Mapping[str, Any]) -> dict:
    """Scanned -> per-layer layout (a no-op on per-layer trees). Split leaves are slices of the stacked ones
    (numpy stays numpy, device arrays stay on the device)."""
    if not isinstance(params, Mapping):
        return params
    node = _unstack(params) if SCANNED in params else params
    return {k: unstack(v) if isinstance(v, Mapping) else v for k, v in node.items()}


def stack(params: Mapping[str, Any]) -> dict:
    """Per-layer -> scanned layout (a no-op on scanned trees)."""
    if not isinstance(params, Mapping):
        return params
    node = _stack(params) if any(_BLOCK.fullmatch(k) for k in params) else params
    return {k: stack(v) if isinstance(v, Mapping) and k != SCANNED else v for k, v in node.items()}


def to_layout(params: Mapping[str, Any], scan: bool) -> dict:
    """`params` in the layout of a model built with `scan`."""
    return stack(params) if scan else unstack(params)
