"""Frozen-encoder few-shot evaluation: features per clip, determinism, checkpoint loading, CLI."""
import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import make_tiny_config
from mumae_jax import frozen_eval, pretrained
from mumae_jax.data import episode_input

GEOM = dict(seq_len=4, image_size=32, resize_to=40, sensor_length=128)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mumae_jax import train

    workdir = str(tmp_path_factory.mktemp("pre"))
    train.train_and_evaluate(make_tiny_config(total_steps=2), workdir)
    return workdir


@pytest.fixture(scope="module")
def random_encoder():
    config = make_tiny_config()
    encoder, params = frozen_eval.from_pretrain_config(config, seed=1, **GEOM)
    return config, encoder, params


def test_clip_features_equal_the_encoder_on_that_clip(random_encoder):
    config, encoder, params = random_encoder
    data = {**config.data.to_dict(), "split": "all"}
    names = sorted(c.name for c in frozen_eval.records(config.data))[:3]
    feats = frozen_eval.extract_features(encoder, params, data, names, batch_size=8, **GEOM)
    assert feats.shape == (3, 64)
    it = episode_input.build_clip_input(data, names, sensors=[s.name for s in encoder.specs[1:]], batch_size=8,
                                        **GEOM)
    b = next(it)
    it.close()
    direct = encoder.apply({"params": params}, {s.name: b["video" if s.kind == "video" else s.name][:3]
                                                for s in encoder.specs}, deterministic=True)
    np.testing.assert_allclose(feats, np.asarray(direct), rtol=1e-5, atol=1e-5)


def test_evaluate_episodes_is_deterministic(random_encoder):
    config, encoder, params = random_encoder
    elist = frozen_eval.draw_episode_list(config.data, part="novel", num_episodes=6, seed=3)
    runs = [frozen_eval.evaluate_episodes(encoder, params, config.data, elist, probes=("prototype", "knn", "ridge"),
                                          batch_size=16, **GEOM) for _ in range(2)]
    for p in ("prototype", "knn", "ridge"):
        assert runs[0][p] == runs[1][p] and runs[0][p]["num_queries"] == 6
        assert 0 <= runs[0][p]["accuracy"] <= 100
    assert runs[0]["num_clips"] == len({c for e in elist for c in (*e.support, *e.query)})


def test_from_pretrain_run_loads_the_checkpoint_weights(run_dir):
    encoder, params, step = frozen_eval.from_pretrain_run(run_dir, **GEOM)
    _, mae_params, ck_step = pretrained.load_params(run_dir)
    assert step == ck_step == 2
    flat, src = (traverse_util.flatten_dict(jax.device_get(t), sep="/") for t in (params, mae_params))
    loaded = [k for k in flat if not k.startswith("fc_norm/")]
    assert loaded and all(k.startswith(("embed_", "encoder/")) for k in loaded)
    for k in loaded:
        np.testing.assert_array_equal(flat[k], src[k])


def test_cli_writes_accuracies(run_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert frozen_eval.main(["--pretrain_workdir", run_dir, "--part", "novel", "--num_episodes", "4",
                             "--probes", "prototype,ridge", "--batch_size", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint step 2" in printed and "prototype" in printed
    res = json.loads(out.read_text())
    assert res["step"] == 2 and res["geometry"]["seq_len"] == 4 and res["geometry"]["image_size"] == 32
    for p in ("prototype", "ridge"):
        assert 0 <= res[p]["accuracy"] <= 100 and res[p]["num_queries"] == 4
