"""Parity of our Mu-MAE pretraining model with the official forward pass and loss.

A random state dict is written with the official key names and tensor shapes of
`PretrainVisionTransformer` (lxhit/mu-mae, mu-mae-pretrain/modeling_pretrain.py; Block, Attention, Mlp,
PatchEmbed from modeling_finetune.py) for the tiny test configuration. It is loaded into our Flax model
with `official_keys.from_official`, and the fp32 JAX predictions and loss are compared with a float64
NumPy forward pass written in this file from the semantics of the official code (not from our JAX code):

  * inputs in the official layouts: video [B, C, T, H, W] (ImageNet-normalised), each sensor
    [B, 1, 128, 1, 3] turned into 16 tokens of 24 values by the engine's strided rearrangement
    'b c (t p) l s -> b p (t l s c)' (token p holds samples p, p+16, ..., p+112);
  * Conv3d tube embedding (flattened in (t', h', w') order), Conv1d(k=1) sensor embeddings, the fixed
    interleaved sin/cos tables, boolean-mask selection of the visible tokens (True = masked);
  * pre-norm encoder blocks (LayerNorm eps 1e-6, fused qkv weight with bias cat(q_bias, 0, v_bias),
    scale head_dim**-0.5, exact erf GELU), final encoder norm, encoder_to_decoder without bias;
  * per-modality decoders: [visible + pos[~mask], mask_token + pos[mask]] -> blocks -> norm of the last
    n_masked tokens -> head;
  * the targets of engine_for_pretraining.py: un-normalised video tubes (2x16x16) normalised per channel
    with (x - mean) / (std_unbiased + 1e-6), flattened channel-fastest; sensor tokens normalised over
    their 24 values the same way; loss = MSE(video) + 0.5 * sum of the four sensor MSEs.

Negative controls check that a wrongly laid-out official tensor changes the loss, so the test can fail.
"""
import math

import jax
import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax.objectives import mae_loss
from mumae_jax.models import mae
from mumae_jax.weights import official_keys as ok

try:
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
LN_EPS = 1e-6
TARGET_EPS = 1e-6
SENSOR_WEIGHT = 0.5  # --loss_hyper 0.5

# Tiny configuration (tests/conftest.py:make_tiny_config, encoder MLP widened to the official ratio 4).
B = 2
D, DEPTH, HEADS = 64, 2, 2
DD, DEC_DEPTH, DEC_HEADS = 32, 1, 2
MLP_RATIO = 4
FRAMES, SIZE, TUBELET_T, PATCH = 4, 32, 2, 16
SENSOR_LEN, SENSOR_AXES, SENSOR_TOKENS = 128, 3, 16
SENSOR_TOKEN_DIM = SENSOR_LEN // SENSOR_TOKENS * SENSOR_AXES  # 24
VIDEO_OUT = TUBELET_T * PATCH * PATCH * 3  # 1536

# Official sensor names: our modality -> (encoder embedding, decoder module).
SENSORS = {
    "acc_phone": ("patch_embed_phone", "phone_decoder"),
    "acc_watch": ("patch_embed_watch", "watch_decoder"),
    "gyro": ("patch_embed_gyro", "gyro_decoder"),
    "orientation": ("patch_embed_orientation", "ori_decoder"),
}


