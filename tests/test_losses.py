"""Targets and loss against hand-computed values and an independent NumPy implementation."""
import numpy as np
import pytest

from mumae_jax.objectives import mae_loss
from mumae_jax.models.modality import ModalitySpec

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VIDEO = ModalitySpec(name="video", kind="video", input_shape=(4, 32, 32, 3), tubelet=(2, 16, 16),
                     mask_type="tube", mask_ratio=0.5, input_mean=MEAN, input_std=STD)
SENSORS = [ModalitySpec(name=n, kind="sensor", input_shape=(128, 3), num_tokens_cfg=16, mask_type="random",
                        mask_ratio=0.9, mask_group="s", loss_weight=0.5) for n in ("a", "b", "c", "d")]
SPECS = [VIDEO] + SENSORS


def numpy_video_targets(x, mean, std):
    """Official order, written with explicit loops: [B,T,H,W,C] -> [B, N, 2*16*16*3]."""
    x = x * np.asarray(std) + np.asarray(mean)
    b, t, h, w, c = x.shape
    out = []
    for bi in range(b):
        toks = []
        for ti in range(t // 2):
            for hi in range(h // 16):
                for wi in range(w // 16):
                    p = x[bi, 2 * ti:2 * ti + 2, 16 * hi:16 * hi + 16, 16 * wi:16 * wi + 16].reshape(512, c)
                    p = (p - p.mean(0)) / (p.std(0, ddof=1) + 1e-6)
                    toks.append(p.reshape(-1))
        out.append(toks)
    return np.asarray(out)


def numpy_sensor_targets(x):
    tok = np.stack([x[:, p::16].reshape(x.shape[0], -1) for p in range(16)], axis=1)  # strided tokens
    return (tok - tok.mean(-1, keepdims=True)) / (tok.std(-1, ddof=1, keepdims=True) + 1e-6)


def test_targets_match_numpy_reference():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    s = rng.uniform(size=(2, 128, 3)).astype(np.float32)
    np.testing.assert_allclose(mae_loss.modality_targets(VIDEO, v), numpy_video_targets(v, MEAN, STD),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mae_loss.modality_targets(SENSORS[0], s), numpy_sensor_targets(s),
                               rtol=1e-4, atol=1e-4)


def _masks(batch=2):
    vm = np.zeros((batch, 2, 4), bool)
    vm[:, :, [1, 2]] = True  # tube: positions 1, 2 masked in both slices
    sm = np.zeros((batch, 16), bool)
    sm[:, 2:] = True
    return {"video": vm.reshape(batch, 8), **{s.name: sm for s in SENSORS}}


def test_loss_hand_case_zero_prediction():
    """With zero predictions the MSE of a normalised target is (n-1)/n · (std/(std+eps))² ≈ (n-1)/n."""
    rng = np.random.default_rng(1)
    inputs = {"video": rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32),
              **{s.name: rng.uniform(size=(2, 128, 3)).astype(np.float32) for s in SENSORS}}
    masks = _masks()
    preds = {"video": np.zeros((2, 4, 1536), np.float32), **{s.name: np.zeros((2, 14, 24), np.float32)
                                                             for s in SENSORS}}
    total, per = mae_loss.reconstruction_losses(SPECS, preds, inputs, masks)
    assert per["video"] == pytest.approx(511 / 512, rel=1e-4)
    for s in SENSORS:
        assert per[s.name] == pytest.approx(23 / 24, rel=1e-4)
    assert total == pytest.approx(511 / 512 + 0.5 * 4 * 23 / 24, rel=1e-4)


def test_loss_hand_case_offset_prediction_and_masked_selection():
    """pred = target of the masked tokens + 1 gives MSE exactly 1; the wrong tokens would not."""
    rng = np.random.default_rng(2)
    s = rng.uniform(size=(1, 128, 3)).astype(np.float32)
    sm = np.zeros((1, 16), bool)
    sm[0, [0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = True  # visible: tokens 1 and 2
    target = numpy_sensor_targets(s)[0]
    masked_rows = target[np.flatnonzero(sm[0])]  # ascending order
    _, per = mae_loss.reconstruction_losses(SENSORS[:1], {"a": masked_rows[None] + 1.0}, {"a": s}, {"a": sm})
    assert per["a"] == pytest.approx(1.0, rel=1e-5)
    shuffled = masked_rows[::-1][None] + 1.0
    _, per = mae_loss.reconstruction_losses(SENSORS[:1], {"a": shuffled}, {"a": s}, {"a": sm})
    assert per["a"] > 1.5
