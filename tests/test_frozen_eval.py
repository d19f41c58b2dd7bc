"""Frozen-encoder few-shot evaluation: features per clip, pooling, feature depth, modality groups,
determinism, checkpoint loading, CLI."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import make_tiny_config
from mumae_jax.core import config_files
from mumae_jax.evaluators import frozen, frozen_features
from mumae_jax.weights import pretrained
from mumae_jax.data import episode_input, sources, splits
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.models import mae_features, vit

GEOM = dict(num_frames=4, image_size=32, resize_to=40, sensor_length=128)  # keyword overrides of the defaults
SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
CLIP = ClipGeometry(**GEOM, sensors=SENSORS)  # the same, as the input builders take it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/pretrain.py:runlocal shrunk to make_tiny_config's encoder and data, on the command line
TINY_CLI = [f"--config={ROOT}/configs/pretrain.py:runlocal", "--config.model.width=64", "--config.model.depth=2",
            "--config.model.num_heads=2", "--config.model.mlp_dim=128", "--config.modality.video.num_frames=4",
            "--config.modality.video.image_size=32", "--config.data.num_subjects=2", "--config.data.num_sessions=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mumae_jax.trainers import pretraining

    workdir = str(tmp_path_factory.mktemp("pre"))
    pretraining.train_and_evaluate(make_tiny_config(total_steps=2), workdir)
    return workdir


@pytest.fixture(scope="module")
def random_encoder():
    config = make_tiny_config()
    encoder, params = frozen_features.from_pretrain_config(config, seed=1, **GEOM)
    return config, encoder, params


def test_clip_features_equal_the_encoder_on_that_clip(random_encoder):
    config, encoder, params = random_encoder
    data = {**config.data.to_dict(), "split": "all"}
    names = sorted(c.name for c in sources.get_source(config.data).records())[:3]
    feats = frozen_features.extract_features(encoder, params, data, names, CLIP, batch_size=8)
    assert feats.shape == (3, 64)
    it = episode_input.build_clip_input(data, names, CLIP, batch_size=8)
    b = next(it)
    it.close()
    direct = encoder.apply({"params": params}, {s.name: b["video" if s.kind == "video" else s.name][:3]
                                                for s in encoder.specs}, train=False)
    np.testing.assert_allclose(feats, np.asarray(direct), rtol=1e-5, atol=1e-5)


def test_evaluate_episodes_is_deterministic(random_encoder):
    config, encoder, params = random_encoder
    elist = frozen.draw_episode_list(config.data, part="novel", num_episodes=6, seed=3)
    runs = [frozen.evaluate_episodes(encoder, params, config.data, elist, CLIP,
                                          probes=("prototype", "knn", "ridge"), batch_size=16) for _ in range(2)]
    for p in ("prototype", "knn", "ridge"):
        assert runs[0][p] == runs[1][p] and runs[0][p]["num_queries"] == 6
        assert 0 <= runs[0][p]["accuracy"] <= 100
    assert runs[0]["num_clips"] == len({c for e in elist for c in (*e.support, *e.query)})


def test_from_pretrain_run_loads_the_checkpoint_weights(run_dir):
    encoder, params, step = frozen_features.from_pretrain_run(run_dir, **GEOM)
    _, mae_params, ck_step = pretrained.load_params(run_dir)
    assert step == ck_step == 2
    flat, src = (traverse_util.flatten_dict(jax.device_get(t), sep="/") for t in (params, mae_params))
    loaded = [k for k in flat if not k.startswith("fc_norm/")]
    assert loaded and all(k.startswith(("embed_", "encoder/")) for k in loaded)
    for k in loaded:
        np.testing.assert_array_equal(flat[k], src[k])


def test_cli_writes_accuracies(run_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert frozen.main(["--pretrain_workdir", run_dir, "--part", "novel", "--num_episodes", "4",
                             "--probes", "prototype,ridge", "--batch_size", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint step 2" in printed and "prototype" in printed
    res = json.loads(out.read_text())
    assert res["step"] == 2 and res["geometry"]["num_frames"] == 4 and res["geometry"]["image_size"] == 32
    for p in ("prototype", "ridge"):
        assert 0 <= res[p]["accuracy"] <= 100 and res[p]["num_queries"] == 4


# -- the feature: pooling and depth -------------------------------------------------------------------

def _inputs(encoder, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {s.name: rng.uniform(size=(n, *s.input_shape)).astype(np.float32) for s in encoder.specs}


def _tokens(encoder, params, x):
    """The encoder's output tokens [N, tokens, D] (before pooling)."""
    _, state = encoder.apply({"params": params}, x, capture_intermediates=lambda m, _: m.name == "encoder",
                             mutable=["intermediates"])
    return np.asarray(state["intermediates"]["encoder"]["__call__"][0], np.float64)