# ------------------------------------------------------------------------------------------------
# Official-layout random state dict
# ------------------------------------------------------------------------------------------------
def _official_state_dict(seed=0):
    rng = np.random.default_rng(seed)

    def w(*shape, s):
        return (s * rng.standard_normal(shape)).astype(np.float32)

    def ln(prefix, dim):
        return {f"{prefix}.weight": (1.0 + 0.2 * rng.standard_normal(dim)).astype(np.float32),
                f"{prefix}.bias": w(dim, s=0.1)}

    def block(prefix, dim):
        hid = dim * MLP_RATIO
        sd = {}
        sd.update(ln(f"{prefix}.norm1", dim))
        sd[f"{prefix}.attn.q_bias"] = w(dim, s=0.1)
        sd[f"{prefix}.attn.v_bias"] = w(dim, s=0.1)
        sd[f"{prefix}.attn.qkv.weight"] = w(3 * dim, dim, s=0.15)
        sd[f"{prefix}.attn.proj.weight"] = w(dim, dim, s=0.1)
        sd[f"{prefix}.attn.proj.bias"] = w(dim, s=0.05)
        sd.update(ln(f"{prefix}.norm2", dim))
        sd[f"{prefix}.mlp.fc1.weight"] = w(hid, dim, s=0.1)
        sd[f"{prefix}.mlp.fc1.bias"] = w(hid, s=0.05)
        sd[f"{prefix}.mlp.fc2.weight"] = w(dim, hid, s=0.08)
        sd[f"{prefix}.mlp.fc2.bias"] = w(dim, s=0.05)
        return sd

    sd = {"mask_token": w(1, 1, DD, s=0.2)}
    sd["encoder.patch_embed.proj.weight"] = w(D, 3, TUBELET_T, PATCH, PATCH, s=0.02)  # Conv3d (out, c, t, h, w)
    sd["encoder.patch_embed.proj.bias"] = w(D, s=0.1)
    for emb, _ in SENSORS.values():
        sd[f"encoder.{emb}.proj.weight"] = w(D, SENSOR_TOKEN_DIM, 1, s=0.2)  # Conv1d (out, in, k=1)
        sd[f"encoder.{emb}.proj.bias"] = w(D, s=0.1)
    for i in range(DEPTH):
        sd.update(block(f"encoder.blocks.{i}", D))
    sd.update(ln("encoder.norm", D))
    for dec, out in [("decoder", VIDEO_OUT)] + [(d, SENSOR_TOKEN_DIM) for _, d in SENSORS.values()]:
        for i in range(DEC_DEPTH):
            sd.update(block(f"{dec}.blocks.{i}", DD))
        sd.update(ln(f"{dec}.norm", DD))
        sd[f"{dec}.head.weight"] = w(out, DD, s=0.2)
        sd[f"{dec}.head.bias"] = w(out, s=0.1)
    sd["encoder_to_decoder.weight"] = w(DD, D, s=0.15)  # Linear without bias
    return sd


