"""What every modality kind shares: the `ModalitySpec` data, the `Kind` interface and the kind registry.

A kind (video, sensor, ...) is one module of this package holding a `Kind` subclass registered with
`@register`; `ModalitySpec.kind` names it and every kind-specific step (geometry, config validation,
tokens, reconstruction targets and their inverse, embedding) is a lookup `get(spec.kind)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

EPS = 1e-6  # target normalisation: (x - mean) / (std_unbiased + EPS)


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """Static (hashable) description of one modality, built and validated from its config block.

    video:  input [B, T, H, W, C]; tokens are (pt, ph, pw) tubes in (t, h, w) order.
    sensor: input [B, L, C]; `num_tokens` tokens of (L / num_tokens) samples x C values each.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    tubelet: tuple[int, int, int] = (2, 16, 16)
    num_tokens_cfg: int = 16
    patching: str = "strided"
    mask_type: str = "tube"
    mask_ratio: float = 0.9
    mask_group: str = ""
    align_to: str = ""
    loss_weight: float = 1.0
    normalize_target: bool = True
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    decoder_ratio: float = 1.0

    @property
    def grid(self) -> tuple[int, int]:
        """(temporal slices, tokens per slice): video (T/pt, H/ph*W/pw); sensor (1, num_tokens)."""
        return get(self.kind).grid(self)

    @property
    def num_tokens(self) -> int:
        t, s = self.grid
        return t * s

    @property
    def token_dim(self) -> int:
        """Values per token: pt*ph*pw*C for video, (L/num_tokens)*C for sensors."""
        return get(self.kind).token_dim(self)

    @property
    def num_masked(self) -> int:
        """Exact masked-token count, rounded down like the official code (`int(ratio * n)`)."""
        t, s = self.grid
        if self.mask_type == "tube":
            return t * int(self.mask_ratio * s)
        return int(self.mask_ratio * self.num_tokens)

    @property
    def num_visible(self) -> int:
        return self.num_tokens - self.num_masked

    @property
    def num_decoded(self) -> int:
        """Masked tokens the decoder reconstructs: all, or int(decoder_ratio * num_masked) (VideoMAE V2's
        decoder masking; the decoder then runs on num_visible + num_decoded tokens)."""
        if self.decoder_ratio >= 1.0:
            return self.num_masked
        return max(1, int(self.decoder_ratio * self.num_masked))

    @property
    def mask_key(self) -> str:
        """Modalities with the same key share one mask per example."""
        return self.mask_group or self.name


def fail(name: str, msg: str):
    raise ValueError(f"modality '{name}': {msg}")


def normalize(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    """(x - mean) / (unbiased std + EPS) over `axis`."""
    mean = x.mean(axis=axis, keepdims=True)
    std = jnp.sqrt(x.var(axis=axis, ddof=1, keepdims=True))
    return (x - mean) / (std + EPS)


class Kind:
    """One modality kind. Subclasses set the attributes and implement the methods.

    frames:          the input is a frame sequence [T, H, W, C] (read from a clip's video stream, drawn as video);
                     otherwise a sampled series [L, C] read from the clip's stream of the same name
    mask_types:      the `mask_type`s this kind supports (models/masking.py draws them)
    official_embed:  the official checkpoint's embedding layer ('conv3d' | 'conv1d'; weights/official_keys.py)
    hidden_value:    what pictures show in place of a masked value
    """

    name: str = ""
    frames: bool = False
    mask_types: tuple[str, ...] = ()
    official_embed: str = ""
    hidden_value: float = float("nan")

    def build(self, name: str, cfg: Mapping[str, Any], common: Mapping[str, Any]) -> ModalitySpec:
        """A validated spec from the config block `cfg` (`common`: the kind-independent fields, checked)."""
        raise NotImplementedError

    def grid(self, spec: ModalitySpec) -> tuple[int, int]:
        raise NotImplementedError

    def token_dim(self, spec: ModalitySpec) -> int:
        raise NotImplementedError

    def tokens(self, spec: ModalitySpec, x: jnp.ndarray) -> jnp.ndarray:
        """Model input [B, ...input_shape] -> raw per-token values [B, N, token_dim] (the embedding's input)."""
        raise NotImplementedError

    def embed(self, spec: ModalitySpec, width: int, dtype=jnp.float32, name: str | None = None) -> nn.Module:
        """The token embedding [B, n, token_dim] -> [B, n, width]."""
        raise NotImplementedError

    def display(self, spec: ModalitySpec, x):
        """A model input back in the data's own units (video: input normalisation undone); targets and pictures
        start from it."""
        return x

    def target_groups(self, spec: ModalitySpec, x) -> jnp.ndarray:
        """Displayed input [B, ...] -> [B, N, P, G]: each token's P values in G groups, each group normalised
        over its P values for the reconstruction target (flattened as (P, G) -> token_dim)."""
        raise NotImplementedError

    def from_groups(self, spec: ModalitySpec, groups: np.ndarray) -> np.ndarray:
        """Inverse of `target_groups` for one example: [N, P, G] -> input_shape (numpy; for pictures)."""
        raise NotImplementedError


REGISTRY: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    """Class decorator: registers one instance of a `Kind` under its `name`."""
    if cls.name in REGISTRY:
        raise ValueError(f"modality kind {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Kind:
    """The registered kind `name`; ValueError listing the known kinds."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality kind {name!r}; known kinds: {sorted(REGISTRY)}") from None
