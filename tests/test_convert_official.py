"""Official Mu-MAE state-dict conversion (mumae_jax/weights/official_keys.py)."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import make_tiny_config
from mumae_jax.models import mae, tokenizers, vit
from mumae_jax.weights import official_keys as ok

D, DD, MLP, DEC_MLP = 64, 32, 128, 128


@pytest.fixture(scope="module")
def setup():
    model = mae.from_config(make_tiny_config())
    inputs, masks = {}, {}
    for s in model.specs:
        inputs[s.name] = np.zeros((1,) + s.input_shape, np.float32)
        m = np.zeros((1, s.num_tokens), bool)
        m[:, :s.num_masked] = True
        masks[s.name] = m
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs, masks))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), shapes)
    return model, params


def _expected_shapes():
    """Official `state_dict()` of PretrainVisionTransformer for the tiny config (modeling_pretrain.py)."""
    def block(prefix, d, mlp):
        return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                f"{prefix}.attn.q_bias": (d,), f"{prefix}.attn.v_bias": (d,),
                f"{prefix}.attn.qkv.weight": (3 * d, d),
                f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                f"{prefix}.mlp.fc1.weight": (mlp, d), f"{prefix}.mlp.fc1.bias": (mlp,),
                f"{prefix}.mlp.fc2.weight": (d, mlp), f"{prefix}.mlp.fc2.bias": (d,)}

    exp = {"mask_token": (1, 1, DD),
           "encoder.patch_embed.proj.weight": (D, 3, 2, 16, 16), "encoder.patch_embed.proj.bias": (D,)}
    for s in ("phone", "watch", "gyro", "orientation"):
        exp[f"encoder.patch_embed_{s}.proj.weight"] = (D, 24, 1)
        exp[f"encoder.patch_embed_{s}.proj.bias"] = (D,)
    for i in range(2):
        exp.update(block(f"encoder.blocks.{i}", D, MLP))
    exp.update({"encoder.norm.weight": (D,), "encoder.norm.bias": (D,)})
    for dec, out in (("decoder", 1536), ("phone_decoder", 24), ("watch_decoder", 24), ("gyro_decoder", 24),
                     ("ori_decoder", 24)):
        exp.update(block(f"{dec}.blocks.0", DD, DEC_MLP))
        exp.update({f"{dec}.norm.weight": (DD,), f"{dec}.norm.bias": (DD,),
                    f"{dec}.head.weight": (out, DD), f"{dec}.head.bias": (out,)})
    exp["encoder_to_decoder.weight"] = (DD, D)
    return exp


def test_keys_and_shapes(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    assert {k: v.shape for k, v in sd.items()} == _expected_shapes()
    assert all(v.dtype == np.float32 for v in sd.values())
    assert "encoder_to_decoder.bias" not in sd and list(sd)[0] == "mask_token"


def test_round_trip_bit_identical(setup):
    model, params = setup
    back, report = ok.from_official(ok.to_official(params, model.specs), params, model.specs)
    assert report["missing"] == report["unexpected"] == report["mismatched"] == []
    a, b = traverse_util.flatten_dict(params), traverse_util.flatten_dict(back)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    # Wrapped {'params': ...} templates and {'model': sd} checkpoints work too.
    back2, _ = ok.from_official({"model": ok.to_official(params, model.specs), "epoch": 3},
                                {"params": params}, model.specs)
    assert np.array_equal(back2["params"]["mask_token"], params["mask_token"])


def test_conv3d_layout_matches_tube_embed(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    tube = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype(np.float32)  # (t, h, w, c)
    ours = tokenizers.TubeEmbed(D, (2, 16, 16)).apply({"params": params["embed_video"]}, tube[None])[0, 0]
    w, b = sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"]
    official = np.einsum("octhw,cthw->o", w, tube.transpose(3, 0, 1, 2)) + b  # torch NCTHW conv, one tube
    np.testing.assert_allclose(np.asarray(ours), official, rtol=1e-4, atol=1e-4)


def test_conv1d_layout_matches_sensor_embed(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    tokens = np.random.default_rng(2).standard_normal((16, 24)).astype(np.float32)  # [N, 24]
    ours = tokenizers.SensorEmbed(D).apply({"params": params["embed_gyro"]}, tokens[None])[0]
    w, b = sd["encoder.patch_embed_gyro.proj.weight"], sd["encoder.patch_embed_gyro.proj.bias"]
    official = (np.einsum("oc,cp->op", w[:, :, 0], tokens.T) + b[:, None]).T  # Conv1d on x.permute(0,2,1)
    np.testing.assert_allclose(np.asarray(ours), official, rtol=1e-4, atol=1e-4)


def test_fused_qkv_matches_official_attention(setup):
    """numpy version of modeling_finetune.Attention (qkv weight, bias cat(q_bias, 0, v_bias)) vs ours."""
    model, params = setup
    sd = ok.to_official(params, model.specs)
    x = np.random.default_rng(3).standard_normal((5, D)).astype(np.float32)
    p = "encoder.blocks.1.attn."
    bias = np.concatenate([sd[p + "q_bias"], np.zeros(D, np.float32), sd[p + "v_bias"]])
    qkv = (x @ sd[p + "qkv.weight"].T + bias).reshape(5, 3, 2, D // 2).transpose(1, 2, 0, 3)
    q, k, v = qkv[0] * (D // 2) ** -0.5, qkv[1], qkv[2]
    a = q @ k.transpose(0, 2, 1)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    out = (a @ v).transpose(1, 0, 2).reshape(5, D) @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]
    ours = vit.Attention(2).apply({"params": params["encoder"]["block01"]["attn"]}, x[None])[0]
    np.testing.assert_allclose(np.asarray(ours), out, rtol=1e-3, atol=1e-3)


def test_renamed_key_names_both(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    sd["encoder.norm.gamma"] = sd.pop("encoder.norm.weight")
    with pytest.raises(ValueError, match=r"missing: encoder\.norm\.weight") as e:
        ok.from_official(sd, params, model.specs)
    assert "unexpected: encoder.norm.gamma" in str(e.value)
    back, report = ok.from_official(sd, params, model.specs, skip=("encoder.norm.weight", "encoder.norm.gamma"))
    assert report["missing"] == ["encoder.norm.weight"] and report["unexpected"] == ["encoder.norm.gamma"]
    assert back["encoder"]["norm"]["scale"] is not None
    np.testing.assert_array_equal(back["encoder"]["norm"]["scale"], params["encoder"]["norm"]["scale"])


def test_wrong_shape_names_key_and_shapes(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    sd["mask_token"] = np.zeros((1, 1, 16), np.float32)
    with pytest.raises(ValueError, match=r"mask_token has \(1, 1, 16\), the model needs \(1, 1, 32\)"):
        ok.from_official(sd, params, model.specs)
    back, report = ok.from_official(sd, params, model.specs, skip=("mask_token",))
    assert report["mismatched"] == [("mask_token", (1, 1, 16), (1, 1, 32))]
    np.testing.assert_array_equal(back["mask_token"], params["mask_token"])


def test_fused_qkv_bias(setup):
    model, params = setup
    sd = ok.to_official(params, model.specs)
    p = "encoder.blocks.0.attn."
    q, v = sd.pop(p + "q_bias"), sd.pop(p + "v_bias")
    sd[p + "qkv.bias"] = np.concatenate([q, np.zeros_like(q), v])
    back, _ = ok.from_official(sd, params, model.specs)
    np.testing.assert_array_equal(back["encoder"]["block00"]["attn"]["v_bias"], v)
    sd[p + "qkv.bias"][D + 3] = 0.5
    with pytest.raises(ValueError, match=r"encoder\.blocks\.0\.attn\.qkv\.bias has a nonzero k bias"):
        ok.from_official(sd, params, model.specs)
