"""A frozen pretrained Mu-MAE encoder as a feature extractor, for the few-shot probes (`evaluators/frozen.py`).

clips --(episode_input.build_clip_input: evaluation transform)--> MAEFeatureEncoder (eval mode, every token
visible) --> features [n, D], extracted ONCE per unique clip.

Modality groups (`modality_groups`): several encoders can be evaluated on one list in one pass over the
clips, each fed only its group's modalities: `all` (every modality of the pretraining model), `video`,
`sensors`, a modality name, or names joined by `+` (`acc_watch+gyro`). They share the weights (of the
checkpoint, or of ONE random init); only the fresh `fc_norm*` are per encoder. The feature itself:
`pooling` ('mean': the official mean over all tokens, [n, D]; 'modality': one block per modality,
[n, n_modalities·D]; 'tokens': each modality's token layout, [n, Σ tokens·D]) and `feature_depth` (0: every
block; k: the output of the first k blocks), see `mae_features`.

Geometry (`default_geometry`): `num_frames` frames (default: the pretraining num_frames; a multiple of the
tubelet's time size), image_size (default: the pretraining size), resize_to (default:
round(image_size · 256/224), the official 224 -> 256 ratio), sensor_length (default: the pretraining one).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from mumae_jax.core import cli, sharding
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.models import kinds, mae_features
from mumae_jax.weights import pretrained


def _plain(cfg) -> dict:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


# ----------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------

def default_geometry(pretrain_config, num_frames: int = 0, image_size: int = 0, resize_to: int = 0,
                     sensor_length: int = 0) -> ClipGeometry:
    """The clip geometry of the evaluation (the pretraining model's sensors); 0 = the default (module docstring)."""
    mods = pretrain_config.modality
    video = [mods[n] for n in pretrain_config.modalities if mods[n]["kind"] == "video"]
    sensors = [mods[n] for n in pretrain_config.modalities if mods[n]["kind"] == "sensor"]
    if len(video) != 1:
        raise ValueError("frozen evaluation needs exactly one video modality in the pretraining model")
    num_frames = int(num_frames or video[0]["num_frames"])
    tube_t = int(video[0]["tubelet"][0])
    if num_frames < 1 or num_frames % tube_t:
        raise ValueError(f"num_frames={num_frames} must be a positive multiple of the tubelet time size {tube_t}")
    image_size = int(image_size or video[0]["image_size"])
    resize_to = int(resize_to or round(image_size * 256 / 224))
    if resize_to < image_size:
        raise ValueError(f"resize_to={resize_to} must be >= image_size={image_size}")
    sensor_length = int(sensor_length or (sensors[0]["length"] if sensors else 128))
    names = tuple(n for n in pretrain_config.modalities if mods[n]["kind"] == "sensor")
    return ClipGeometry(num_frames=num_frames, image_size=image_size, sensor_length=sensor_length, sensors=names,
                        resize_to=resize_to)


def modality_groups(pretrain_config, groups: str | Sequence[str] = "all") -> dict[str, tuple[str, ...]]:
    """{group: its modality names, in the pretraining order} of a comma-separated string (or a list) of
    groups (module docstring). Unknown names, empty or repeated groups are a ValueError naming them."""
    names = tuple(pretrain_config.modalities)
    kinds = {n: pretrain_config.modality[n]["kind"] for n in names}
    words = {"all": names, "video": tuple(n for n in names if kinds[n] == "video"),
             "sensors": tuple(n for n in names if kinds[n] == "sensor")}
    listed = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups)]
    if not listed or not all(listed):
        raise ValueError(f"empty modality group in {groups!r}")
    out: dict[str, tuple[str, ...]] = {}
    for g in listed:
        if g in out:
            raise ValueError(f"modality group {g!r} is listed twice")
        picked = set()
        for part in g.split("+"):
            if part not in words and part not in names:
                raise ValueError(f"modality group {g!r}: unknown modality {part!r}; the pretraining model has "
                                 f"{', '.join(names)} (groups: all, video, sensors, or names joined by '+')")
            picked.update(words.get(part, (part,)))
        if not picked:
            raise ValueError(f"modality group {g!r} selects no modality of the pretraining model ({', '.join(names)})")
        out[g] = tuple(n for n in names if n in picked)
    return out


def make_encoder(pretrain_config, geometry: ClipGeometry, normalize_video: bool = True, *,
                 modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0
                 ) -> mae_features.MAEFeatureEncoder:
    """The frozen feature encoder (no drop path) of the pretraining model for `geometry`, fed `modalities`
    (default: all)."""
    return mae_features.from_pretrain_config(
        pretrain_config, drop_path=0.0, normalize_video=normalize_video, num_frames=geometry.num_frames,
        image_size=geometry.image_size, sensor_length=geometry.sensor_length, modalities=modalities,
        pooling=pooling, feature_depth=feature_depth)


def init_params(encoder: mae_features.MAEFeatureEncoder, seed: int = 0):
    """Randomly initialised encoder parameters (a baseline, or the tree `load_pretrained` fills)."""
    dummy = {s.name: jnp.zeros((1, *s.input_shape), jnp.float32) for s in encoder.specs}
    return jax.jit(lambda k: encoder.init(k, dummy, train=False)["params"])(jax.random.key(seed))