def _layer_norm(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + vit.LN_EPS) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def test_mean_pooling_is_the_default_and_unchanged(random_encoder):
    _, encoder, params = random_encoder
    assert encoder.pooling == "mean" and encoder.feature_depth == 0 and set(params) >= {"fc_norm"}
    x = _inputs(encoder)
    tokens = _tokens(encoder, params, x).astype(np.float32)
    # the computation before pooling options existed: mean over all tokens, then fc_norm
    before = nn.LayerNorm(epsilon=vit.LN_EPS).apply({"params": params["fc_norm"]}, jnp.mean(tokens, axis=1))
    np.testing.assert_array_equal(np.asarray(encoder.apply({"params": params}, x)), np.asarray(before))


def test_modality_pooling_matches_a_numpy_reference(random_encoder):
    config, encoder, params = random_encoder
    enc = encoder.clone(pooling="modality")
    new, report = mae_features.load_pretrained(frozen_features.init_params(enc), params)
    assert report["kept_init"] == sorted(f"fc_norm_{s.name}/{k}" for s in enc.specs for k in ("bias", "scale"))
    fresh = np.asarray(enc.apply({"params": new}, _inputs(enc)))
    video_sq = (fresh[:, :64] ** 2).sum(-1)  # the video block and the four sensor blocks weigh the same
    np.testing.assert_allclose((fresh[:, 64:] ** 2).sum(-1), video_sq, rtol=1e-3)
    rng = np.random.default_rng(1)  # per-modality LayerNorm parameters that differ from the fresh ones
    for s in enc.specs:
        new[f"fc_norm_{s.name}"] = {k: rng.normal(size=64).astype(np.float32) for k in ("scale", "bias")}
    x = _inputs(enc)
    got = np.asarray(enc.apply({"params": new}, x))
    assert got.shape == (3, 5 * 64) and enc.feature_dim == 5 * 64
    tokens, start, blocks = _tokens(enc, new, x), 0, {}
    for s in enc.specs:
        weight = 1.0 if s.kind == "video" else 0.5  # 1/sqrt(1 video), 1/sqrt(4 sensors)
        blocks[s.name] = _layer_norm(tokens[:, start:start + s.num_tokens].mean(1), new[f"fc_norm_{s.name}"]) * weight
        start += s.num_tokens
    assert start == tokens.shape[1] and [s.name for s in enc.specs] == ["video", *SENSORS]
    ref = np.concatenate([blocks[n] for n in ("video", *SENSORS)], -1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    swapped = np.concatenate([blocks[n] for n in ("video", "acc_watch", "acc_phone", "gyro", "orientation")], -1)
    assert not np.allclose(got, swapped, rtol=1e-2, atol=1e-3)  # the spec order matters


def test_tokens_pooling_keeps_the_layout(random_encoder):
    _, encoder, params = random_encoder
    enc = encoder.clone(pooling="tokens")
    new, report = mae_features.load_pretrained(frozen_features.init_params(enc), params)
    assert report["kept_init"] == []  # no parameters of its own
    x = _inputs(enc)
    got = np.asarray(enc.apply({"params": new}, x))
    tokens, start, blocks = _tokens(enc, new, x), 0, []
    assert got.shape == (3, tokens.shape[1] * 64) and enc.feature_dim == got.shape[1]
    for s in enc.specs:
        flat = tokens[:, start:start + s.num_tokens].reshape(3, -1)
        start += s.num_tokens
        per_kind = 1 if s.kind == "video" else 4
        blocks.append(flat / np.linalg.norm(flat, axis=1, keepdims=True) * np.sqrt(64 / per_kind))
    np.testing.assert_allclose(got, np.concatenate(blocks, -1), rtol=1e-4, atol=1e-5)
    # negative control: the layout matters (tokens of the video block in another order differ)
    v = blocks[0].reshape(3, -1, 64)
    assert not np.allclose(got[:, :blocks[0].shape[1]], v[:, ::-1].reshape(3, -1), atol=1e-3)


def test_feature_depth_is_the_output_of_the_first_blocks(random_encoder):
    _, encoder, params = random_encoder
    enc = encoder.clone(feature_depth=1)
    new, report = mae_features.load_pretrained(frozen_features.init_params(enc), params)
    assert "encoder/block01/mlp/fc1/kernel" in report["ignored"] and "encoder/block01" not in new["encoder"]
    x = _inputs(enc)
    shallow = encoder.clone(depth=1)  # a 1-block encoder with the first block of `params`
    ref = shallow.apply({"params": {**params, "encoder": {"block00": params["encoder"]["block00"]}}}, x)
    got = np.asarray(enc.apply({"params": new}, x))
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, np.asarray(encoder.apply({"params": params}, x)), atol=1e-3)
    with pytest.raises(ValueError, match="feature_depth=3"):
        encoder.clone(feature_depth=3).apply({"params": params}, x)


