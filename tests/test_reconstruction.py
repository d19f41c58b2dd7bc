"""reconstruction.py: perfect predictions (the true normalised targets) give back the original clip exactly;
masked parts are grey / NaN at exactly the masked tubes / samples; a zero prediction is the patch mean."""
import jax
import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax.evaluators import reconstruction
from mumae_jax.objectives import mae_loss
from mumae_jax.models import masking, modality


def _example(seed=0):
    config = make_tiny_config()
    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    rng = np.random.default_rng(seed)
    inputs = {s.name: rng.standard_normal((2,) + s.input_shape).astype(np.float32) for s in specs}
    masks = jax.device_get(masking.draw_masks(jax.random.key(seed), specs, 2))
    return specs, inputs, masks


def test_true_targets_reconstruct_the_original():
    specs, inputs, masks = _example()
    preds = {s.name: np.asarray(mae_loss.masked_targets(s, inputs[s.name], masks[s.name])) for s in specs}
    out = reconstruction.reconstruct_all(specs, inputs, masks, preds, index=1)
    for s in specs:
        r = out[s.name]
        np.testing.assert_allclose(r["reconstruction"], r["original"], atol=2e-5)
        assert r["original"].shape == s.input_shape
        if s.kind == "video":  # ImageNet normalisation undone
            np.testing.assert_allclose(r["original"], inputs[s.name][1] * np.asarray(s.input_std) +
                                       np.asarray(s.input_mean), atol=1e-6)
            voxels = int(np.prod(s.tubelet))
            assert r["sample_mask"].sum() == s.num_masked * voxels
            assert np.all(r["masked"][r["sample_mask"]] == reconstruction.GREY)
            np.testing.assert_array_equal(r["masked"][~r["sample_mask"]], r["original"][~r["sample_mask"]])
        else:
            per_token = s.input_shape[0] // s.num_tokens
            assert r["sample_mask"].sum() == s.num_masked * per_token
            assert np.isnan(r["masked"][r["sample_mask"]]).all() and not np.isnan(r["masked"][~r["sample_mask"]]).any()


def test_zero_prediction_is_the_patch_mean_and_shapes_are_checked():
    specs, inputs, masks = _example(1)
    video = specs[0]
    n = int(masks[video.name][0].sum())
    r = reconstruction.reconstruct(video, inputs[video.name][0], masks[video.name][0],
                                   np.zeros((n, video.token_dim), np.float32))
    rec, orig, m = r["reconstruction"], r["original"], r["sample_mask"]
    t0 = np.argwhere(m)[0]  # one masked voxel: its tube (2x16x16 here) is flat at the original tube's mean
    pt, ph, pw = video.tubelet
    sl = tuple(slice(i - i % p, i - i % p + p) for i, p in zip(t0, (pt, ph, pw)))
    np.testing.assert_allclose(rec[sl], np.broadcast_to(orig[sl].mean(axis=(0, 1, 2)), rec[sl].shape), atol=1e-5)
    with pytest.raises(ValueError, match="does not fit predictions"):
        reconstruction.reconstruct(video, inputs[video.name][0], masks[video.name][0], np.zeros((n - 1, 3)))
