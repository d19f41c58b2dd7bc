"""Hugging Face transformers VideoMAE <-> our video-only MultimodalMAE (mumae_jax/weights/hf_keys.py).

Small random transformers models are built from `VideoMAEConfig` objects (nothing is downloaded), their
random init is perturbed so that biases / LayerNorm parameters / mask token are not trivial, and their
outputs are compared with ours after conversion. torch and transformers are required (not skipped).
"""
import jax
import numpy as np
import pytest
import torch
import transformers

from mumae_jax.configs import pretrain
from mumae_jax.objectives import mae_loss
from mumae_jax.models import mae, posemb, tokenizers, vit
from mumae_jax.weights import hf_keys as hk

SMALL = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=128, decoder_hidden_size=32, decoder_num_hidden_layers=1,
             decoder_num_attention_heads=2, decoder_intermediate_size=64, use_mean_pooling=False,
             norm_pix_loss=True, layer_norm_eps=1e-3)  # eps large enough that a wrong eps shows at 1e-5
CASES = {
    "small": SMALL,
    "small_no_norm_pix": dict(SMALL, norm_pix_loss=False),
    # 8 frames of 48², 4 heads everywhere (head split), 2 decoder layers, default eps 1e-12.
    "geom8x48_heads4": dict(SMALL, image_size=48, num_frames=8, num_attention_heads=4,
                            decoder_num_attention_heads=4, decoder_num_hidden_layers=2, layer_norm_eps=1e-12),
    "qv_bias_off": dict(SMALL, qv_bias=False),
}
BATCH = 3
TOL = dict(rtol=1e-5, atol=1e-5)
MEASURED = {}  # case -> max abs differences (printed with -s)


def _hf_config(**kw):
    return transformers.VideoMAEConfig(attn_implementation="eager", **kw)


