"""Sin-cos tables and tokenisers against hand values and the official einops patterns."""
import einops
import numpy as np

from mumae_jax.models import kinds, posemb, tokenizers
from mumae_jax.models.modality import ModalitySpec


def test_sincos_interleaved_values():
    t = posemb.sincos_table(5, 6)
    assert t.shape == (5, 6) and t.dtype == np.float32
    pos = 3
    expected = [np.sin(pos / 10000 ** (0 / 6)), np.cos(pos / 10000 ** (0 / 6)),
                np.sin(pos / 10000 ** (2 / 6)), np.cos(pos / 10000 ** (2 / 6)),
                np.sin(pos / 10000 ** (4 / 6)), np.cos(pos / 10000 ** (4 / 6))]
    np.testing.assert_allclose(t[pos], expected, rtol=1e-6)
    np.testing.assert_array_equal(t[0], [0, 1, 0, 1, 0, 1])  # interleaved, not [sin.., cos..]


def test_sensor_patching_matches_official_einops():
    rng = np.random.default_rng(0)
    official = rng.normal(size=(2, 1, 128, 1, 3)).astype(np.float32)  # [B, c, L, l, s]
    expected = einops.rearrange(official, "b c (t p) l s -> b p (t l s c)", p=16)
    ours = np.asarray(tokenizers.sensor_tokens(official.reshape(2, 128, 3), 16, "strided"))
    np.testing.assert_array_equal(ours, expected)
    # token 5 holds samples 5, 21, 37, ... (stride 16), axes fastest
    x = official.reshape(2, 128, 3)
    np.testing.assert_array_equal(ours[1, 5], x[1, 5::16].reshape(-1))


def test_contiguous_patching_is_windows():
    x = np.arange(2 * 128 * 3, dtype=np.float32).reshape(2, 128, 3)
    tok = np.asarray(tokenizers.sensor_tokens(x, 16, "contiguous"))
    np.testing.assert_array_equal(tok[0, 2], x[0, 16:24].reshape(-1))


def test_video_token_layout_channel_fastest():
    spec = ModalitySpec(name="video", kind="video", input_shape=(4, 32, 32, 3), tubelet=(2, 16, 16))
    x = np.random.default_rng(1).normal(size=(1, 4, 32, 32, 3)).astype(np.float32)
    tok = np.asarray(kinds.of(spec).tokens(spec, x))
    assert tok.shape == (1, 8, 1536)
    # token index = t*4 + h*2 + w; within a token (dt, dy, dx, c) with c fastest
    t, h, w = 1, 0, 1
    expected = x[0, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16, :].reshape(-1)
    np.testing.assert_array_equal(tok[0, t * 4 + h * 2 + w], expected)
