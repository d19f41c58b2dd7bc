"""Episode fusion: query projections, cross-attention across episode samples, gated concat fusion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mumae_jax.models.episode_fusion import (DEFAULT_MODALITIES, EpisodeCrossAttention, GatedConcatFusion,
                                             MultimodalEpisodeFusion, QueryProjections)


def _inputs(n, key=0, modalities=DEFAULT_MODALITIES, rep_dim=384):
    keys = jax.random.split(jax.random.PRNGKey(key), len(modalities) + 1)
    uni = {name: jax.random.normal(k, (n, d)) for (name, d), k in zip(modalities, keys[:-1])}
    return uni, jax.random.normal(keys[-1], (n, rep_dim))


def _changed_rows(a, b, tol=1e-6):
    return set(np.nonzero(np.abs(np.asarray(a) - np.asarray(b)).max(-1) > tol)[0].tolist())


@pytest.mark.parametrize("n", [6, 10])
def test_shapes(n):
    uni, rep = _inputs(n)
    model = MultimodalEpisodeFusion()
    params = model.init(jax.random.PRNGKey(0), uni, rep)["params"]
    assert model.apply({"params": params}, uni, rep).shape == (n, 768)
    assert params["query_proj"]["proj_video"]["kernel"].shape == (384, 768)
    assert "bias" not in params["query_proj"]["proj_video"]
    assert params["query_proj"]["proj_gyro"]["kernel"].shape == (384, 64)
    assert params["xattn_video"]["query"]["kernel"].shape == (768, 768)
    assert params["xattn_acc_watch"]["key"]["bias"].shape == (64,)
    assert params["fusion"]["fuse"]["kernel"].shape == (1024, 768)
    assert params["fusion"]["gate_orientation"].shape == (64,)


def test_configurable_modalities_dict():
    mods = {"video": 32, "imu": 8}
    uni, rep = _inputs(6, modalities=tuple(mods.items()), rep_dim=16)
    model = MultimodalEpisodeFusion(modalities=mods, out=12)
    params = model.init(jax.random.PRNGKey(0), uni, rep)["params"]
    assert model.apply({"params": params}, uni, rep).shape == (6, 12)
    assert params["fusion"]["fuse"]["kernel"].shape == (40, 12)
    with pytest.raises(KeyError):
        model.apply({"params": params}, {"video": uni["video"]}, rep)


@pytest.mark.parametrize("n", [6, 10])
def test_attention_mixes_samples(n):
    uni, rep = _inputs(n)
    model = MultimodalEpisodeFusion()
    params = model.init(jax.random.PRNGKey(0), uni, rep)["params"]
    base = model.apply({"params": params}, uni, rep)
    j = 2  # a support sample
    # Unimodal features of sample j feed K/V of every row -> every output row changes.
    for name in ("video", "gyro"):
        uni2 = dict(uni, **{name: uni[name].at[j].add(1.0)})
        assert _changed_rows(base, model.apply({"params": params}, uni2, rep)) == set(range(n))
    # MAE representation of sample j only feeds Q row j -> only output row j changes.
    out = model.apply({"params": params}, uni, rep.at[j].add(1.0))
    assert _changed_rows(base, out) == {j}


def test_cross_attention_matches_numpy():
    n, d, heads = 5, 8, 4
    rng = np.random.default_rng(0)
    qt = rng.normal(size=(n, d)).astype(np.float32)
    u = rng.normal(size=(n, d)).astype(np.float32)
    layer = EpisodeCrossAttention(d, heads)
    params = layer.init(jax.random.PRNGKey(3), qt, u)["params"]
    got = np.asarray(layer.apply({"params": params}, jnp.asarray(qt), jnp.asarray(u)))
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    q = qt @ p["query"]["kernel"] + p["query"]["bias"]
    k = u @ p["key"]["kernel"] + p["key"]["bias"]
    v = u @ p["value"]["kernel"] + p["value"]["bias"]
    dh = d // heads
    outs = []
    for i in range(heads):
        sl = slice(i * dh, (i + 1) * dh)
        logits = q[:, sl] @ k[:, sl].T / np.sqrt(dh)
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        np.testing.assert_allclose(a.sum(1), 1.0)
        outs.append(a @ v[:, sl])
    np.testing.assert_allclose(got, np.concatenate(outs, 1), rtol=1e-5, atol=1e-5)
    # PyTorch default Linear init bounds
    for name in ("query", "key", "value"):
        assert np.abs(p[name]["kernel"]).max() <= 1 / np.sqrt(d)
        assert np.abs(p[name]["bias"]).max() <= 1 / np.sqrt(d)


def test_query_projections_linear():
    rep = jax.random.normal(jax.random.PRNGKey(0), (6, 384))
    mod = QueryProjections()
    params = mod.init(jax.random.PRNGKey(1), rep)["params"]
    out = mod.apply({"params": params}, rep)
    assert {k: v.shape for k, v in out.items()} == {name: (6, d) for name, d in DEFAULT_MODALITIES}
    np.testing.assert_allclose(out["acc_phone"], rep @ params["proj_acc_phone"]["kernel"], rtol=1e-5, atol=1e-5)


def test_gates_per_modality_and_init():
    uni, _ = _inputs(6)
    fusion = GatedConcatFusion()
    params = fusion.init(jax.random.PRNGKey(0), uni)["params"]
    gates = np.concatenate([np.asarray(params[f"gate_{name}"]) for name, _ in DEFAULT_MODALITIES])
    assert gates.shape == (1024,)
    assert abs(gates.std() - 1.0) < 0.1 and abs(gates.mean()) < 0.1
    # numpy reference of F = W_f [O_m * w_m]_m + b_f
    cat = np.concatenate([np.asarray(uni[name]) * np.asarray(params[f"gate_{name}"])
                          for name, _ in DEFAULT_MODALITIES], 1)
    want = cat @ np.asarray(params["fuse"]["kernel"]) + np.asarray(params["fuse"]["bias"])
    base = fusion.apply({"params": params}, uni)
    np.testing.assert_allclose(base, want, rtol=1e-4, atol=1e-4)
    # zeroing one modality's gate removes exactly that modality's influence
    zeroed = dict(params, gate_gyro=jnp.zeros_like(params["gate_gyro"]))
    out0 = fusion.apply({"params": zeroed}, uni)
    out1 = fusion.apply({"params": zeroed}, dict(uni, gyro=uni["gyro"] + 5.0))
    np.testing.assert_allclose(out0, out1, rtol=0, atol=1e-6)
    out2 = fusion.apply({"params": zeroed}, dict(uni, video=uni["video"] + 5.0))
    assert np.abs(np.asarray(out2) - np.asarray(out0)).max() > 1e-3
    # without zeroing, gyro does matter
    assert np.abs(np.asarray(fusion.apply({"params": params}, dict(uni, gyro=uni["gyro"] + 5.0)))
                  - np.asarray(base)).max() > 1e-3


def test_concat_mode_is_the_gated_concatenation_of_each_samples_own_features():
    """fusion 'concat' (ablation): F = W [U_v*w_v ; ... ; R*w_mae] + b, NumPy reference; no sample mixing."""
    mods = (("video", 12), ("imu", 4))
    uni, rep = _inputs(6, modalities=mods, rep_dim=8)
    model = MultimodalEpisodeFusion(modalities=mods, out=10, mode="concat")
    params = model.init(jax.random.PRNGKey(0), uni, rep)["params"]
    f = params["fusion"]
    assert sorted(params) == ["fusion"] and f["fuse"]["kernel"].shape == (24, 10)
    x = np.concatenate([np.asarray(uni["video"]) * f["gate_video"], np.asarray(uni["imu"]) * f["gate_imu"],
                        np.asarray(rep) * f["gate_mae"]], -1)
    got = model.apply({"params": params}, uni, rep)
    np.testing.assert_allclose(got, x @ f["fuse"]["kernel"] + f["fuse"]["bias"], rtol=1e-5, atol=1e-5)
    # negative control against the Mu-MAE mode: there, changing one sample's features moves every row
    assert _changed_rows(got, model.apply({"params": params}, dict(uni, imu=uni["imu"].at[2].add(1.0)), rep)) == {2}
    with pytest.raises(ValueError, match="fusion mode"):
        MultimodalEpisodeFusion(modalities=mods, mode="sum").init(jax.random.PRNGKey(0), uni, rep)
