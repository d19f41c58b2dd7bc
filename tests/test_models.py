"""MultimodalMAE: shapes (paper ViT-B via eval_shape), encoder sees only visible tokens, parameter layout."""
import jax
import jax.numpy as jnp
import numpy as np

from mumae_jax.configs import pretrain
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae


def _fixed_masks(specs, batch, seed=0):
    rng = np.random.default_rng(seed)
    masks = {}
    for s in specs:
        m = np.zeros((batch, s.num_tokens), bool)
        for b in range(batch):
            m[b, rng.permutation(s.num_tokens)[:s.num_masked]] = True
        masks[s.name] = m
    shared = masks[specs[1].name]
    return {s.name: (shared if s.mask_group else masks[s.name]) for s in specs}


def test_paper_b_shapes():
    model = mae.from_config(pretrain.get_config())
    inputs, masks = pretraining_step.dummy_inputs(model.specs, 2)
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs, masks)
    enc = jax.eval_shape(lambda v: model.apply(v, inputs, masks, method=model.encode), variables)
    assert enc.shape == (2, 160 + 4 * 2, 768)
    out = jax.eval_shape(lambda v: model.apply(v, inputs, masks), variables)
    assert out["video"].shape == (2, 1408, 1536)
    for n in pretrain.SENSORS:
        assert out[n].shape == (2, 14, 24)
    p = variables["params"]
    assert p["embed_video"]["proj"]["kernel"].shape == (2, 16, 16, 3, 768)
    assert p["embed_gyro"]["proj"]["kernel"].shape == (24, 768)
    assert p["encoder_to_decoder"]["kernel"].shape == (768, 384) and "bias" not in p["encoder_to_decoder"]
    assert p["mask_token"].shape == (1, 1, 384)
    attn = p["encoder"]["block00"]["attn"]
    assert set(attn) == {"qkv", "q_bias", "v_bias", "proj"} and set(attn["qkv"]) == {"kernel"}  # no k bias
    assert len(p["encoder"]) == 13 and len(p["decoder_video"]["blocks"]) == 4


def test_encoder_ignores_masked_inputs(tiny_config):
    model = mae.from_config(tiny_config)
    specs = model.specs
    rng = np.random.default_rng(0)
    inputs = {s.name: rng.normal(size=(2,) + s.input_shape).astype(np.float32) for s in specs}
    masks = _fixed_masks(specs, 2)
    params = model.init(jax.random.key(0), inputs, masks)["params"]
    encode = jax.jit(lambda x: model.apply({"params": params}, x, masks, method=model.encode))
    base = np.asarray(encode(inputs))

    video = specs[0]
    t_slices, per = video.grid
    changed = {k: v.copy() for k, v in inputs.items()}
    vm = masks["video"].reshape(2, t_slices, 2, 2)  # 32² frames: 2×2 positions per slice
    for b, t, h, w in zip(*np.nonzero(vm)):
        changed["video"][b, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16] = 100.0
    for s in specs[1:]:
        for b, p in zip(*np.nonzero(masks[s.name])):
            changed[s.name][b, p::16] = -50.0  # strided token p = samples p, p+16, ...
    np.testing.assert_array_equal(np.asarray(encode(changed)), base)

    # ...while a visible sensor sample does change it (the test can fail)
    b, p = np.argwhere(~masks["gyro"])[0]
    changed["gyro"][b, p] += 1.0
    assert not np.allclose(np.asarray(encode(changed)), base)


def test_bf16_compute_keeps_fp32_params(tiny_config):
    tiny_config.compute_dtype = "bfloat16"
    model = mae.from_config(tiny_config)
    inputs, masks = pretraining_step.dummy_inputs(model.specs, 1)
    params = jax.eval_shape(model.init, jax.random.key(0), inputs, masks)["params"]
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    out = jax.eval_shape(lambda p: model.apply({"params": p}, inputs, masks), params)
    assert out["video"].dtype == jnp.bfloat16
