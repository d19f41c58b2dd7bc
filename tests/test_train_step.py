"""The jitted train step: 8 fake devices equal 1 device; the loss falls on a fixed batch; NaN guard."""
import jax
import numpy as np

from mumae_jax.core import optim, sharding
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae


def _batch(specs, n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        if s.kind == "video":  # smooth-ish frames so there is something to learn
            base = rng.normal(size=(n, 1, 2, 2, 3))
            x = np.repeat(np.repeat(base, 16, axis=2), 16, axis=3)
            out[s.name] = np.broadcast_to(x, (n,) + s.input_shape).astype(np.float32) + \
                0.1 * rng.normal(size=(n,) + s.input_shape).astype(np.float32)
        else:
            t = np.linspace(0, 1, s.input_shape[0])[None, :, None]
            out[s.name] = (0.5 + 0.4 * np.sin(2 * np.pi * (t * rng.uniform(1, 3, (n, 1, 3)) +
                                                            rng.uniform(size=(n, 1, 3))))).astype(np.float32)
    return out


def _setup(config, devices):
    model = mae.from_config(config)
    mesh = sharding.make_mesh(devices)
    tx, schedule = optim.make_optimizer(config, config.total_steps, config.warmup_steps)
    init, _, state_sh = pretraining_step.state_initializer(model, tx, jax.random.key(config.seed), mesh)
    state = init()
    step = pretraining_step.make_train_step(model, tx, schedule, config.seed, config.batch_size, mesh, state_sh)
    return model, mesh, state, step


def test_eight_devices_equal_one(tiny_config):
    assert jax.device_count() == 8
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        model, mesh, state, step = _setup(tiny_config, devices)
        batch = sharding.to_global(_batch(model.specs, tiny_config.batch_size), mesh)
        assert len(batch["video"].sharding.device_set) == len(devices)
        losses = []
        for _ in range(2):
            state, m = step(state, batch)
            losses.append(float(m["loss"]))
        results.append((losses, jax.device_get(state["params"])))
    (l1, p1), (l8, p8) = results
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p8)


def test_loss_falls_on_fixed_batch(tiny_config):
    tiny_config.total_steps = 60
    tiny_config.warmup_steps = 5
    model, mesh, state, step = _setup(tiny_config, jax.devices()[:1])
    batch = sharding.to_global(_batch(model.specs, tiny_config.batch_size), mesh)
    losses = []
    for _ in range(60):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses


def test_nonfinite_step_is_recorded_and_state_frozen(tiny_config):
    model, mesh, state, step = _setup(tiny_config, jax.devices()[:1])
    good = _batch(model.specs, tiny_config.batch_size)
    state, _ = step(state, sharding.to_global(good, mesh))
    before = jax.device_get(state["params"])
    counters = [x for x in jax.tree.leaves(jax.device_get(state["opt_state"])) if np.ndim(x) == 0]
    assert counters and all(int(c) == 1 for c in counters)  # optax's step counts
    bad = dict(good)
    bad["gyro"] = np.full_like(good["gyro"], np.nan)
    state, m = step(state, sharding.to_global(bad, mesh))
    assert not np.isfinite(float(m["loss"]))
    assert int(state["nonfinite_step"]) == 2 and int(state["step"]) == 1
    state, _ = step(state, sharding.to_global(good, mesh))  # later steps do not move the state either
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), before)
    assert int(state["nonfinite_step"]) == 2 and int(state["step"]) == 1
    after = [x for x in jax.tree.leaves(jax.device_get(state["opt_state"])) if np.ndim(x) == 0]
    assert [int(c) for c in after] == [int(c) for c in counters]  # the schedule did not advance


def test_lr_schedule_matches_official_formula():
    peak, end, warm, total = 1e-3, 1e-5, 5, 20
    sched = optim.lr_schedule(peak, end, warm, total)
    warm_ref = np.linspace(0, peak, warm)
    iters = np.arange(total - warm)
    cos_ref = end + 0.5 * (peak - end) * (1 + np.cos(np.pi * iters / len(iters)))
    ref = np.concatenate([warm_ref, cos_ref])
    np.testing.assert_allclose([float(sched(i)) for i in range(total)], ref, rtol=1e-5, atol=1e-10)


def test_weight_decay_mask(tiny_config):
    model = mae.from_config(tiny_config)
    inputs, masks = pretraining_step.dummy_inputs(model.specs)
    params = jax.eval_shape(model.init, jax.random.key(0), inputs, masks)["params"]
    m = optim.decay_mask(params)
    assert m["encoder"]["block00"]["attn"]["qkv"]["kernel"] is True
    assert m["encoder"]["block00"]["attn"]["q_bias"] is False
    assert m["encoder"]["block00"]["mlp"]["fc1"]["bias"] is False
    assert m["encoder"]["norm"]["scale"] is False
    assert m["mask_token"] is False  # 3-D, excluded by name
    assert m["embed_video"]["proj"]["kernel"] is True


def test_bf16_step_close_to_fp32(tiny_config):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        tiny_config.compute_dtype = dtype
        model, mesh, state, step = _setup(tiny_config, jax.devices()[:1])
        batch = sharding.to_global(_batch(model.specs, tiny_config.batch_size), mesh)
        state, m = step(state, batch)
        losses[dtype] = float(m["loss"])
        assert state["params"]["mask_token"].dtype == np.float32
    assert np.isfinite(losses["bfloat16"])
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.02 * losses["float32"], losses
