"""TimeSformer: shapes, a numpy reference in the official (p, t) token layout, zero temporal_fc, CLS PE,
drop path, and initialisation from a MultimodalMAE."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from scipy.special import erf

from conftest import make_tiny_config
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae, timesformer, tokenizers

T, S, W, HEADS = 4, 32, 32, 2  # frames, image size, width, heads: P = 4 patches of 16²


def _model(**kw):
    cfg = dict(width=W, depth=2, num_heads=HEADS, mlp_dim=64, patch_size=16, num_frames=T, image_size=S)
    cfg.update(kw)
    return timesformer.TimeSformer(**cfg)


def _video(n, seed=0, t=T):
    return np.random.default_rng(seed).normal(size=(n, t, S, S, 3)).astype(np.float32)


def _randomize(params, seed=1, std=0.3):
    """Every leaf replaced by N(0, std²) noise (LayerNorm scales around 1), so nothing is trivially zero."""
    flat = traverse_util.flatten_dict(params, sep="/")
    rng = np.random.default_rng(seed)
    out = {k: (1.0 if k.endswith("scale") else 0.0) + std * rng.normal(size=v.shape).astype(np.float32)
           for k, v in flat.items()}
    return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in out.items()}, sep="/")


# ----- numpy reference, written in the layout of the official PyTorch code: tokens [B, 1 + P*T, D], (p, t) order

def _ln(x, p, eps):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _mha(x, p, heads):
    """torch nn.MultiheadAttention: in_proj_weight [3D, D] = qkv kernel transposed."""
    d = x.shape[-1]
    hd = d // heads
    w_in, b_in = np.asarray(p["qkv"]["kernel"], np.float64).T, np.asarray(p["qkv"]["bias"], np.float64)
    q, k, v = (x @ w_in[i * d:(i + 1) * d].T + b_in[i * d:(i + 1) * d] for i in range(3))
    out = np.zeros_like(q)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        logits = q[..., sl] @ np.swapaxes(k[..., sl], -1, -2) / np.sqrt(hd)
        a = np.exp(logits - logits.max(-1, keepdims=True))
        out[..., sl] = (a / a.sum(-1, keepdims=True)) @ v[..., sl]
    return out @ np.asarray(p["proj"]["kernel"], np.float64) + np.asarray(p["proj"]["bias"], np.float64)


def _dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _np_block(x, p, heads, t, temporal=True):
    """One divided space-time block on x [B, 1 + P*T, D] with patch tokens in (p, t) order."""
    x, p = np.asarray(x, np.float64), _f64(p)
    b, n, d = x.shape
    npatch = (n - 1) // t
    cls, q = x[:, :1], x[:, 1:]
    if temporal:
        y = _mha(_ln(q.reshape(b * npatch, t, d), p["time_norm"], 1e-5), p["time_attn"], heads)
        q = q + _dense(y, p["temporal_fc"]).reshape(b, npatch * t, d)
    frames = q.reshape(b, npatch, t, d).transpose(0, 2, 1, 3)                 # [B, T, P, D]
    y = np.concatenate([np.repeat(cls[:, None], t, axis=1), frames], axis=2).reshape(b * t, npatch + 1, d)
    y = _mha(_ln(y, p["space_norm"], 1e-5), p["space_attn"], heads).reshape(b, t, npatch + 1, d)
    cls = cls + y[:, :, 0].mean(axis=1)[:, None]
    q = q + y[:, :, 1:].transpose(0, 2, 1, 3).reshape(b, npatch * t, d)
    x = np.concatenate([cls, q], axis=1)
    h = _dense(_ln(x, p["ffn_norm"], 1e-5), p["fc1"])
    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    return x + _dense(h, p["fc2"])


def _np_forward(video, p, heads, depth, patch=16, temporal=True):
    p = _f64(p)
    n, t, h, w, c = video.shape
    gh, gw = h // patch, w // patch
    pix = video.reshape(n, t, gh, patch, gw, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
    pix = pix.reshape(n, t, gh * gw, patch * patch * c).astype(np.float64)
    kernel = np.asarray(p["patch_embed"]["proj"]["kernel"], np.float64)
    tok = pix @ kernel.reshape(-1, kernel.shape[-1]) + np.asarray(p["patch_embed"]["proj"]["bias"])  # [N,T,P,D]
    pos, time = np.asarray(p["pos_embed"][0], np.float64), np.asarray(p["time_embed"][0], np.float64)
    tok = tok.transpose(0, 2, 1, 3) + pos[1:, None] + time[None]                    # [N, P, T, D]
    cls = np.broadcast_to(np.asarray(p["cls_token"][0], np.float64) + pos[:1], (n, 1, tok.shape[-1]))
    x = np.concatenate([cls, tok.reshape(n, -1, tok.shape[-1])], axis=1)
    for i in range(depth):
        x = _np_block(x, p[f"block{i:02d}"], heads, t, temporal)
    return _ln(x, p["norm"], 1e-6)[:, 0]


# ----- tests

@pytest.fixture(scope="module")
def ts_params():
    """Freshly initialised params of `_model()`."""
    return jax.jit(_model().init)(jax.random.key(0), _video(1))["params"]


def test_shapes_and_param_layout(ts_params):
    model, params = _model(), ts_params
    for n in (6, 10):  # Mu-MAE episode (5 support + 1 query) and a TRX-size one
        out = jax.eval_shape(lambda p, v: model.apply({"params": p}, v), params, _video(n))
        assert out.shape == (n, W) and out.dtype == jnp.float32
    assert params["patch_embed"]["proj"]["kernel"].shape == (16, 16, 3, W)
    assert params["cls_token"].shape == (1, 1, W)
    assert params["pos_embed"].shape == (1, 4 + 1, W) and params["time_embed"].shape == (1, T, W)
    np.testing.assert_array_equal(params["time_embed"], 0.0)
    assert 0.005 < np.std(params["pos_embed"]) < 0.04 and np.abs(params["pos_embed"]).max() <= 0.04 + 1e-6
    blk = params["block01"]
    assert set(blk) == {"time_norm", "time_attn", "temporal_fc", "space_norm", "space_attn", "ffn_norm",
                        "fc1", "fc2"}
    for attn in ("time_attn", "space_attn"):
        assert blk[attn]["qkv"]["kernel"].shape == (W, 3 * W) and blk[attn]["qkv"]["bias"].shape == (3 * W,)
        assert blk[attn]["proj"]["kernel"].shape == (W, W)
    np.testing.assert_array_equal(blk["temporal_fc"]["kernel"], 0.0)
    np.testing.assert_array_equal(blk["temporal_fc"]["bias"], 0.0)
    with pytest.raises(ValueError, match="num_frames"):
        jax.eval_shape(lambda p, v: model.apply({"params": p}, v), params, _video(2, t=T + 2))


def test_block_matches_numpy_reference():
    n, npatch, d = 2, 4, W
    block = timesformer.DividedBlock(HEADS, 64, T)
    x_pt = np.random.default_rng(3).normal(size=(n, 1 + npatch * T, d)).astype(np.float32)  # (p, t) order
    p_tokens = x_pt[:, 1:].reshape(n, npatch, T, d).transpose(0, 2, 1, 3).reshape(n, T * npatch, d)
    x_tp = np.concatenate([x_pt[:, :1], p_tokens], axis=1)                                   # (t, p) order
    params = _randomize(jax.eval_shape(block.init, jax.random.key(0), x_tp)["params"])
    out = np.asarray(jax.jit(block.apply)({"params": params}, x_tp))
    out_pt = np.concatenate(
        [out[:, :1], out[:, 1:].reshape(n, T, npatch, d).transpose(0, 2, 1, 3).reshape(n, npatch * T, d)], 1)
    np.testing.assert_allclose(out_pt, _np_block(x_pt.astype(np.float64), params, HEADS, T), atol=1e-5, rtol=1e-5)


def test_model_matches_numpy_reference():
    model, video = _model(), _video(2, seed=4)
    params = _randomize(jax.eval_shape(model.init, jax.random.key(0), video)["params"], std=0.2)
    out = np.asarray(jax.jit(model.apply)({"params": params}, video))
    np.testing.assert_allclose(out, _np_forward(video, params, HEADS, 2), atol=1e-5, rtol=1e-5)
    # the temporal branch matters here, so the spatial-only reference is far off (the comparison can fail)
    assert np.abs(out - _np_forward(video, params, HEADS, 2, temporal=False)).max() > 1e-2


def test_zero_temporal_fc_removes_temporal_branch(ts_params):
    model, video, params = _model(), _video(2, seed=5), ts_params
    out = np.asarray(jax.jit(model.apply)({"params": params}, video))
    np.testing.assert_allclose(out, _np_forward(video, params, HEADS, 2, temporal=False), atol=1e-5, rtol=1e-5)

    # In one block at init, a frame's patch tokens ignore the other frames; with temporal_fc != 0 they don't.
    block = timesformer.DividedBlock(HEADS, 64, T)
    x = np.random.default_rng(6).normal(size=(2, 1 + 4 * T, W)).astype(np.float32)
    bp = jax.jit(block.init)(jax.random.key(2), x)["params"]
    x2 = x.copy()
    x2[:, 1 + 4:1 + 8] += np.random.default_rng(7).normal(size=(2, 4, W))  # frame 1's patch tokens
    apply = jax.jit(block.apply)
    frame0 = lambda p, inp: np.asarray(apply({"params": p}, inp))[:, 1:1 + 4]  # noqa: E731
    np.testing.assert_allclose(frame0(bp, x2), frame0(bp, x), atol=1e-6)
    bp = {**bp, "temporal_fc": {"kernel": 0.1 * jnp.eye(W), "bias": jnp.zeros(W)}}
    assert np.abs(frame0(bp, x2) - frame0(bp, x)).max() > 1e-3


def test_cls_token_gets_only_spatial_pe(ts_params):
    model, video, params = _model(), _video(2, seed=7), ts_params

    @jax.jit
    def tokens(p):
        _, state = model.apply({"params": p}, video, mutable=["intermediates"])
        return state["intermediates"]["tokens"][0]

    base = np.asarray(tokens(params))
    delta = np.random.default_rng(8).normal(size=(1, T, W)).astype(np.float32)
    moved = np.asarray(tokens({**params, "time_embed": params["time_embed"] + delta}))
    np.testing.assert_array_equal(moved[:, 0], base[:, 0])
    shift = (moved[:, 1:] - base[:, 1:]).reshape(2, T, 4, W)   # (t, p) order
    np.testing.assert_allclose(shift, np.broadcast_to(delta[0][None, :, None], shift.shape), atol=1e-6)
    np.testing.assert_allclose(base[:, 0], np.broadcast_to(params["cls_token"][0] + params["pos_embed"][0, :1],
                                                           (2, W)), atol=1e-7)


def test_deterministic_and_drop_path(ts_params):
    model, video = _model(drop_path=0.5), _video(4, seed=9)
    params = ts_params
    params = {**params, "block01": {**params["block01"],
                                    "temporal_fc": {"kernel": 0.1 * jnp.eye(W), "bias": jnp.zeros(W)}}}
    apply = jax.jit(lambda v, train, key: model.apply({"params": params}, v, train, rngs={"dropout": key}),
                    static_argnums=1)
    det = np.asarray(apply(video, False, jax.random.key(1)))
    np.testing.assert_array_equal(np.asarray(apply(video, False, jax.random.key(2))), det)
    a, b = np.asarray(apply(video, True, jax.random.key(1))), np.asarray(apply(video, True, jax.random.key(2)))
    assert np.abs(a - det).max() > 1e-4 and np.abs(a - b).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(apply(video, True, jax.random.key(1))), a)
    with pytest.raises(flax.errors.InvalidRngError):
        jax.eval_shape(lambda p: model.apply({"params": p}, video, train=True), params)


@pytest.fixture(scope="module")
def tiny_mae():
    model = mae.from_config(make_tiny_config())  # width 64, depth 2, heads 2, tube (2, 16, 16), 4x32²
    inputs, masks = pretraining_step.dummy_inputs(model.specs, 1)
    shapes = jax.eval_shape(model.init, jax.random.key(0), inputs, masks)["params"]
    return model, _randomize(shapes, seed=11, std=0.05)


def _ts_for(model, **kw):
    cfg = dict(width=model.width, depth=model.depth, num_heads=model.num_heads, mlp_dim=model.mlp_dim,
               num_frames=T, image_size=S)
    cfg.update(kw)
    ts = timesformer.TimeSformer(**cfg)
    return ts, _randomize(jax.eval_shape(ts.init, jax.random.key(3), _video(1))["params"], seed=13)


def test_init_from_mae_copies_weights(tiny_mae):
    model, mp = tiny_mae
    ts, tp = _ts_for(model)
    out, report = timesformer.init_from_mae(tp, mp)
    d = model.width
    for i in range(2):
        src, dst = mp["encoder"][f"block{i:02d}"], out[f"block{i:02d}"]
        bias = np.concatenate([src["attn"]["q_bias"], np.zeros(d), src["attn"]["v_bias"]])
        assert np.abs(src["attn"]["q_bias"]).max() > 0 and np.abs(src["attn"]["v_bias"]).max() > 0
        for attn, norm in (("time_attn", "time_norm"), ("space_attn", "space_norm")):
            np.testing.assert_array_equal(dst[attn]["qkv"]["kernel"], src["attn"]["qkv"]["kernel"])
            np.testing.assert_array_equal(dst[attn]["qkv"]["bias"], bias)
            np.testing.assert_array_equal(dst[attn]["qkv"]["bias"][d:2 * d], 0.0)
            for k in ("kernel", "bias"):
                np.testing.assert_array_equal(dst[attn]["proj"][k], src["attn"]["proj"][k])
            for k in ("scale", "bias"):
                np.testing.assert_array_equal(dst[norm][k], src["norm1"][k])
        for k in ("scale", "bias"):
            np.testing.assert_array_equal(dst["ffn_norm"][k], src["norm2"][k])
            np.testing.assert_array_equal(out["norm"][k], mp["encoder"]["norm"][k])
        for fc in ("fc1", "fc2"):
            for k in ("kernel", "bias"):
                np.testing.assert_array_equal(dst[fc][k], src["mlp"][fc][k])
        np.testing.assert_array_equal(dst["temporal_fc"]["kernel"], tp[f"block{i:02d}"]["temporal_fc"]["kernel"])
    tube = np.asarray(mp["embed_video"]["proj"]["kernel"])
    np.testing.assert_array_equal(out["patch_embed"]["proj"]["kernel"], tube.sum(axis=0))
    np.testing.assert_array_equal(out["patch_embed"]["proj"]["bias"], mp["embed_video"]["proj"]["bias"])
    for k in ("cls_token", "pos_embed", "time_embed"):
        np.testing.assert_array_equal(out[k], tp[k])

    kept = {"cls_token", "pos_embed", "time_embed"} | {f"block{i:02d}/temporal_fc/{k}"
                                                       for i in range(2) for k in ("kernel", "bias")}
    assert set(report["kept_init"]) == kept
    assert "block00/space_attn/qkv/bias" in report["loaded"] and "patch_embed/proj/kernel" in report["loaded"]
    assert not set(report["loaded"]) & kept
    assert "mask_token" in report["ignored"] and "encoder_to_decoder/kernel" in report["ignored"]
    assert any(k.startswith("decoder_video/") for k in report["ignored"])
    assert not any(k.startswith("encoder/") or k.startswith("embed_video/") for k in report["ignored"])

    wrapped, _ = timesformer.init_from_mae({"params": tp}, {"params": mp}, "mean")
    np.testing.assert_allclose(wrapped["params"]["patch_embed"]["proj"]["kernel"], tube.mean(axis=0), rtol=1e-6)
    out_shape = jax.eval_shape(ts.apply, wrapped, _video(2))
    assert out_shape.shape == (2, model.width)


def test_init_from_mae_static_clip_matches_tube_embed(tiny_mae):
    model, mp = tiny_mae
    _, tp = _ts_for(model)
    frame = np.random.default_rng(12).normal(size=(2, 1, S, S, 3)).astype(np.float32)
    clip = np.repeat(frame, T, axis=1)                                            # all frames equal
    tube_tokens = tokenizers.TubeEmbed(model.width, (2, 16, 16)).apply({"params": mp["embed_video"]}, clip)
    tube_tokens = np.asarray(tube_tokens).reshape(2, T // 2, 4, model.width)      # (t', h, w) order
    for mode, scale in (("sum", 1.0), ("mean", 0.5)):
        out, _ = timesformer.init_from_mae(tp, mp, mode)
        frame_tokens = timesformer.PatchEmbed(model.width).apply({"params": out["patch_embed"]}, clip)
        frame_tokens = np.asarray(frame_tokens)                                   # [2, T, 4, D]
        bias = np.asarray(mp["embed_video"]["proj"]["bias"])
        for t in range(T):
            np.testing.assert_allclose(frame_tokens[:, t] - bias, scale * (tube_tokens[:, t // 2] - bias),
                                       atol=2e-5, rtol=1e-5)


def test_init_from_mae_rejects_mismatch(tiny_mae):
    model, mp = tiny_mae
    _, tp = _ts_for(model, width=32, mlp_dim=64)
    with pytest.raises(ValueError, match=r"patch_embed/proj/kernel.*\(16, 16, 3, 32\).*\(16, 16, 3, 64\)"):
        timesformer.init_from_mae(tp, mp)
    _, tp = _ts_for(model, depth=1)
    with pytest.raises(ValueError, match="depth"):
        timesformer.init_from_mae(tp, mp)
    _, tp = _ts_for(model, mlp_dim=96)
    with pytest.raises(ValueError, match="block00/fc1/kernel"):
        timesformer.init_from_mae(tp, mp)
    _, tp = _ts_for(model)
    with pytest.raises(ValueError, match="num_heads"):
        timesformer.init_from_mae(tp, mp, num_heads=(4, 2))
    with pytest.raises(ValueError, match="tube_to_patch"):
        timesformer.init_from_mae(tp, mp, "first")
    no_video = {k: v for k, v in mp.items() if k != "embed_video"}
    with pytest.raises(ValueError, match="embed_video/proj/kernel"):
        timesformer.init_from_mae(tp, no_video)
