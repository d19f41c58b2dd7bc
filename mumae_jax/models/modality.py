"""Modality specifications: how each input stream is tokenised, masked, decoded and weighted.

A Mu-MAE model is a list of modalities (AV-MAE style). Mu-MAE itself is one `video` modality plus
four `sensor` modalities whose masks share one group ("synchronized masking"); video-only VideoMAE
is the same model with only the `video` modality. Specs are built from the config once, validated,
and then used as static (hashable) data inside jitted code. The kind-specific part of each spec
(geometry, fields, supported masks) is its kind's (`models/kinds/`); this module checks what all kinds
share and how modalities relate (mask groups, time alignment).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from mumae_jax.models import kinds
from mumae_jax.models.kinds.base import ModalitySpec, fail as _fail

__all__ = ["ModalitySpec", "spec_from_config", "specs_from_config"]


def spec_from_config(name: str, cfg: Mapping[str, Any]) -> ModalitySpec:
    """Builds and validates one ModalitySpec from its config block."""
    if cfg["kind"] not in kinds.REGISTRY:
        _fail(name, f"kind={cfg['kind']!r}, expected one of {tuple(kinds.REGISTRY)}")
    kind = kinds.get(cfg["kind"])
    ratio = float(cfg["mask_ratio"])
    if not 0.0 < ratio < 1.0:
        _fail(name, f"mask_ratio={ratio} must lie strictly between 0 and 1")
    common = dict(
        name=name,
        kind=kind.name,
        mask_type=cfg["mask_type"],
        mask_ratio=ratio,
        mask_group=cfg.get("mask_group", "") or "",
        loss_weight=float(cfg.get("loss_weight", 1.0)),
        normalize_target=bool(cfg.get("normalize_target", True)),
        decoder_ratio=float(cfg.get("decoder_ratio", 1.0)),
    )
    if not 0.0 < common["decoder_ratio"] <= 1.0:
        _fail(name, f"decoder_ratio={common['decoder_ratio']} must lie in (0, 1]")
    if common["mask_type"] not in kind.mask_types:
        _fail(name, f"mask_type={common['mask_type']!r}, expected one of {kind.mask_types}")
    spec = kind.build(name, cfg, common)
    if spec.num_masked < 1 or spec.num_visible < 1:
        _fail(name, f"mask_ratio={ratio} leaves {spec.num_visible} visible and {spec.num_masked} masked "
                    f"of {spec.num_tokens} tokens; both must be at least 1")
    return spec


def specs_from_config(names: Sequence[str], configs: Mapping[str, Mapping[str, Any]]) -> tuple[ModalitySpec, ...]:
    """Builds the ordered modality specs (the order is the encoder's token order) and checks groups."""
    if not names:
        raise ValueError("config.modalities is empty: name at least one modality")
    if len(set(names)) != len(names):
        raise ValueError(f"config.modalities has duplicates: {tuple(names)}")
    missing = [n for n in names if n not in configs]
    if missing:
        raise ValueError(f"config.modalities names {missing} but config.modality has no block for them "
                         f"(has: {sorted(configs)})")
    specs = tuple(spec_from_config(n, configs[n]) for n in names)
    by_name = {s.name: s for s in specs}
    groups: dict[str, ModalitySpec] = {}
    for s in specs:
        if s.align_to:
            target = by_name.get(s.align_to)
            if target is None or not kinds.of(target).frames:
                _fail(s.name, f"align_to={s.align_to!r} must name a video modality of this model")
        if s.mask_group:
            if s.mask_group in by_name:
                _fail(s.name, f"mask_group={s.mask_group!r} must not equal a modality name")
            first = groups.setdefault(s.mask_group, s)
            same = (first.num_tokens, first.mask_ratio, first.mask_type, first.align_to, first.patching)
            this = (s.num_tokens, s.mask_ratio, s.mask_type, s.align_to, s.patching)
            if same != this:
                _fail(s.name, f"shares mask_group={s.mask_group!r} with '{first.name}' but differs in "
                              f"(num_tokens, mask_ratio, mask_type, align_to, patching): {this} vs {same}")
    return specs
