"""Raw-feature anchors: the features are the model's inputs, the chunked probes equal the unchunked ones."""
import os

import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax.evaluators import anchors, fewshot_probes, frozen
from mumae_jax.data import episodes as E
from mumae_jax.data import input_pipeline, sensor_ops, synthetic
from mumae_jax.data.geometry import ClipGeometry

GEOM = ClipGeometry(num_frames=4, image_size=16, resize_to=20, sensor_length=32, sensors=synthetic.SENSORS)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup():
    config = make_tiny_config()
    elist = frozen.draw_episode_list(config.data, part="novel", num_episodes=6, seed=2)
    names = sorted({c for e in elist for c in (*e.support, *e.query)})
    raw = anchors.raw_features(config.data.to_dict(), names, GEOM)
    return config, elist, names, raw


def test_raw_sensor_features_are_the_preprocessed_recordings(setup):
    config, _, names, raw = setup
    ds, clips = input_pipeline.make_dataset({**config.data.to_dict(), "split": "all"})
    by_name = {c.name: c for c in clips}
    for i in (0, len(names) - 1):
        rec = ds.sensors(by_name[names[i]])
        want = np.concatenate([sensor_ops.preprocess_sensor(rec[s][1], 32).ravel()
                               for s in GEOM.sensors])
        np.testing.assert_allclose(raw["sensors"][i], want, rtol=1e-6, atol=1e-6)
    assert raw["video"].shape == (len(names), 4 * 16 * 16 * 3)
    assert 0.0 <= raw["video"].min() and raw["video"].max() <= 1.0
    assert not np.array_equal(raw["video"][0], raw["video"][1])


def test_all_group_weighs_each_modality_equally(setup):
    _, _, _, raw = setup
    both = anchors.group_features(raw, "all")
    nv = raw["video"].shape[1]
    np.testing.assert_allclose(np.linalg.norm(both[:, :nv], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(both[:, nv:], axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="modalities"):
        anchors.group_features({"video": raw["video"]}, "sensors")


def test_chunked_probes_equal_one_batch(setup):
    _, elist, names, raw = setup
    pos = {n: i for i, n in enumerate(names)}
    f = raw["sensors"]
    sup = f[np.asarray([[pos[c] for c in e.support] for e in elist])]
    qry = f[np.asarray([[pos[c] for c in e.query] for e in elist])]
    ref = fewshot_probes.evaluate(sup, np.asarray([e.support_labels for e in elist]), qry,
                                  np.asarray([e.query_labels for e in elist]), 5, probes=("prototype", "ridge"))
    got = anchors.evaluate_features(f, names, elist, probes=("prototype", "ridge"), chunk=3)
    for p in ("prototype", "ridge"):
        assert got[p]["accuracy"] == pytest.approx(ref[p]["accuracy"])
        assert got[p]["num_queries"] == len(elist)
    # features that are the clip's class: 100 %; the same features on the clips in reverse order: not
    label = {c: g for e in elist for c, g in zip((*e.support, *e.query), (*[e.classes[y] for y in e.support_labels],
                                                                          *[e.classes[y] for y in e.query_labels]))}
    classes = sorted(set(label.values()))
    onehot = np.eye(len(classes), dtype=np.float32)[[classes.index(label[n]) for n in names]]
    assert anchors.evaluate_features(onehot, names, elist, probes=("prototype",), chunk=3)["prototype"]["accuracy"] == 100
    assert anchors.evaluate_features(onehot[::-1].copy(), names, elist, probes=("prototype",), chunk=3)["prototype"][
        "accuracy"] < 100


def test_command_prints_a_row_per_group(tmp_path, capsys):
    out = tmp_path / "a.json"
    lst = tmp_path / "episodes.json"
    config = make_tiny_config()
    E.save_episode_list(str(lst), frozen.draw_episode_list(config.data, part="novel", num_episodes=4, seed=0))
    assert anchors.main([f"--config={ROOT}/configs/pretrain.py:runlocal", f"--episodes={lst}", "--num_frames=2",
                         "--image_size=16", "--modalities=video,all", f"--out={out}"]) == 0
    text = capsys.readouterr().out
    assert "| raw video |" in text and "| raw all |" in text and "raw sensors" not in text
    import json
    res = json.loads(out.read_text())
    assert res["num_queries"] == 4 and res["geometry"]["image_size"] == 16
    # drawn (and saved) list, config overrides: 3 episodes x 5 queries
    saved = tmp_path / "drawn.json"
    assert anchors.main([f"--config={ROOT}/configs/pretrain.py:runlocal", "--config.data.num_subjects=2",
                         "--config.data.num_sessions=1", "--num_episodes=3", "--queries=5", "--protocol=trx",
                         "--num_frames=2", "--image_size=16", "--modalities=sensors", f"--save_episodes={saved}"]) == 0
    drawn = E.load_episode_list(str(saved))
    assert len(drawn) == 3 and all(len(e.query) == 5 for e in drawn)
    assert "15 queries" in capsys.readouterr().out
    assert anchors.main(["--config=nope.py", f"--episodes={lst}"]) == 2  # one error line naming the file
    assert "nope.py" in capsys.readouterr().err