# -- modality groups -----------------------------------------------------------------------------------

def test_modality_groups():
    config = make_tiny_config()
    groups = frozen_features.modality_groups(config, "video, sensors,all,gyro+acc_watch,video+gyro")
    assert groups == {"video": ("video",), "sensors": SENSORS, "all": ("video", *SENSORS),
                      "gyro+acc_watch": ("acc_watch", "gyro"), "video+gyro": ("video", "gyro")}
    for bad, msg in (("all,acc_wrist", "'acc_wrist'.*acc_phone, acc_watch"), ("all,all", "twice"),
                     ("video,", "empty"), ("gyro+", "unknown modality ''")):
        with pytest.raises(ValueError, match=msg):
            frozen_features.modality_groups(config, bad)


def test_sensor_group_of_a_time_aligned_model_needs_no_video():
    """A sensors-only feature encoder of a time-aligned run: its masks are aligned to a video it does not
    have, which is irrelevant unmasked; the token layout (contiguous patching) is kept."""
    config = make_tiny_config()
    for s in SENSORS:
        config.modality[s].update(mask_type="time_aligned", align_to="video", patching="contiguous")
    specs = mae_features.oneshot_specs(config, num_frames=2, modalities=SENSORS)
    assert [s.name for s in specs] == list(SENSORS) and {s.patching for s in specs} == {"contiguous"}
    assert {s.align_to for s in specs} == {""}
    with_video = mae_features.oneshot_specs(config, num_frames=2)
    assert {s.align_to for s in with_video if s.kind == "sensor"} == {"video"}  # the full model keeps it


def test_groups_feed_each_encoder_only_its_modalities(random_encoder, monkeypatch):
    config, encoder, params = random_encoder
    models = frozen_features.group_encoders(config, "video,sensors,all", CLIP, seed=1)
    flat = {g: traverse_util.flatten_dict(p, sep="/") for g, (_, p) in models.items()}
    assert all(np.array_equal(flat["sensors"][k], flat["all"][k]) for k in flat["sensors"] if "fc_norm" not in k)
    data = {**config.data.to_dict(), "split": "all"}
    names = sorted(c.name for c in sources.get_source(config.data).records())[:3]
    feats = frozen_features.extract_group_features(models, data, names, CLIP, batch_size=8)
    # one random init shared by the groups: the 'all' group is the seed-1 encoder of every modality
    np.testing.assert_allclose(feats["all"], frozen_features.extract_features(encoder, params, data, names,
                                                                          CLIP, batch_size=8), rtol=1e-5, atol=1e-5)
    it = episode_input.build_clip_input(data, names, CLIP, batch_size=8)
    b = next(it)
    it.close()
    enc_s, p_s = models["sensors"]
    np.testing.assert_allclose(feats["sensors"], enc_s.apply({"params": p_s}, {s: b[s][:3] for s in SENSORS}),
                               rtol=1e-5, atol=1e-5)
    real = episode_input.build_clip_input

    def other_video(*args, **kw):  # the same clips with different frames
        it = real(*args, **kw)
        try:
            for b in it:
                yield {**b, "video": np.random.default_rng(0).uniform(size=b["video"].shape).astype(np.float32)}
        finally:
            it.close()

    monkeypatch.setattr(episode_input, "build_clip_input", other_video)
    again = frozen_features.extract_group_features(models, data, names, CLIP, batch_size=8)
    np.testing.assert_array_equal(again["sensors"], feats["sensors"])
    for g in ("video", "all"):
        assert not np.allclose(again[g], feats[g], atol=1e-3)