def _perturbed(model, seed):
    """Adds N(0, 0.05²) noise to every parameter (HF init zeroes biases and the mask token, ones LN scales)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _np_sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _our_model(hf_cfg):
    cfg = pretrain.get_config("modalities=video")
    hk.apply_overrides(cfg, hk.pretrain_overrides(hf_cfg.to_dict()))
    cfg.modality.video.mask_ratio = 0.5
    model = mae.from_config(cfg)
    (spec,) = model.specs
    x = np.zeros((1,) + spec.input_shape, np.float32)
    m = np.zeros((1, spec.num_tokens), bool)
    m[:, :spec.num_masked] = True
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {"video": x}, {"video": m}))["params"]
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return cfg, model, template


def _inputs(hf_cfg, spec, seed):
    """pixel_values [B, T, C, H, W] (torch) and a tube mask with different masks per example."""
    rng = np.random.default_rng(seed)
    pv = rng.standard_normal((BATCH, hf_cfg.num_frames, hf_cfg.num_channels, hf_cfg.image_size,
                              hf_cfg.image_size)).astype(np.float32)
    slices, per_slice = spec.grid
    per_masked = spec.num_masked // slices
    mask = np.zeros((BATCH, slices, per_slice), bool)
    for b in range(BATCH):
        mask[b, :, rng.permutation(per_slice)[:per_masked]] = True
    mask = mask.reshape(BATCH, -1)
    assert not all(np.array_equal(mask[0], mask[b]) for b in range(BATCH))
    return pv, mask


def _ours_forward(model, params, pv, mask):
    inputs, masks = {"video": pv.transpose(0, 1, 3, 4, 2)}, {"video": mask}
    preds = model.apply({"params": params}, inputs, masks)
    total, _ = mae_loss.reconstruction_losses(model.specs, preds, inputs, masks)
    feats = model.apply({"params": params}, inputs, masks, method=model.encode)
    return np.asarray(preds["video"]), float(total), np.asarray(feats)


def _hf_forward(hf, pv, mask):
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(pv), bool_masked_pos=torch.from_numpy(mask))
        feats = hf.videomae(torch.from_numpy(pv), bool_masked_pos=torch.from_numpy(mask)).last_hidden_state
    return out.logits.numpy(), float(out.loss), feats.numpy()


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    torch.manual_seed(0)
    hf_cfg = _hf_config(**CASES[request.param])
    hf = _perturbed(transformers.VideoMAEForPreTraining(hf_cfg), seed=1)
    cfg, model, template = _our_model(hf_cfg)
    return request.param, hf_cfg, hf, model, template


def test_pretraining_parity(case):
    name, hf_cfg, hf, model, template = case
    params, report = hk.from_hf(_np_sd(hf), template, qv_bias=hf_cfg.qv_bias)
    assert report["missing"] == report["unexpected"] == report["mismatched"] == []
    assert report["prefix"] == "videomae."
    if name == "qv_bias_off":
        assert len(report["rebuilt"]) == 2 * (hf_cfg.num_hidden_layers + hf_cfg.decoder_num_hidden_layers)
        assert not np.any(params["encoder"]["block00"]["attn"]["q_bias"])
    else:
        assert report["rebuilt"] == []
    pv, mask = _inputs(hf_cfg, model.specs[0], seed=2)
    logits, loss, feats = _hf_forward(hf, pv, mask)
    ours_logits, ours_loss, ours_feats = _ours_forward(model, params, pv, mask)
    assert ours_logits.shape == logits.shape == (BATCH, model.specs[0].num_masked, model.specs[0].token_dim)
    assert ours_feats.shape == feats.shape
    MEASURED[name] = dict(logits=float(np.abs(ours_logits - logits).max()),
                          features=float(np.abs(ours_feats - feats).max()), loss=abs(ours_loss - loss))
    print(name, MEASURED[name])
    np.testing.assert_allclose(ours_logits, logits, **TOL)
    np.testing.assert_allclose(ours_feats, feats, **TOL)
    np.testing.assert_allclose(ours_loss, loss, **TOL)


def test_swapped_q_and_v_breaks_parity(case):
    """Negative control: the comparison above can fail (q and v weights swapped before conversion)."""
    name, hf_cfg, hf, model, template = case
    sd = _np_sd(hf)
    for k in [k for k in sd if k.endswith("attention.attention.query.weight")]:
        v = k.replace("query.weight", "value.weight")
        sd[k], sd[v] = sd[v], sd[k]
    params, _ = hk.from_hf(sd, template, qv_bias=hf_cfg.qv_bias)
    pv, mask = _inputs(hf_cfg, model.specs[0], seed=2)
    logits, _, feats = _hf_forward(hf, pv, mask)
    ours_logits, _, ours_feats = _ours_forward(model, params, pv, mask)
    assert np.abs(ours_logits - logits).max() > 1e-3
    assert np.abs(ours_feats - feats).max() > 1e-3


def test_round_trip_bit_exact_and_loads_strict(case):
    name, hf_cfg, hf, model, template = case
    sd = _np_sd(hf)
    params, _ = hk.from_hf(sd, template, qv_bias=hf_cfg.qv_bias)
    back = hk.to_hf(params)
    if name == "qv_bias_off":
        # no q/v biases in the source; ours are zeros and the export writes them as zero q/v biases,
        # loadable into a qv_bias=True model that computes the same thing
        biases = [k for k in back if k.endswith(("query.bias", "value.bias"))]
        assert biases and all(not back[k].any() for k in biases)
        back_sd = {k: v for k, v in back.items() if k not in biases}
        assert list(back_sd) == list(sd) and all(np.array_equal(back_sd[k], sd[k]) for k in sd)
        hf_cfg = transformers.VideoMAEConfig(**dict(hf_cfg.to_dict(), qv_bias=True))
    else:
        assert list(back) == list(sd)  # same keys, same (state_dict) order
        for k in sd:
            assert back[k].dtype == np.float32 and np.array_equal(back[k], sd[k]), k
    fresh = transformers.VideoMAEForPreTraining(hf_cfg).eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    pv, mask = _inputs(hf_cfg, model.specs[0], seed=3)
    a, b = _hf_forward(hf, pv, mask), _hf_forward(fresh, pv, mask)
    if name == "qv_bias_off":  # adding a zero bias changes the float summation order, nothing else
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)
    else:
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_hf_config_round_trip(case):
    name, hf_cfg, hf, model, template = case
    cfg = pretrain.get_config("modalities=video")
    hk.apply_overrides(cfg, hk.pretrain_overrides(hf_cfg.to_dict()))
    kw = hk.hf_config(cfg)
    want = hf_cfg.to_dict()
    for k, v in kw.items():
        if k == "qv_bias":
            continue  # ours always has (possibly zero) q/v biases
        assert want[k] == v, (k, want[k], v)


def test_video_mae_model_encoder_only():
    """VideoMAEModel (no prefix, no decoder), every token visible, vs our embed + encoder."""
    torch.manual_seed(0)
    hf_cfg = _hf_config(**SMALL)
    hf = _perturbed(transformers.VideoMAEModel(hf_cfg), seed=4)
    _, model, full = _our_model(hf_cfg)
    template = {"embed_video": full["embed_video"], "encoder": full["encoder"]}
    sd = _np_sd(hf)
    params, report = hk.from_hf(sd, template)
    assert report["prefix"] == "" and report["unexpected"] == []
    assert set(params) == {"embed_video", "encoder"}
    (spec,) = model.specs
    pv = np.random.default_rng(5).standard_normal((2, 4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.from_numpy(pv)).last_hidden_state.numpy()
    tokens = tokenizers.TubeEmbed(model.width, spec.tubelet).apply(
        {"params": params["embed_video"]}, pv.transpose(0, 1, 3, 4, 2))
    tokens = tokens + posemb.sincos_table(spec.num_tokens, model.width)
    ours = vit.Transformer(model.depth, model.num_heads, model.mlp_dim, ln_eps=model.layer_norm_eps).apply(
        {"params": params["encoder"]}, tokens)
    MEASURED["VideoMAEModel"] = dict(features=float(np.abs(np.asarray(ours) - want).max()))
    print("VideoMAEModel", MEASURED["VideoMAEModel"])
    np.testing.assert_allclose(np.asarray(ours), want, **TOL)
    # Export back: VideoMAEModel's own keys and order, bit-exact.
    back = hk.to_hf(params, encoder_only=True)
    assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    # A pretraining state dict into an encoder-only template: decoder side is unexpected unless skipped.
    pre = _np_sd(_perturbed(transformers.VideoMAEForPreTraining(hf_cfg), seed=6))
    with pytest.raises(ValueError, match=r"unexpected: decoder\.head\.weight") as e:
        hk.from_hf(pre, template)
    assert "unexpected: mask_token" in str(e.value) and "unexpected: encoder_to_decoder.weight" in str(e.value)
    decoder_side = [k for k in pre if not k.startswith("videomae.")]
    enc, _ = hk.from_hf(pre, template, skip=decoder_side)
    np.testing.assert_array_equal(enc["encoder"]["norm"]["scale"], pre["videomae.layernorm.weight"])


def test_mean_pooling_hint_and_unrepresentable_configs():
    torch.manual_seed(0)
    hf_cfg = _hf_config(**dict(SMALL, use_mean_pooling=True))
    sd = _np_sd(transformers.VideoMAEModel(hf_cfg))
    _, model, full = _our_model(_hf_config(**SMALL))
    template = {"embed_video": full["embed_video"], "encoder": full["encoder"]}
    with pytest.raises(ValueError, match=r"missing: layernorm\.weight(.|\n)*use_mean_pooling=True"):
        hk.from_hf(sd, template)
    with pytest.raises(ValueError, match="use_mean_pooling=True"):
        hk.pretrain_overrides(hf_cfg.to_dict())
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        hk.pretrain_overrides(dict(SMALL, hidden_act="relu"))


def _full_sd_and_template():
    torch.manual_seed(0)
    hf_cfg = _hf_config(**SMALL)
    sd = _np_sd(_perturbed(transformers.VideoMAEForPreTraining(hf_cfg), seed=7))
    _, _, template = _our_model(hf_cfg)
    return sd, template


def test_renamed_key_names_both_and_skip():
    sd, template = _full_sd_and_template()
    old = "videomae.encoder.layer.0.attention.output.dense.weight"
    new = "videomae.encoder.layer.0.attention.output.dense.kernel"
    sd[new] = sd.pop(old)
    with pytest.raises(ValueError, match=rf"missing: {old}") as e:
        hk.from_hf(sd, template)
    assert f"unexpected: {new}" in str(e.value)
    params, report = hk.from_hf(sd, template, skip=(old, new))
    assert report["missing"] == [old] and report["unexpected"] == [new]
    np.testing.assert_array_equal(params["encoder"]["block00"]["attn"]["proj"]["kernel"],
                                  template["encoder"]["block00"]["attn"]["proj"]["kernel"])


def test_shape_mismatch_names_key_and_shapes_and_skip():
    sd, template = _full_sd_and_template()
    key = "videomae.encoder.layer.1.attention.attention.key.weight"
    sd[key] = np.ones((64, 32), np.float32)
    with pytest.raises(ValueError, match=rf"{key} has \(64, 32\), the model needs \(64, 64\)"):
        hk.from_hf(sd, template)
    params, report = hk.from_hf(sd, template, skip=(key,))
    assert report["mismatched"] == [(key, (64, 32), (64, 64))]
    qkv = params["encoder"]["block01"]["attn"]["qkv"]["kernel"]
    np.testing.assert_array_equal(qkv[:, 64:128], 0.0)  # the template's k third is kept
    np.testing.assert_array_equal(qkv[:, :64], sd[key.replace("key.weight", "query.weight")].T)


def test_nonzero_key_bias_is_an_error():
    sd, template = _full_sd_and_template()
    key = "videomae.encoder.layer.0.attention.attention.key.bias"
    sd[key] = np.zeros(64, np.float32)
    _, report = hk.from_hf(sd, template)
    assert report["ignored"] == [key]
    sd[key][3] = 0.5
    with pytest.raises(ValueError, match=rf"{key} is nonzero"):
        hk.from_hf(sd, template)


def test_hf_key_table():
    assert hk.hf_key(("encoder", "block03", "norm1", "scale")) == (
        "videomae.encoder.layer.3.layernorm_before.weight", "same")
    assert hk.hf_key(("encoder", "block00", "attn", "v_bias"), prefix="") == (
        "encoder.layer.0.attention.attention.value.bias", "same")
    assert hk.hf_key(("decoder_video", "blocks", "block01", "mlp", "fc2", "kernel")) == (
        "decoder.decoder_layers.1.output.dense.weight", "linear")
    assert hk.hf_key(("embed_video", "proj", "kernel")) == (
        "videomae.embeddings.patch_embeddings.projection.weight", "conv3d")
    assert hk.hf_key(("encoder", "block00", "attn", "qkv", "kernel"))[1] == "qkv"
    with pytest.raises(ValueError, match="only the 'video' modality"):
        hk.hf_key(("embed_gyro", "proj", "kernel"))


def test_hf_config_refusals():
    with pytest.raises(ValueError, match="video-only"):
        hk.hf_config(pretrain.get_config("modalities=all"))
    cfg = pretrain.get_config("modalities=video")  # official eps: decoder norm 1e-6, HF's is fixed 1e-5
    with pytest.raises(ValueError, match="decoder_norm_eps=1e-06"):
        hk.hf_config(cfg)
    kw = hk.hf_config(cfg, strict=False)
    assert kw["decoder_hidden_size"] == 384 and kw["use_mean_pooling"] is False
    cfg.model.decoder_norm_eps = 1e-5
    cfg.modality.video.input_mean = (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="input_mean/std"):
        hk.hf_config(cfg)
    transformers.VideoMAEConfig(**kw)  # accepted by transformers' strict config


def test_missing_q_bias_is_an_error_unless_the_config_says_qv_bias_false():
    hf_cfg = _hf_config(**SMALL)
    hf = _perturbed(transformers.VideoMAEForPreTraining(hf_cfg), seed=4)
    _, _, template = _our_model(hf_cfg)
    sd = {k: v for k, v in _np_sd(hf).items() if not k.endswith(("query.bias", "value.bias"))}
    with pytest.raises(ValueError, match=r"missing: videomae\.encoder\.layer\.0\.attention\.attention\.query\.bias"):
        hk.from_hf(sd, template)
    params, report = hk.from_hf(sd, template, qv_bias=False)
    assert report["rebuilt"] and not np.asarray(params["encoder"]["block00"]["attn"]["q_bias"]).any()
