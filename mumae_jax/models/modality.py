"""Modality specifications: how each input stream is tokenised, masked, decoded and weighted.

A Mu-MAE model is a list of modalities (AV-MAE style). Mu-MAE itself is one `video` modality plus
four `sensor` modalities whose masks share one group ("synchronized masking"); video-only VideoMAE
is the same model with only the `video` modality. Specs are built from the config once, validated,
and then used as static (hashable) data inside jitted code.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

KINDS = ("video", "sensor")
VIDEO_MASKS = ("tube", "random")
SENSOR_MASKS = ("random", "time_aligned")
SENSOR_PATCHINGS = ("strided", "contiguous")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """Static description of one modality.

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

    # ---- token geometry -------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """(temporal slices, tokens per slice): video (T/pt, H/ph*W/pw); sensor (1, num_tokens)."""
        if self.kind == "video":
            t, h, w, _ = self.input_shape
            pt, ph, pw = self.tubelet
            return t // pt, (h // ph) * (w // pw)
        return 1, self.num_tokens_cfg

    @property
    def num_tokens(self) -> int:
        t, s = self.grid
        return t * s

    @property
    def token_dim(self) -> int:
        """Values per token: pt*ph*pw*C for video, (L/num_tokens)*C for sensors."""
        if self.kind == "video":
            return self.tubelet[0] * self.tubelet[1] * self.tubelet[2] * self.input_shape[-1]
        length, channels = self.input_shape
        return (length // self.num_tokens_cfg) * channels

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


def _fail(name: str, msg: str):
    raise ValueError(f"modality '{name}': {msg}")


def spec_from_config(name: str, cfg: Mapping[str, Any]) -> ModalitySpec:
    """Builds and validates one ModalitySpec from its config block."""
    kind = cfg["kind"]
    if kind not in KINDS:
        _fail(name, f"kind={kind!r}, expected one of {KINDS}")
    ratio = float(cfg["mask_ratio"])
    if not 0.0 < ratio < 1.0:
        _fail(name, f"mask_ratio={ratio} must lie strictly between 0 and 1")
    common = dict(
        name=name,
        kind=kind,
        mask_type=cfg["mask_type"],
        mask_ratio=ratio,
        mask_group=cfg.get("mask_group", "") or "",
        loss_weight=float(cfg.get("loss_weight", 1.0)),
        normalize_target=bool(cfg.get("normalize_target", True)),
        decoder_ratio=float(cfg.get("decoder_ratio", 1.0)),
    )
    if not 0.0 < common["decoder_ratio"] <= 1.0:
        _fail(name, f"decoder_ratio={common['decoder_ratio']} must lie in (0, 1]")
    if kind == "video":
        frames, size, channels = int(cfg["num_frames"]), int(cfg["image_size"]), int(cfg.get("channels", 3))
        tubelet = tuple(int(v) for v in cfg["tubelet"])
        if len(tubelet) != 3 or min(tubelet) < 1:
            _fail(name, f"tubelet={tubelet} must be three positive ints (frames, height, width)")
        if frames % tubelet[0]:
            _fail(name, f"num_frames={frames} is not divisible by the tubelet's temporal size {tubelet[0]}")
        if size % tubelet[1] or size % tubelet[2]:
            _fail(name, f"image_size={size} is not divisible by the tubelet's spatial size {tubelet[1:]}")
        if common["mask_type"] not in VIDEO_MASKS:
            _fail(name, f"mask_type={common['mask_type']!r}, expected one of {VIDEO_MASKS}")
        mean = tuple(float(v) for v in cfg.get("input_mean", ()))
        std = tuple(float(v) for v in cfg.get("input_std", ()))
        if len(mean) != len(std) or (mean and len(mean) != channels):
            _fail(name, f"input_mean/input_std must both have {channels} values (or both be empty)")
        spec = ModalitySpec(input_shape=(frames, size, size, channels), tubelet=tubelet,
                            input_mean=mean, input_std=std, **common)
    else:
        length, channels, tokens = int(cfg["length"]), int(cfg.get("channels", 3)), int(cfg["num_tokens"])
        if tokens < 1 or length % tokens:
            _fail(name, f"length={length} is not divisible by num_tokens={tokens}")
        patching = cfg.get("patching", "strided")
        if patching not in SENSOR_PATCHINGS:
            _fail(name, f"patching={patching!r}, expected one of {SENSOR_PATCHINGS}")
        if common["mask_type"] not in SENSOR_MASKS:
            _fail(name, f"mask_type={common['mask_type']!r}, expected one of {SENSOR_MASKS}")
        align_to = cfg.get("align_to", "") or ""
        if common["mask_type"] == "time_aligned":
            if patching != "contiguous":
                _fail(name, "mask_type='time_aligned' needs patching='contiguous': a strided token holds "
                            "samples from the whole clip, so it has no position in time to align")
            if not align_to:
                _fail(name, "mask_type='time_aligned' needs align_to=<name of a video modality>")
        spec = ModalitySpec(input_shape=(length, channels), num_tokens_cfg=tokens, patching=patching,
                            align_to=align_to, **common)
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
            if target is None or target.kind != "video":
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
