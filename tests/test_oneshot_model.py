"""The assembled one-shot model and its episodic step: stage shapes on real episodes, batched tasks equal
accumulated gradients (and sequential BatchNorm statistics), pretrained initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from mumae_jax.configs import oneshot as oneshot_config
from conftest import make_tiny_config
from mumae_jax.core import sharding
from mumae_jax.steps import episodic_step
from mumae_jax.data import episode_input, episodes, splits, synthetic
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.models import cam, mae, oneshot
from mumae_jax.steps.pretraining_step import dummy_inputs

SYN = {"name": "synthetic", "split": "novel", "num_subjects": 2, "num_sessions": 1, "num_cameras": 2, "seed": 0}


def tiny_oneshot_config(**episodes_kw):
    c = oneshot_config.get_config("runlocal,init=random,recipe=paper")
    c.episodes.update(num_frames=2, image_size=32, resize_to=36, **episodes_kw)
    c.model.update(fused_dim=64, channels=16, sensor_dim=8, mae_drop_path=0.1, video_drop_path=0.1)
    return c


def build(c=None):
    from mumae_jax.trainers import oneshot_training

    c = c or tiny_oneshot_config()
    return oneshot_training.build_model(c, make_tiny_config())


def real_episodes(protocol="official", n=2, num_frames=2):
    ds = synthetic.SyntheticMMAct(num_subjects=2, num_sessions=1, num_cameras=2)
    lst = episodes.make_episode_list(ds.clips(synthetic.NOVEL_CLASSES), splits.mumae_split3(), part="novel",
                                     protocol=protocol, num_episodes=n, seed=0)
    geometry = ClipGeometry(num_frames=num_frames, image_size=32, resize_to=36, sensor_length=128,
                            sensors=synthetic.SENSORS)
    it = episode_input.build_episode_input(SYN, lst, geometry, train=False)
    out = [next(it) for _ in range(n)]
    it.close()
    return [{k: v for k, v in e.items() if k != "episode"} for e in out]


@pytest.mark.parametrize("protocol,num_query", [("official", 1), ("trx", 5)])
def test_every_stage_has_the_documented_shape_on_real_episodes(protocol, num_query):
    model = build()
    ep = real_episodes(protocol, n=1)[0]
    n = 5 + num_query
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, ep)  # jitted: one compilation, not one per op
    samples = oneshot.episode_samples(ep, ("video",) + model.sensors)
    assert samples["video"].shape == (n, 2, 32, 32, 3) and samples["gyro"].shape == (n, 128, 3)

    @jax.jit
    def stages(variables, samples, ep):
        mae_in = {s.name: samples[s.name] for s in model.mae.specs}
        return (model.apply(variables, samples, False, method=model.unimodal),
                model.apply(variables, mae_in, method=lambda m, x: m.mae(x)),
                model.apply(variables, samples, method=model.features), model.apply(variables, ep))

    u, rep, f, out = stages(variables, samples, ep)
    assert u["video"].shape == (n, 64) and all(u[s].shape == (n, 8) for s in model.sensors)
    assert rep.shape == (n, 64)
    assert f.shape == (n, 64)
    assert cam.to_channel_positions(f, 16).shape == (n, 16, 1, 2, 2)
    assert out["logits"].shape == (num_query, 5) and out["cls_scores"].shape == (num_query, 5, 4)
    assert out["global_logits"].shape == (num_query, 33, 4)
    assert np.isfinite(float(oneshot.episode_loss(out, ep)))
    # the channel-position view is the official reshape of the fused features (docs/official_code.md §3.3): index c*4 + pos
    np.testing.assert_array_equal(cam.to_channel_positions(f, 16)[:, 3, 0, 1, 0], f[:, 3 * 4 + 2])


def _tasks(n):
    eps = real_episodes("official", n=2)
    rng = np.random.default_rng(0)
    out = []
    for t in range(n):  # distinct tasks: perturb the real episodes
        e = eps[t % 2]
        out.append({k: (v + 0.05 * t * rng.standard_normal(v.shape).astype(v.dtype)
                        if v.dtype == np.float32 else v) for k, v in e.items()})
    return out


def test_batched_tasks_equal_accumulated_per_task_gradients():
    """8 tasks in one jitted step == the official loop: backward per task on loss/8, one SGD step,
    running BN statistics updated task after task (the official 32 tasks behave alike; 8 keep CI short); the
    same with the tasks run as a scan over 4 chunks (task_chunks=4). One reference serves both."""
    # CAM's softmax(·/0.025) turns float32 rounding (summation order) into ~1e-3 relative gradient
    # noise; a milder temperature keeps the comparison sharp. The batching under test is unchanged.
    c = tiny_oneshot_config()
    c.model.temperature = 0.5
    model, num_tasks, lr = build(c), 8, 1.0  # lr 1: the update is the gradient, not lost in rounding
    tasks = _tasks(num_tasks)
    mesh = sharding.make_mesh()
    tx = optax.sgd(lr)
    init, _, state_sh = episodic_step.state_initializer(model, tx, jax.random.key(1), mesh, tasks[0])
    state = init()
    params0 = jax.device_get(state["params"])
    stats0 = jax.device_get(state["batch_stats"])
    # batch_stats start non-trivial so the fold is tested on a general value
    stats0 = jax.tree.map(lambda x: x + 0.3 if x.dtype == np.float32 else x, stats0)
    state = {**state, "batch_stats": jax.device_put(stats0, state_sh["batch_stats"])}
    batch = sharding.to_global(episodic_step.stack_tasks(tasks), mesh)
    results = {}
    for task_chunks in (1, 4):
        step = episodic_step.make_train_step(model, tx, seed=3, num_tasks=num_tasks, mesh=mesh, state_sh=state_sh,
                                             task_chunks=task_chunks)
        copy = jax.device_put(jax.device_get(state), state_sh)  # the step donates its input state
        results[task_chunks] = jax.device_get(step(copy, batch))

    keys = jax.random.split(jax.random.fold_in(jax.random.key(3), 0), num_tasks)

    @jax.jit
    def one(params, stats, ep, key):
        def loss_fn(p):
            out, upd = model.apply({"params": p, "batch_stats": stats}, ep, train=True, rngs={"dropout": key},
                                   mutable=["batch_stats"])
            return oneshot.episode_loss(out, ep) / num_tasks, upd["batch_stats"]
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    acc, stats, total = jax.tree.map(np.zeros_like, params0), stats0, 0.0
    for t in range(num_tasks):
        (loss, stats), g = one(params0, stats, tasks[t], keys[t])
        acc = jax.tree.map(np.add, acc, g)
        total += float(loss)
    expected = jax.tree.map(lambda p, g: p - lr * g, params0, acc)
    for task_chunks, (new, m) in results.items():
        np.testing.assert_allclose(float(m["loss"]), total, rtol=1e-5)
        np.testing.assert_allclose(float(m["grad_norm"]), float(optax.tree.norm(acc)), rtol=2e-4)
        # every leaf's update agrees to 1% in norm (dropping one task of 8 moves it by ~12%); float32
        # summation order alone gives ~1e-4, more in the attention keys, whose exact gradient cancels
        flat_new = traverse_util.flatten_dict(jax.device_get(new["params"]), sep="/")
        flat_old = traverse_util.flatten_dict(params0, sep="/")
        for k, v in traverse_util.flatten_dict(expected, sep="/").items():
            want, got = v - flat_old[k], flat_new[k] - flat_old[k]
            assert np.linalg.norm(got - want) <= 1e-2 * np.linalg.norm(want) + 1e-6, (task_chunks, k)
        flat_stats = traverse_util.flatten_dict(jax.device_get(new["batch_stats"]), sep="/")
        for k, v in traverse_util.flatten_dict(jax.device_get(stats), sep="/").items():
            np.testing.assert_allclose(flat_stats[k], v, rtol=1e-5, atol=1e-6, err_msg=f"{task_chunks} {k}")
        assert int(flat_stats["classifier/cam/meta/bn/count"]) == 3 * num_tasks  # 3 BN updates per task


def test_fold_batch_stats_replays_sequential_updates():
    m, old = 0.1, {"bn": {"mean": jnp.asarray([1.0, -2.0]), "var": jnp.asarray([2.0, 0.5]), "count": jnp.asarray(4)}}
    batch = np.asarray([[0.5, 0.1], [3.0, -1.0], [-2.0, 4.0]], np.float32)
    # two updates per task from the same start
    per_task = {"bn": {"mean": jnp.stack([(1 - m) ** 2 * old["bn"]["mean"] + (1 - m) * m * b + m * b for b in batch]),
                       "var": jnp.stack([old["bn"]["var"]] * 3), "count": jnp.asarray([6, 6, 6])}}
    got = episodic_step.fold_batch_stats(old, per_task, m)
    r = np.asarray(old["bn"]["mean"])
    for b in batch:
        for _ in range(2):
            r = (1 - m) * r + m * b
    np.testing.assert_allclose(got["bn"]["mean"], r, rtol=1e-6)
    np.testing.assert_allclose(got["bn"]["var"], 0.81 ** 3 * np.asarray(old["bn"]["var"])
                               + sum(0.81 ** k for k in range(3)) * 0.19 * np.asarray(old["bn"]["var"]), rtol=1e-6)
    assert int(got["bn"]["count"]) == 10


def test_pretrained_encoder_is_loaded_strictly():
    from mumae_jax.trainers import oneshot_training

    pcfg = make_tiny_config()
    pre = mae.from_config(pcfg)
    inputs, masks = dummy_inputs(pre.specs)
    pparams = jax.jit(pre.init)({"params": jax.random.key(7)}, inputs, masks)["params"]
    c = tiny_oneshot_config()
    c.init.update(mae="pretrained", video="mae")
    model = oneshot_training.build_model(c, pcfg)
    params = jax.jit(model.init)({"params": jax.random.key(0)}, real_episodes(n=1)[0])["params"]
    new, report = oneshot_training.pretrained_params(c, params, pparams)
    np.testing.assert_array_equal(new["mae"]["encoder"]["block01"]["attn"]["qkv"]["kernel"],
                                  pparams["encoder"]["block01"]["attn"]["qkv"]["kernel"])
    np.testing.assert_array_equal(new["mae"]["embed_gyro"]["proj"]["kernel"], pparams["embed_gyro"]["proj"]["kernel"])
    assert report["mae"]["kept_init"] == ["fc_norm/bias", "fc_norm/scale"]
    assert "encoder/norm/scale" in report["mae"]["ignored"] and "mask_token" in report["mae"]["ignored"]
    np.testing.assert_array_equal(new["video"]["patch_embed"]["proj"]["kernel"],
                                  np.asarray(pparams["embed_video"]["proj"]["kernel"]).sum(0))
    np.testing.assert_array_equal(new["video"]["block00"]["space_attn"]["qkv"]["kernel"],
                                  pparams["encoder"]["block00"]["attn"]["qkv"]["kernel"])
    # a pretraining run of another width cannot silently leave the encoder random
    wide = make_tiny_config()
    wide.model.update(width=96, num_heads=2)
    wparams = jax.jit(mae.from_config(wide).init)({"params": jax.random.key(7)}, inputs, masks)["params"]
    with pytest.raises(ValueError, match="encoder/block00/attn/qkv/kernel"):
        oneshot_training.pretrained_params(c, params, wparams)


def test_frozen_submodules_get_no_gradient_and_no_update_the_rest_the_full_models_update():
    """freeze=('mae', 'video'): those parameters stay bit-identical; the others move exactly as in a step
    without freezing (their gradient does not depend on whether the frozen ones could move)."""
    c = tiny_oneshot_config()
    c.model.temperature = 0.5
    model, num_tasks, mesh = build(c), 8, sharding.make_mesh()  # tasks sharded over the test's 8 devices
    tasks = sharding.to_global(episodic_step.stack_tasks(_tasks(num_tasks)), mesh)
    params = {}
    for freeze in ((), ("mae", "vid*")):
        shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, _tasks(1)[0])["params"])
        names = episodic_step.frozen_names(shapes, freeze)
        tx = episodic_step.make_optimizer("sgd", 1.0, names)
        init, _, state_sh = episodic_step.state_initializer(model, tx, jax.random.key(1), mesh, _tasks(1)[0])
        state = init()
        params0 = jax.device_get(state["params"])
        step = episodic_step.make_train_step(model, tx, 3, num_tasks, mesh, state_sh, freeze=names)
        params[freeze] = jax.device_get(step(state, tasks)[0]["params"])
    assert names == {"mae", "video"}
    frozen, full = params[("mae", "vid*")], params[()]
    for k in ("mae", "video"):
        jax.tree.map(np.testing.assert_array_equal, frozen[k], params0[k])
        assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, full[k], params0[k])))  # negative control
    for k in ("fusion", "classifier", "cnn_gyro"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), frozen[k], full[k])
    with pytest.raises(ValueError, match="matches no submodule"):
        episodic_step.frozen_names(shapes, ("decoder",))
    with pytest.raises(ValueError, match="optimizer"):
        episodic_step.make_optimizer("lamb", 0.1)


def test_episode_head_on_clips_encoded_elsewhere_gives_the_models_logits():
    """Eval mode: encoding each clip on its own (another batch) and running the episode head gives the
    model's logits, so a list can be scored from one encoding per distinct clip."""
    model = build()
    ep = real_episodes("trx", n=1)[0]
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, ep)
    want = jax.jit(lambda v, e: model.apply(v, e, with_global=False)["logits"])(variables, ep)
    samples = oneshot.episode_samples(ep, ("video",) + model.sensors)
    n = samples["video"].shape[0]
    encode = jax.jit(lambda v, s: model.apply(v, s, False, method=model.encode))
    parts = [encode(variables, {k: v[a:b] for k, v in samples.items()}) for a, b in ((0, 3), (3, n))]  # two
    encoded = {k: jnp.concatenate([e[k] for e in parts]) for k in parts[0]}  # batches of other sizes than the episode's
    assert sorted(encoded) == sorted(("mae", "video") + model.sensors)
    head = jax.jit(lambda v, e, labels: model.apply(v, e, labels, method=model.classify)["logits"])
    got = head(variables, encoded, ep["support_labels"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # negative control: the head does mix the episode's clips (another support clip changes a query's logits)
    swapped = {k: v.at[0].set(v[1]) for k, v in encoded.items()}
    moved = head(variables, swapped, ep["support_labels"])
    assert np.abs(np.asarray(moved) - np.asarray(want)).max() > 1e-4

    # model.mae_dropout=1: in training every episode's R is zeroed before the fusion; eval keeps it
    c = tiny_oneshot_config()
    c.model.update(mae_dropout=1.0, mae_drop_path=0.0, video_drop_path=0.0)  # rate 0: train encodes as eval
    dropped = build(c)
    train_kw = dict(rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    got = jax.jit(lambda v, e: dropped.apply(v, e, train=True, **train_kw)[0]["logits"])(variables, ep)
    labels = (ep["support_labels"], ep["query_labels"], True)
    train_head = jax.jit(lambda v, e: dropped.apply(v, e, *labels, method=dropped.classify, **train_kw)[0]["logits"])
    zeroed, kept = train_head(variables, {**encoded, "mae": 0 * encoded["mae"]}), train_head(variables, encoded)
    np.testing.assert_allclose(got, zeroed, rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(kept) - np.asarray(zeroed)).max() > 1e-4  # R matters when kept
    evaluated = jax.jit(lambda v, e: dropped.apply(v, e, with_global=False)["logits"])(variables, ep)
    np.testing.assert_array_equal(evaluated, want)  # eval: kept
    # a call's rate (the trainer's schedule, traced) overrides the attribute: 1 zeroes R, 0 keeps it
    scheduled = jax.jit(lambda v, e, r: dropped.apply(v, e, train=True, mae_dropout=r, **train_kw)[0]["logits"])
    np.testing.assert_allclose(scheduled(variables, ep, 1.0), zeroed, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scheduled(variables, ep, 0.0), kept, rtol=1e-4, atol=1e-5)


def test_mae_dropout_schedule_zeroes_r_for_the_delay_then_uses_the_rate():
    """model.mae_delay_tasks: every episode's R zeroed (rate 1) for the first updates, then model.mae_dropout."""
    sched = episodic_step.mae_dropout_schedule(0.25, 2)
    assert [float(sched(jnp.int32(s))) for s in range(4)] == [1.0, 1.0, 0.25, 0.25]
    assert episodic_step.mae_dropout_schedule(0.25, 0) is None  # no delay: the model's constant rate
    with pytest.raises(ValueError, match="0 <= mae_dropout <= 1"):
        episodic_step.mae_dropout_schedule(1.5, 2)


def test_late_fusion_adds_the_mae_features_prototype_scores_at_evaluation_only():
    """model.fusion='late': the fusion has no R input; eval logits = log_softmax(CAM logits) + w·cos(R_query,
    class mean of L2-normalised support R) (NumPy reference); training never runs the MAE encoder."""
    c = tiny_oneshot_config()
    c.model.update(fusion="late", late_weight=2.0, mae_drop_path=0.0, video_drop_path=0.0)
    model = build(c)
    ep = real_episodes("trx", n=1)[0]
    variables = jax.jit(model.init)({"params": jax.random.key(0)}, ep)
    gates = [k[-1] for k in traverse_util.flatten_dict(variables["params"]["fusion"]) if k[-1].startswith("gate_")]
    assert sorted(gates) == sorted(f"gate_{n}" for n in ("video",) + model.sensors)  # concat adds gate_mae
    got = jax.jit(lambda v, e: model.apply(v, e, with_global=False)["logits"])(variables, ep)
    enc = jax.jit(lambda v, s: model.apply(v, s, False, method=model.encode))(
        variables, oneshot.episode_samples(ep, ("video",) + model.sensors))
    sl = ep["support_labels"]
    head = jax.jit(lambda v, e: model.apply(v, e, sl, method=model.classify)["logits"])
    cam_only = np.asarray(head(variables, {**enc, "mae": 0 * enc["mae"]}))  # cos with a zero R is 0
    r = np.asarray(enc["mae"], np.float64)
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    s = len(sl)
    protos = np.stack([r[:s][np.asarray(sl) == k].mean(0) for k in range(5)])
    protos /= np.linalg.norm(protos, axis=-1, keepdims=True)
    want = cam_only + 2.0 * r[s:] @ protos.T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want - cam_only).max() > 1e-2  # negative control: R's scores do move the logits
    # the evaluator's weight grid (evals.episodes.late_weights): one prediction row per weight from one head run
    grid = (0.0, 2.0, 100.0)
    mesh = sharding.make_mesh(jax.devices()[:1])  # one episode
    _, head_grid = episodic_step.make_clip_eval_steps(model, mesh, sharding.replicated(mesh), grid)
    state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    pred = np.asarray(head_grid(state, {**{k: v[None] for k, v in enc.items()}, "support_labels": sl[None]}))
    want_pred = np.stack([(cam_only + w * r[s:] @ protos.T).argmax(-1) for w in grid])
    np.testing.assert_array_equal(pred, want_pred[None])  # [E=1, K=3, Q]
    assert (want_pred[0] != want_pred[2]).any()  # negative control: the weights' predictions differ
    with pytest.raises(ValueError, match="need model.fusion='late'"):
        episodic_step.make_clip_eval_steps(build(), mesh, sharding.replicated(mesh), grid)
    # training: NaN MAE weights change nothing (the encoder does not run), and the logits are the CAM's own
    nan = {**variables, "params": {**variables["params"],
                                   "mae": jax.tree.map(lambda x: x * np.nan, variables["params"]["mae"])}}
    kw = dict(train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
    train = jax.jit(lambda v, e: model.apply(v, e, **kw)[0]["logits"])
    np.testing.assert_allclose(train(nan, ep), train(variables, ep), rtol=1e-6)
    assert np.isfinite(np.asarray(train(nan, ep))).all()


def test_mae_pooling_modality_gives_one_block_per_modality_to_the_fusion():
    """model.mae_pooling='modality': R is one fc_norm'd block per modality ([N, 5·D] here), which the
    fusion takes as its query input; 'mean' (official) keeps R [N, D]. Shapes only (no compilation)."""
    ep = real_episodes("trx", n=1)[0]
    shapes = {}
    for pooling in ("mean", "modality"):
        c = tiny_oneshot_config()
        c.model.mae_pooling = pooling
        model = build(c)
        variables = jax.eval_shape(lambda m=model: m.init({"params": jax.random.key(0)}, ep))
        enc = jax.eval_shape(lambda v, m=model: m.apply(v, oneshot.episode_samples(ep, ("video",) + m.sensors),
                                                         method=m.encode), variables)
        out = jax.eval_shape(lambda v, m=model: m.apply(v, ep), variables)
        assert out["logits"].shape == (5, 5)
        shapes[pooling] = (enc["mae"].shape, sorted(k for k in variables["params"]["mae"] if k.startswith("fc_norm")))
    assert shapes["mean"] == ((10, 64), ["fc_norm"])
    assert shapes["modality"] == ((10, 5 * 64), sorted(f"fc_norm_{n}" for n in ("video",) + synthetic.SENSORS))
