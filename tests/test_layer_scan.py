"""model.scan: the scanned Transformer equals the per-layer one; layouts convert both ways; the layout
is handled where parameters cross runs (weight decay, load_params, model_init, resume)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax.core import host_memory, metrics, optim
from mumae_jax.steps import pretraining_step
from mumae_jax.trainers import pretraining
from mumae_jax.weights import pretrained
from mumae_jax.models import layer_stack, mae, masking, vit


def _scanned(params) -> bool:
    """True when some Transformer in `params` holds stacked layers."""
    return isinstance(params, dict) and (vit.SCANNED in params or any(_scanned(v) for v in params.values()))


def _inputs(model, batch=2, seed=0):
    inputs, _ = pretraining_step.dummy_inputs(model.specs, batch)
    rng = np.random.default_rng(seed)
    inputs = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in inputs.items()}
    return inputs, masking.draw_masks(jax.random.key(seed + 1), model.specs, batch)


def test_scanned_model_equals_per_layer_model_with_stacked_params():
    config = make_tiny_config()
    config.model.depth = 3
    plain = mae.from_config(config)
    config.model.scan = True
    scanned = mae.from_config(config)
    inputs, masks = _inputs(plain)
    # jitted throughout: one compilation per function is far cheaper on CPU than op-by-op dispatch
    params = jax.jit(lambda: plain.init({"params": jax.random.key(0)}, inputs, masks)["params"])()
    stacked = layer_stack.stack(params)
    assert _scanned(stacked) and not _scanned(params)
    assert stacked["encoder"][vit.SCANNED]["attn"]["qkv"]["kernel"].shape == (3, 64, 192)
    assert set(stacked["encoder"]) == {vit.SCANNED, "norm"}
    assert stacked["decoder_video"]["blocks"][vit.SCANNED]["mlp"]["fc1"]["kernel"].shape == (1, 32, 128)
    shapes = jax.eval_shape(lambda: scanned.init({"params": jax.random.key(0)}, inputs, masks)["params"])
    assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, stacked)
    a = jax.jit(plain.apply)({"params": params}, inputs, masks)
    b = jax.jit(scanned.apply)({"params": stacked}, inputs, masks)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-5)
    # gradients through the scan (and a rematerialised scan) are the per-layer gradients, stacked
    loss = lambda model: lambda p: sum(jnp.sum(v ** 2) for v in model.apply({"params": p}, inputs, masks).values())  # noqa: E731
    g_plain = layer_stack.stack(jax.device_get(jax.jit(jax.grad(loss(plain)))(params)))
    config.model.remat = "block"
    for model in (scanned, mae.from_config(config)):
        g = jax.jit(jax.grad(loss(model)))(stacked)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g, g_plain)
    back = layer_stack.unstack(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    for same, tree in ((layer_stack.unstack(params), params), (layer_stack.stack(stacked), stacked)):  # no-ops
        assert all(a is b for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(tree)))


def test_scanned_drop_path_uses_per_layer_rates_and_rngs():
    x = jax.random.normal(jax.random.key(0), (64, 5, 8))
    kw = dict(num_heads=2, mlp_dim=16, drop_path=0.5, final_norm=False, scan=True)
    one = vit.Transformer(depth=1, **kw)  # a single layer has rate 0: stochastic == deterministic
    p1 = one.init({"params": jax.random.key(0)}, x)["params"]
    np.testing.assert_array_equal(one.apply({"params": p1}, x),
                                  one.apply({"params": p1}, x, train=True, rngs={"dropout": jax.random.key(1)}))
    three = vit.Transformer(depth=3, **kw)  # rates 0, 0.25, 0.5
    p3 = three.init({"params": jax.random.key(0)}, x)["params"]
    det = three.apply({"params": p3}, x)
    s1, s2 = (three.apply({"params": p3}, x, train=True, rngs={"dropout": jax.random.key(k)}) for k in (1, 2))
    assert not np.allclose(det, s1) and not np.allclose(s1, s2)
    with pytest.raises(ValueError, match="block00..block01"):
        layer_stack.stack({"block00": {"w": np.zeros(2)}, "block02": {"w": np.zeros(2)}})


def test_weight_decay_mask_ignores_the_layer_axis():
    config = make_tiny_config()
    model = mae.from_config(config)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *_inputs(model))["params"])
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)  # the masks depend on shapes only
    mask_plain = optim.decay_mask(params)
    mask_scanned = optim.decay_mask(layer_stack.stack(params))
    assert mask_scanned["encoder"][vit.SCANNED]["attn"]["q_bias"] is False
    assert mask_scanned["encoder"][vit.SCANNED]["mlp"]["fc1"]["kernel"] is True
    assert mask_scanned["encoder"][vit.SCANNED]["norm1"]["scale"] is False
    # the scanned mask is the per-layer mask with the layers merged
    merged = layer_stack.stack(jax.tree.map(np.asarray, mask_plain))
    assert jax.tree.map(lambda m: bool(np.all(m)), merged) == mask_scanned


def test_scanned_run_loads_per_layer_and_resumes_only_scanned(tmp_path):
    config = make_tiny_config(total_steps=2, checkpoint_every_steps=2)
    config.model.scan = True
    config.evals.fewshot.update(every_steps=2, num_episodes=2)  # the probes read the live (scanned) params
    run = str(tmp_path / "scanned")
    out = pretraining.train_and_evaluate(config, run)
    assert _scanned(out["state"]["params"])
    assert [r["step"] for r in metrics.read_jsonl(os.path.join(run, "metrics.jsonl"))
            if "fewshot/prototype_accuracy" in r] == [2]
    loaded_config, params, step = pretrained.load_params(run)
    assert step == 2 and loaded_config.model.scan is False and not _scanned(params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params),
                 layer_stack.unstack(jax.device_get(out["state"]["params"])))
    with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["model"]["scan"] is True
    # resuming with the other layout is refused with a clear message
    flipped = make_tiny_config(total_steps=4, checkpoint_every_steps=2)
    with pytest.raises(ValueError, match="config.model.scan=True"):
        pretraining.train_and_evaluate(flipped, run)
    # a per-layer run starts from the scanned run's parameters (model_init converts the layout)
    flipped.total_steps = 1
    flipped.model_init = run
    started = pretraining.train_and_evaluate(flipped, str(tmp_path / "plain"))
    with open(tmp_path / "plain" / "model_init_report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert "encoder/block01/attn/qkv/kernel" in report["loaded"] and not report["kept_init"]
    assert not _scanned(started["state"]["params"])


def test_host_memory_figures():
    assert host_memory.release_freed() is True  # glibc (Linux CI)
    rss, peak = host_memory.rss_mb(), host_memory.peak_rss_mb()
    assert 0 < rss <= peak