def test_cli_random_init_from_a_config_groups_and_queries(random_encoder, tmp_path, capsys):
    config, encoder, params = random_encoder
    out = tmp_path / "r.json"
    assert frozen.main([*TINY_CLI, "--random_init", "--init_seed", "1", "--modalities", "video,sensors,all",
                                 "--protocol", "trx", "--queries", "5", "--num_episodes", "2", "--resize_to", "40",
                                 "--probes", "prototype,ridge", "--batch_size", "16", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "random init, seed 1" in lines[0] and "2 episodes, 10 queries" in lines[0]
    assert lines[1].split() == ["group", "prototype", "ridge", "modalities"]
    assert [line.split()[0] for line in lines[3:]] == ["video", "sensors", "all"]
    res = json.loads(out.read_text())
    assert res["pretrain_workdir"] is None and res["step"] is None and res["config"].endswith("pretrain.py:runlocal")
    assert list(res["groups"]) == ["video", "sensors", "all"] and "prototype" not in res
    assert res["modalities"]["sensors"] == list(SENSORS) and res["num_queries"] == 10 and res["num_episodes"] == 2
    elist = frozen.draw_episode_list(config.data, protocol="trx", queries=5, num_episodes=2)
    assert sum(len(e.query) for e in elist) == 10
    ref = frozen.evaluate_episodes(encoder, params, config.data, elist, CLIP, probes=("prototype", "ridge"),
                                        batch_size=16)  # the tiny config's seed-1 encoder
    for p in ("prototype", "ridge"):
        assert res["groups"]["all"][p] == ref[p] and ref[p]["num_queries"] == 10
        assert f"{ref[p]['accuracy']:.2f} ± {ref[p]['ci95']:.2f}" in lines[5]


def test_cli_needs_exactly_one_of_workdir_and_config(tmp_path, capsys):
    run_dir = str(tmp_path)  # every check fails before the run is read
    for argv, msg in (([], "exactly one of --pretrain_workdir"),
                      (["--pretrain_workdir", run_dir, *TINY_CLI[:1], "--random_init"], "exactly one"),
                      (TINY_CLI[:1], "add --random_init"), (["--pretrain_workdir", run_dir, TINY_CLI[1]], "overrides")):
        with pytest.raises(SystemExit):
            frozen.main(argv)
        assert msg in capsys.readouterr().err
    with pytest.raises(ValueError, match="got neither"):
        frozen.evaluate_run()
    with pytest.raises(ValueError, match="got both"):
        frozen.evaluate_run(run_dir, config=make_tiny_config(), random_init=True)
    with pytest.raises(ValueError, match="multiple of way=5"):
        frozen.evaluate_run(run_dir, settings=dict(protocol="trx", queries=3))
    with pytest.raises(ValueError, match="unknown few-shot evaluator settings \\['bogus'\\]"):
        frozen.FewshotEvaluator(make_tiny_config(), dict(bogus=1))
    with pytest.raises(ValueError, match="unknown config argument"):
        config_files.load_config_file(f"{ROOT}/configs/pretrain.py:bogus=1")


def test_class_split_file_overrides_the_data_configs_split(tmp_path):
    config = make_tiny_config()
    default = sources.get_source(config.data).class_split()
    actions = sorted({r.action for r in sources.get_source(config.data).records()} - set(default.novel))
    f = tmp_path / "split.json"
    splits.ClassSplit(base=actions[3:], validation=[], novel=actions[:3]).to_file(f)
    elist = frozen.draw_episode_list(config.data, way=2, num_episodes=20, class_split_file=str(f))
    assert set().union(*(e.classes for e in elist)) == set(actions[:3])  # the file's novel classes, not the default's


def test_periodic_evaluator_groups_and_pooling(random_encoder):
    config, encoder, params = random_encoder
    cfg = dict(num_episodes=2, part="novel", modalities="sensors,all", pooling="modality", feature_depth=1,
               probes=("prototype",), batch_size=16, resize_to=40)
    got = frozen.FewshotEvaluator(config, cfg)(params)  # a feature encoder's tree loads like the MAE's
    assert set(got) == {"fewshot/prototype_accuracy", "fewshot/prototype_ci95", "fewshot/sensors/prototype_accuracy",
                        "fewshot/sensors/prototype_ci95"}
    models = frozen_features.group_encoders(config, "sensors,all", CLIP, params, pooling="modality", feature_depth=1)
    assert models["all"][0].feature_dim == 5 * 64 and models["sensors"][0].feature_dim == 4 * 64
    ref = frozen.evaluate_groups(models, config.data, frozen.draw_episode_list(config.data, num_episodes=2),
                                      CLIP, probes=("prototype",), batch_size=16)["groups"]
    assert got["fewshot/sensors/prototype_accuracy"] == ref["sensors"]["prototype"]["accuracy"]
    assert got["fewshot/prototype_accuracy"] == ref["all"]["prototype"]["accuracy"]
