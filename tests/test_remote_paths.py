"""Workdir files go through etils.epath, so a gs:// workdir reaches the bucket, not the local disk.

No bucket is reachable here: `epath.testing.mock_epath` sends every epath call for gs://bucket/... to a local
directory instead. A file written with plain `open` would not land there (and would fail on a real bucket), so
this catches a regression to local-only I/O in writing and reading episode lists, writing, truncating and
reading metrics.jsonl, and reading config.json. The mock stands in for epath's file backend (TensorFlow's gfile
in production). The loops' other workdir files, orbax checkpoints and TensorBoard files are not covered."""
import json
import os

from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from mumae_jax.core import metrics
from mumae_jax.weights import pretrained
from mumae_jax.data import episodes as E
from mumae_jax.data import splits
from test_episodes import make_records


def _bucket(tmp_path, monkeypatch):
    """A mock_epath context mapping gs://bucket/<p> to tmp_path/<p>, and a list of the paths it saw."""
    # with TensorFlow installed, epath sends gs:// straight to its TF backend, past the mock
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    seen = []

    def local(path):
        p = os.fspath(path)
        seen.append(p)
        return p.replace("gs://bucket", str(tmp_path), 1) if p.startswith("gs://bucket") else p

    def redirect(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def redirect2(fn, src, dst, *args, **kwargs):
        return fn(local(src), local(dst), *args, **kwargs)

    fns = dict(open=redirect, exists=redirect, isdir=redirect, makedirs=redirect, mkdir=redirect,
               remove=redirect, stat=redirect, listdir=redirect, glob=redirect, rmtree=redirect,
               rename=redirect2, replace=redirect2, copy=redirect2)
    return epath_testing.mock_epath(**fns), seen


def test_episode_list_metrics_and_config_on_a_gs_workdir(tmp_path, monkeypatch):
    cs = splits.mumae_split3()
    eps = E.make_episode_list(make_records(cs.novel, subjects=(1, 2), sessions=(1,), cameras=(1, 2)), cs,
                              part="novel", num_episodes=20, seed=0)
    E.save_episode_list(tmp_path / "local.json", eps)
    mock, seen = _bucket(tmp_path / "bucket", monkeypatch)
    os.makedirs(tmp_path / "bucket" / "run")  # on a bucket, directories need not exist
    with mock:
        E.save_episode_list("gs://bucket/run/episodes_test.json", eps)
        assert E.load_episode_list("gs://bucket/run/episodes_test.json") == eps

        writer = metrics.MetricWriter("gs://bucket/run", tensorboard=False, enabled=True)
        writer.write(1, {"loss": 2.5})
        writer.write(2, {"loss": 2.0})
        writer.truncate_after(1)
        writer.close()
        assert metrics.read_jsonl("gs://bucket/run/metrics.jsonl") == [{"step": 1, "loss": 2.5}]

        epath.Path("gs://bucket/run/config.json").write_text(json.dumps({"seed": 3, "model": {"depth": 2}}))
        assert pretrained.load_config("gs://bucket/run").model.depth == 2
    # the same bytes as a local save, in the bucket's directory, and nothing written under a local "gs:" path
    saved = tmp_path / "bucket" / "run" / "episodes_test.json"
    assert saved.read_bytes() == (tmp_path / "local.json").read_bytes()
    assert sorted(os.listdir(tmp_path / "bucket" / "run")) == ["config.json", "episodes_test.json", "metrics.jsonl"]
    assert not os.path.exists("gs:") and any(p.startswith("gs://bucket/run") for p in seen)
