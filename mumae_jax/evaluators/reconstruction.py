"""What the MAE reconstructs, back in the input's own units (numpy; for pictures and inspection).

The decoders predict *normalised* targets (objectives/mae_loss.py, models/kinds/: each video tube per colour
channel, each sensor token over its values). A prediction has no scale of its own, so it is un-normalised with
the mean and standard deviation of the *original* clip's own masked patch: the pictures show the predicted
structure at the true patch brightness and contrast, which is how MAE papers draw them, and are labelled as such.

For one example and one modality (`spec`), `reconstruct` returns
  original        video [T, H, W, C] pixels (ImageNet normalisation undone), sensor [L, C] input values
  masked          the original with masked tubes set to grey (video) or masked samples set to NaN (sensor)
  reconstruction  visible parts from the original, masked parts from the prediction (un-normalised)
  sample_mask     bool [T, H, W] / [L]: True where the value was masked
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mumae_jax.models import kinds
from mumae_jax.models.kinds.base import EPS, ModalitySpec

GREY = kinds.video.Video.hidden_value  # what a masked tube shows


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
    kind = kinds.of(spec)
    x = np.asarray(kind.display(spec, x))
    groups = np.asarray(kind.target_groups(spec, x[None]))[0]  # [N, P, G], as the targets were normalised
    rec = groups.copy()
    rec[ids] = _unnormalize(pred.reshape((len(ids),) + groups.shape[1:]), groups[ids], axis=1,
                            normalized=spec.normalize_target)
    hidden = groups.copy()
    hidden[ids] = kind.hidden_value
    token_mask = np.zeros(groups.shape[:2] + (1,), bool)
    token_mask[ids] = True
    return {"original": x, "masked": kind.from_groups(spec, hidden), "reconstruction": kind.from_groups(spec, rec),
            "sample_mask": kind.from_groups(spec, np.broadcast_to(token_mask, groups.shape))[..., 0]}


def reconstruct_all(specs, inputs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                    preds: Mapping[str, np.ndarray], index: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """`reconstruct` for every modality of example `index` of a batch (model inputs, masks, predictions)."""
    return {s.name: reconstruct(s, np.asarray(inputs[s.name])[index], np.asarray(masks[s.name])[index],
                                np.asarray(preds[s.name])[index]) for s in specs}
