"""What the MAE reconstructs, back in the input's own units (numpy; for pictures and inspection).

The decoders predict *normalised* targets (losses.py: each video tube per colour channel, each sensor
token over its values). A prediction has no scale of its own, so it is un-normalised with the mean and
standard deviation of the *original* clip's own masked patch: the pictures show the predicted structure
at the true patch brightness and contrast, which is how MAE papers draw them, and are labelled as such.

For one example and one modality (`spec`), `reconstruct` returns
  original        video [T, H, W, C] pixels (ImageNet normalisation undone), sensor [L, C] input values
  masked          the original with masked tubes set to grey (video) or masked samples set to NaN (sensor)
  reconstruction  visible parts from the original, masked parts from the prediction (un-normalised)
  sample_mask     bool [T, H, W] / [L]: True where the value was masked
"""
from __future__ import annotations

from typing import Mapping

import einops
import numpy as np

from mumae_jax.objectives.mae_loss import EPS, input_pixels
from mumae_jax.models import tokenizers
from mumae_jax.models.modality import ModalitySpec

GREY = 0.5


def _tube_grid(spec: ModalitySpec):
    t, h, w, _ = spec.input_shape
    pt, ph, pw = spec.tubelet
    return t // pt, h // ph, w // pw


def _to_video(patches: np.ndarray, spec: ModalitySpec) -> np.ndarray:
    """[N, pt*ph*pw, C] -> [T, H, W, C] (inverse of tokenizers.video_patches)."""
    gt, gh, gw = _tube_grid(spec)
    pt, ph, pw = spec.tubelet
    return einops.rearrange(patches, "(t h w) (p0 p1 p2) c -> (t p0) (h p1) (w p2) c", t=gt, h=gh, w=gw,
                            p0=pt, p1=ph, p2=pw)


def _from_tokens(tokens: np.ndarray, spec: ModalitySpec) -> np.ndarray:
    c = spec.input_shape[1]
    pattern = "p (t c) -> (t p) c" if spec.patching == "strided" else "p (t c) -> (p t) c"
    return einops.rearrange(tokens, pattern, c=c)


def _unnormalize(pred: np.ndarray, original: np.ndarray, axis: int, normalized: bool) -> np.ndarray:
    if not normalized:
        return pred
    mean = original.mean(axis=axis, keepdims=True)
    std = original.std(axis=axis, ddof=1, keepdims=True)
    return pred * (std + EPS) + mean


def reconstruct(spec: ModalitySpec, x: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """x: one example's model input; mask: bool [N] (True = masked); pred: [n_masked, token_dim] for the
    masked tokens in ascending order (the model's output). See the module docstring for the result."""
    x, mask, pred = np.asarray(x, np.float32), np.asarray(mask, bool), np.asarray(pred, np.float32)
    if mask.shape != (spec.num_tokens,) or int(mask.sum()) != pred.shape[0]:
        raise ValueError(f"{spec.name}: mask {mask.shape} with {int(mask.sum())} masked tokens does not fit "
                         f"predictions {pred.shape} ({spec.num_tokens} tokens)")
    ids = np.flatnonzero(mask)
    if spec.kind == "video":
        x = np.asarray(input_pixels(spec, x))
        patches = np.asarray(tokenizers.video_patches(x[None], spec.tubelet))[0]
        channels = patches.shape[-1]
        predicted = pred.reshape(len(ids), -1, channels)
        rec = patches.copy()
        rec[ids] = _unnormalize(predicted, patches[ids], axis=1, normalized=spec.normalize_target)
        grey = patches.copy()
        grey[ids] = GREY
        token_mask = np.zeros(patches.shape[:2] + (1,), bool)
        token_mask[ids] = True
        return {"original": x, "masked": _to_video(grey, spec), "reconstruction": _to_video(rec, spec),
                "sample_mask": _to_video(np.broadcast_to(token_mask, patches.shape[:2] + (1,)), spec)[..., 0]}
    tokens = np.asarray(tokenizers.sensor_tokens(x[None], spec.num_tokens_cfg, spec.patching))[0]
    rec = tokens.copy()
    rec[ids] = _unnormalize(pred, tokens[ids], axis=1, normalized=spec.normalize_target)
    hidden = tokens.copy()
    hidden[ids] = np.nan
    token_mask = np.zeros(tokens.shape, bool)
    token_mask[ids] = True
    return {"original": x, "masked": _from_tokens(hidden, spec), "reconstruction": _from_tokens(rec, spec),
            "sample_mask": _from_tokens(token_mask, spec)[:, 0]}


def reconstruct_all(specs, inputs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                    preds: Mapping[str, np.ndarray], index: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """`reconstruct` for every modality of example `index` of a batch (model inputs, masks, predictions)."""
    return {s.name: reconstruct(s, np.asarray(inputs[s.name])[index], np.asarray(masks[s.name])[index],
                                np.asarray(preds[s.name])[index]) for s in specs}