def group_encoders(pretrain_config, groups: str | Sequence[str], geometry: ClipGeometry,
                   source_params=None, *, seed: int = 0, normalize_video: bool = True, pooling: str = "mean",
                   feature_depth: int = 0) -> dict[str, tuple[mae_features.MAEFeatureEncoder, Any]]:
    """{group: (encoder fed only that group's modalities, params)} (`modality_groups`).

    Weights come from `source_params` (a `MultimodalMAE` tree; strict `load_pretrained`), or, if None, from
    ONE random init (`seed`) of the encoder of every modality, shared by all groups. fc_norm* start fresh.
    """
    kw = dict(normalize_video=normalize_video, feature_depth=feature_depth)
    if source_params is None:
        source_params = init_params(make_encoder(pretrain_config, geometry, **kw), seed)
    out = {}
    for g, mods in modality_groups(pretrain_config, groups).items():
        encoder = make_encoder(pretrain_config, geometry, modalities=mods, pooling=pooling, **kw)
        out[g] = (encoder, mae_features.load_pretrained(init_params(encoder, seed), source_params)[0])
    return out


def from_pretrain_config(pretrain_config, seed: int = 0, normalize_video: bool = True, *,
                         modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0,
                         **geometry):
    """(encoder, random-init params) of a pretraining config, without a checkpoint (baseline).

    `geometry`: num_frames, image_size, sensor_length as in `default_geometry` (resize_to is ignored).
    """
    encoder = make_encoder(pretrain_config, default_geometry(pretrain_config, **geometry), normalize_video,
                           modalities=modalities, pooling=pooling, feature_depth=feature_depth)
    return encoder, init_params(encoder, seed)


def from_pretrain_run(workdir: str, step: Optional[int] = None, *, mesh=None, normalize_video: bool = True,
                      modalities: Optional[Sequence[str]] = None, pooling: str = "mean", feature_depth: int = 0,
                      **geometry):
    """(encoder, params, step) from the latest (or given) checkpoint of a pretraining run.

    Every encoder weight comes from the checkpoint (`load_pretrained`, strict) except the fresh fc_norm*.
    `geometry` as in `from_pretrain_config`.
    """
    config, mae_params, step = pretrained.load_params(workdir, step, mesh)
    encoder, params = from_pretrain_config(config, normalize_video=normalize_video, modalities=modalities,
                                           pooling=pooling, feature_depth=feature_depth, **geometry)
    params, _ = mae_features.load_pretrained(params, mae_params)
    return encoder, params, step


# ----------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _feature_fn(encoder, mesh):
    """Jitted (params, inputs) -> features [B, D], replicated on every device."""
    return jax.jit(lambda p, x: encoder.apply({"params": p}, x, train=False),
                   out_shardings=sharding.replicated(mesh))


def extract_features(encoder, params, data_cfg, clip_names: Sequence[str], geometry: ClipGeometry,
                     **kw) -> np.ndarray:
    """Features float32 [len(clip_names), D] of the clips (`extract_group_features` of one encoder)."""
    return extract_group_features({"": (encoder, params)}, data_cfg, clip_names, geometry, **kw)[""]


def extract_group_features(models: Mapping[str, tuple], data_cfg, clip_names: Sequence[str], geometry: ClipGeometry,
                           *, split: str = "meta_test", batch_size: int = 32, mesh=None,
                           progress: bool = False) -> dict[str, np.ndarray]:
    """{group: features float32 [len(clip_names), encoder.feature_dim]} for models {group: (encoder, params)}.

    Each clip is read once (evaluation transform) and every encoder gets its own modalities of it (eval
    mode). Batches of `batch_size` (divisible by the device count) are sharded over `mesh` (default: all).
    """
    from mumae_jax.data import episode_input  # TensorFlow is imported only here

    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh, "the frozen evaluation's batch_size")
    rep = sharding.replicated(mesh)
    fns = {g: (enc, _feature_fn(enc, mesh), jax.device_put(p, rep)) for g, (enc, p) in models.items()}
    sensors = tuple(dict.fromkeys(s.name for enc, _ in models.values() for s in enc.specs if not kinds.of(s).frames))
    it = episode_input.build_clip_input(data_cfg, clip_names, dataclasses.replace(geometry, sensors=sensors),
                                        split=split, batch_size=batch_size)
    n, procs, rank = len(clip_names), jax.process_count(), jax.process_index()
    share = batch_size // procs
    out = {g: np.zeros((n, enc.feature_dim), np.float32) for g, (enc, _, _) in fns.items()}
    try:
        for b in tqdm.tqdm(it, total=-(-n // batch_size), desc="features", unit="batch",
                           disable=not (progress and cli.on_terminal())):
            valid = b["index"] >= 0
            for g, (enc, fn, params) in fns.items():
                local = {s.name: b["video" if kinds.of(s).frames else s.name][rank * share:(rank + 1) * share]
                         for s in enc.specs}
                out[g][b["index"][valid]] = np.asarray(fn(params, sharding.to_global(local, mesh)), np.float32)[valid]
    finally:
        it.close()
    return out