# ------------------------------------------------------------------------------------------------
# Float64 NumPy forward pass of the official model (written from the official semantics)
# ------------------------------------------------------------------------------------------------
def _sinusoid_table(n_position, dim):
    """Row pos, column j: angle pos / 10000^(2*(j//2)/dim); sin on even columns, cos on odd ones."""
    angle = np.arange(n_position)[:, None] / np.power(10000.0, 2 * (np.arange(dim)[None, :] // 2) / dim)
    table = angle.copy()
    table[:, 0::2] = np.sin(angle[:, 0::2])
    table[:, 1::2] = np.cos(angle[:, 1::2])
    return table


def _linear(x, sd, prefix, bias=True):
    y = x @ sd[f"{prefix}.weight"].T
    return y + sd[f"{prefix}.bias"] if bias else y


def _layer_norm(x, sd, prefix):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance, as torch LayerNorm
    return (x - mu) / np.sqrt(var + LN_EPS) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _attention(x, sd, prefix, heads):
    b, n, c = x.shape
    bias = np.concatenate([sd[f"{prefix}.q_bias"], np.zeros_like(sd[f"{prefix}.v_bias"]), sd[f"{prefix}.v_bias"]])
    qkv = x @ sd[f"{prefix}.qkv.weight"].T + bias  # [b, n, 3c]
    qkv = qkv.reshape(b, n, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)  # [3, b, h, n, hd]
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    logits = q @ k.transpose(0, 1, 3, 2)
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs = probs / probs.sum(-1, keepdims=True)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, c)
    return _linear(out, sd, f"{prefix}.proj")


def _block(x, sd, prefix, heads):
    x = x + _attention(_layer_norm(x, sd, f"{prefix}.norm1"), sd, f"{prefix}.attn", heads)
    h = _gelu(_linear(_layer_norm(x, sd, f"{prefix}.norm2"), sd, f"{prefix}.mlp.fc1"))
    return x + _linear(h, sd, f"{prefix}.mlp.fc2")


def _select(x, keep):
    """torch `x[keep].reshape(B, -1, C)` with a boolean [B, N] selector: rows in ascending order."""
    return np.stack([x[i][keep[i]] for i in range(x.shape[0])])


def _conv3d_tubes(video_bcthw, weight, bias):
    """Conv3d, kernel = stride = (2, 16, 16), then flatten(2).transpose(1, 2): [B, T'*H'*W', D]."""
    b, c, t, h, w = video_bcthw.shape
    kt, kh, kw = weight.shape[2:]
    x = video_bcthw.reshape(b, c, t // kt, kt, h // kh, kh, w // kw, kw)
    out = np.einsum("bcTtHyWx,octyx->bTHWo", x, weight) + bias
    return out.reshape(b, -1, weight.shape[0])


def _sensor_patch_data(sensor_b1l13):
    """Engine's rearrange 'b c (t p) l s -> b p (t l s c)' with p=16, written as explicit indices."""
    b, c, length, l, s = sensor_b1l13.shape
    t_count = length // SENSOR_TOKENS
    tokens = np.empty((b, SENSOR_TOKENS, t_count * l * s * c))
    for p in range(SENSOR_TOKENS):
        for t in range(t_count):
            for li in range(l):
                for si in range(s):
                    for ci in range(c):
                        tokens[:, p, (((t * l + li) * s + si) * c) + ci] = sensor_b1l13[:, ci, t * SENSOR_TOKENS + p, li, si]
    return tokens


def _normalise(x, axis):
    mean = x.mean(axis, keepdims=True)
    std = np.sqrt(x.var(axis, ddof=1, keepdims=True))
    return (x - mean) / (std + TARGET_EPS)


def _video_targets(video_bcthw):
    """Un-normalise, cut into 2x16x16 tubes, normalise per tube and channel, flatten (p0 p1 p2 c)."""
    x = video_bcthw * IMAGENET_STD[None, :, None, None, None] + IMAGENET_MEAN[None, :, None, None, None]
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // TUBELET_T, TUBELET_T, h // PATCH, PATCH, w // PATCH, PATCH)
    x = x.transpose(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, TUBELET_T * PATCH * PATCH, c)  # b (t h w) (p0 p1 p2) c
    return _normalise(x, axis=-2).reshape(b, x.shape[1], -1)


def _sensor_targets(sensor_b1l13):
    """'b c (t p) l s -> b p (t l s) c', normalise over (t l s) per channel c (=1), flatten (p c)."""
    tokens = _sensor_patch_data(sensor_b1l13)  # c == 1, so (t l s c) == (t l s) then c
    b, n, k = tokens.shape
    squeezed = tokens.reshape(b, n, k, 1)
    return _normalise(squeezed, axis=-2).reshape(b, n, k)


def official_forward(sd, video_bcthw, sensors_official, video_mask, sensor_masks):
    """Official PretrainVisionTransformer forward + engine loss in float64.

    Returns ({name: predictions of the masked tokens}, {name: MSE}, total loss).
    """
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    # Encoder: embeddings + fixed tables, visible tokens only, concatenated video, phone, watch, gyro, ori.
    x = _conv3d_tubes(video_bcthw, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"])
    # The official PatchEmbed is built without num_frames (default 16), so its table has
    # (16/2)*(H/16)*(W/16) rows and only 16-frame clips run there; the rows of a sin-cos table do not
    # depend on its length, so the table of our 4-frame clip is its first 8 rows.
    x = x + _sinusoid_table(x.shape[1], D)[None]
    visible = [_select(x, ~video_mask)]
    patch_data = {}
    for name, (emb, _) in SENSORS.items():
        patch_data[name] = _sensor_patch_data(sensors_official[name])  # model input: un-normalised tokens
        w = sd[f"encoder.{emb}.proj.weight"][:, :, 0]
        s = patch_data[name] @ w.T + sd[f"encoder.{emb}.proj.bias"]  # Conv1d(k=1) on x.permute(0, 2, 1)
        s = s + _sinusoid_table(SENSOR_TOKENS, D)[None]
        visible.append(_select(s, ~sensor_masks[name]))
    h = np.concatenate(visible, axis=1)
    for i in range(DEPTH):
        h = _block(h, sd, f"encoder.blocks.{i}", HEADS)
    h = _layer_norm(h, sd, "encoder.norm")  # encoder head is Identity (num_classes=0)
    z = _linear(h, sd, "encoder_to_decoder", bias=False)

    masks = {"video": video_mask, **sensor_masks}
    decoders = {"video": ("decoder", FRAMES // TUBELET_T * (SIZE // PATCH) ** 2)}
    decoders.update({name: (dec, SENSOR_TOKENS) for name, (_, dec) in SENSORS.items()})
    sizes = [int((~masks[n]).sum()) // B for n in decoders]  # torch.split sizes (visible per example)
    chunks = np.split(z, np.cumsum(sizes)[:-1], axis=1)
    preds = {}
    for (name, (dec, n_tokens)), chunk in zip(decoders.items(), chunks):
        pos = np.broadcast_to(_sinusoid_table(n_tokens, DD)[None], (B, n_tokens, DD))
        pos_vis, pos_mask = _select(pos, ~masks[name]), _select(pos, masks[name])
        y = np.concatenate([chunk + pos_vis, sd["mask_token"] + pos_mask], axis=1)
        for i in range(DEC_DEPTH):
            y = _block(y, sd, f"{dec}.blocks.{i}", DEC_HEADS)
        y = _layer_norm(y[:, -pos_mask.shape[1]:], sd, f"{dec}.norm")
        preds[name] = _linear(y, sd, f"{dec}.head")

    targets = {"video": _select(_video_targets(video_bcthw), video_mask)}
    for name in SENSORS:
        targets[name] = _select(_sensor_targets(sensors_official[name]), sensor_masks[name])
    mse = {n: float(np.mean((preds[n] - targets[n]) ** 2)) for n in preds}
    total = mse["video"] + SENSOR_WEIGHT * sum(mse[n] for n in SENSORS)
    return preds, mse, total


# ------------------------------------------------------------------------------------------------
# Fixtures: data, masks, our model
# ------------------------------------------------------------------------------------------------
def _draw_masks(rng):
    t_slices, per_slice = FRAMES // TUBELET_T, (SIZE // PATCH) ** 2
    n_spatial_masked = int(0.9 * per_slice)
    n_sensor_masked = int(0.9 * SENSOR_TOKENS)
    video, sensor = np.zeros((B, t_slices * per_slice), bool), np.zeros((B, SENSOR_TOKENS), bool)
    while True:
        for i in range(B):
            spatial = np.zeros(per_slice, bool)
            spatial[rng.permutation(per_slice)[:n_spatial_masked]] = True
            video[i] = np.tile(spatial, t_slices)  # same spatial mask in every temporal slice (tube)
            sensor[i] = False
            sensor[i, rng.permutation(SENSOR_TOKENS)[:n_sensor_masked]] = True
        if not np.array_equal(video[0], video[1]) and not np.array_equal(sensor[0], sensor[1]):
            return video, {name: sensor.copy() for name in SENSORS}  # one mask for all four sensors


@pytest.fixture(scope="module")
def case():
    config = make_tiny_config()
    config.model.mlp_dim = D * MLP_RATIO  # the official model has one mlp_ratio (4) for encoder and decoders
    model = mae.from_config(config)
    assert (model.width, model.depth, model.num_heads, model.mlp_dim) == (D, DEPTH, HEADS, D * MLP_RATIO)
    assert (model.decoder_width, model.decoder_depth, model.decoder_heads, model.decoder_mlp_dim) == (
        DD, DEC_DEPTH, DEC_HEADS, DD * MLP_RATIO)
    assert [s.name for s in model.specs] == ["video", *SENSORS]

    rng = np.random.default_rng(123)
    frames01 = rng.uniform(0.0, 1.0, (B, FRAMES, SIZE, SIZE, 3))
    video_ours = ((frames01 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)  # [B, T, H, W, C]
    sensors_ours = {n: rng.uniform(0.0, 1.0, (B, SENSOR_LEN, SENSOR_AXES)).astype(np.float32) for n in SENSORS}
    video_mask, sensor_masks = _draw_masks(rng)
    for s in model.specs:
        m = video_mask if s.name == "video" else sensor_masks[s.name]
        assert (m.sum(1) == s.num_masked).all()

    inputs = {"video": video_ours, **sensors_ours}
    masks = {"video": video_mask, **sensor_masks}
    # Official layouts of the same (fp32) data, promoted to float64 for the reference.
    video_official = video_ours.astype(np.float64).transpose(0, 4, 1, 2, 3)  # [B, C, T, H, W]
    sensors_official = {n: v.astype(np.float64)[:, None, :, None, :] for n, v in sensors_ours.items()}  # [B,1,L,1,3]

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs, masks))["params"]
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

    @jax.jit
    def run(params):
        with jax.default_matmul_precision("highest"):
            preds = model.apply({"params": params}, inputs, masks)
            total, per = mae_loss.reconstruction_losses(model.specs, preds, inputs, masks)
        return preds, total, per

    sd = _official_state_dict()
    ref = official_forward(sd, video_official, sensors_official, video_mask, sensor_masks)
    return dict(model=model, template=template, run=run, sd=sd, ref=ref)


def _ours(case, sd):
    params, report = ok.from_official(sd, case["template"], case["model"].specs)
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    preds, total, per = case["run"](params)
    return jax.tree.map(np.asarray, preds), float(total), {k: float(v) for k, v in per.items()}


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_state_dict_converts_strictly(case):
    sd = case["sd"]
    params, report = ok.from_official(sd, case["template"], case["model"].specs)
    assert report["missing"] == report["unexpected"] == report["mismatched"] == []
    assert report["loaded"] == len(sd)
    # And back: our exporter produces exactly the keys and shapes written above from the official modules.
    back = ok.to_official(params, case["model"].specs)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in sd.items()}
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_predictions_and_loss_match_official_numpy(case):
    preds, total, per = _ours(case, case["sd"])
    ref_preds, ref_mse, ref_total = case["ref"]
    for name, ref in ref_preds.items():
        assert preds[name].shape == ref.shape, name
        np.testing.assert_allclose(preds[name], ref, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(per[name], ref_mse[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    # The reference is not degenerate: every modality contributes a loss of order one.
    assert all(0.1 < v < 100 for v in ref_mse.values()), ref_mse


def _swap_q_v(sd):
    sd = dict(sd)
    key = "encoder.blocks.0.attn.qkv.weight"
    q, k, v = np.split(sd[key], 3, axis=0)
    sd[key] = np.concatenate([v, k, q])
    return sd


def _transpose_conv3d_hw(sd):
    sd = dict(sd)
    key = "encoder.patch_embed.proj.weight"
    sd[key] = np.ascontiguousarray(sd[key].transpose(0, 1, 2, 4, 3))  # (out, c, t, w, h): wrong layout
    return sd


def _contiguous_sensor_kernel(sd):
    """The phone Conv1d kernel with its 24 inputs read as (axis, sample) instead of (sample, axis)."""
    sd = dict(sd)
    key = "encoder.patch_embed_phone.proj.weight"
    w = sd[key]
    sd[key] = np.ascontiguousarray(w.reshape(D, 8, 3, 1).transpose(0, 2, 1, 3).reshape(D, 24, 1))
    return sd


@pytest.mark.parametrize("perturb", [_swap_q_v, _transpose_conv3d_hw, _contiguous_sensor_kernel],
                         ids=["qkv_q_v_swapped", "conv3d_h_w_transposed", "sensor_kernel_axis_major"])
def test_negative_control_wrong_layout_changes_loss(case, perturb):
    preds, total, _ = _ours(case, perturb(case["sd"]))
    ref_preds, _, ref_total = case["ref"]
    assert abs(total - ref_total) > 1e-3, (total, ref_total)
    # The predictions move far outside the parity tolerance too (measured: >= 0.18 max abs).
    assert max(np.abs(preds[n] - ref_preds[n]).max() for n in ref_preds) > 1e-2


def test_reference_sensor_tokens_are_strided():
    """Self-check of the reference patching: token p holds samples p, p+16, ..., p+112, axes fastest."""
    sensor = np.arange(SENSOR_LEN * SENSOR_AXES, dtype=np.float64).reshape(1, 1, SENSOR_LEN, 1, SENSOR_AXES)
    tokens = _sensor_patch_data(sensor)
    assert tokens.shape == (1, SENSOR_TOKENS, SENSOR_TOKEN_DIM)
    samples = 5 + SENSOR_TOKENS * np.arange(SENSOR_LEN // SENSOR_TOKENS)
    np.testing.assert_array_equal(tokens[0, 5], (samples[:, None] * SENSOR_AXES + np.arange(3)).ravel())
