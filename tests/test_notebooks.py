"""The Colab notebooks (launch/colab/) execute headlessly, top to bottom, on the tiny configuration.

Each notebook has one cell tagged `parameters`; the test inserts a cell after it (as papermill does) that
shrinks the run, then executes the notebook in a fresh Python kernel with nbclient from the notebook's own
directory, so its setup cell finds this checkout instead of cloning."""
import glob
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from mumae_jax import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "launch", "colab")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLAB, "*.ipynb")))

# conftest.make_tiny_config as dotted overrides of configs/pretrain.py:runlocal
TINY_PRETRAIN = {
    "model.width": 64, "model.depth": 2, "model.num_heads": 2, "model.mlp_dim": 128, "model.decoder_width": 32,
    "model.decoder_depth": 1, "model.decoder_heads": 2, "modality.video.num_frames": 4,
    "modality.video.image_size": 32, "batch_size": 8, "total_steps": 3, "warmup_steps": 1, "log_every_steps": 1,
    "checkpoint_every_steps": 3, "write_tensorboard": False, "progress_bar": False, "data.num_subjects": 2,
    "data.num_sessions": 1, "evals.fewshot.every_steps": 0,
}


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _execute(name: str, params: dict, monkeypatch):
    nb = nbformat.read(os.path.join(COLAB, name), as_version=4)
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_index(nb) + 1, cell)
    # the kernel inherits this process's environment: 8 CPU devices (conftest) and the compilation cache, whose
    # entries the one-shot tests share (same shapes)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": COLAB}}).execute()
    return nb


def _outputs(nb, mime: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})]


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("name") == "stdout")


def test_notebooks_are_committed_clean():
    assert [os.path.basename(p) for p in NOTEBOOKS] == ["demo.ipynb", "training.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        _parameters_index(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path}: clear the outputs"
        # the library is called, not shelled out to (only the setup cell runs pip / git)
        assert not any("main.py" in c.source or c.source.lstrip().startswith("!") for c in code)


def test_training_notebook_runs(tmp_path, monkeypatch):
    work = str(tmp_path / "run")
    nb = _execute("training.ipynb", {"WORKDIR": work, "PRETRAIN_OVERRIDES": TINY_PRETRAIN, "EVAL_EPISODES": 6,
                                     "PROBES": ("prototype", "ridge")}, monkeypatch)
    logged = [r for r in metrics.read_jsonl(os.path.join(work, "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert len(_outputs(nb, "image/png")) == 1  # the loss curves
    out = _stdout(nb)
    assert "finished at step 3" in out and f"-> {logged[-1]['loss']:.3f} at step 3" in out
    evals = json.load(open(os.path.join(work, "frozen_eval_novel.json")))
    assert evals["pretrained"]["step"] == 3 and evals["random init"]["step"] is None
    for r in evals.values():
        assert r["num_episodes"] == 6 and r["geometry"]["image_size"] == 32
        assert all(0 <= r[p]["accuracy"] <= 100 and r[p]["num_queries"] == 6 for p in ("prototype", "ridge"))


def test_demo_notebook_runs(tmp_path, monkeypatch):
    work = str(tmp_path / "demo")
    oneshot = {"episodes.seq_len": 2, "episodes.image_size": 32, "episodes.resize_to": 36, "model.fused_dim": 64,
               "model.channels": 16, "model.sensor_dim": 8, "data.num_subjects": 2, "data.num_sessions": 1,
               "data.num_cameras": 2, "total_tasks": 8, "eval.every_tasks": 8, "eval.val_episodes": 8,
               "eval.test_episodes": 8, "eval.batch_episodes": 8, "write_tensorboard": False, "progress_bar": False}
    nb = _execute("demo.ipynb", {"WORKDIR": work, "PRETRAIN_OVERRIDES": TINY_PRETRAIN, "ONESHOT_OVERRIDES": oneshot,
                                 "EXAMPLE": 2, "EPISODE": 3}, monkeypatch)
    pics = sorted(os.listdir(os.path.join(work, "pictures")))
    assert pics == ["episode3_step1.png", "example2_step3_sensors.png", "example2_step3_video.gif",
                    "example2_step3_video.png"]
    # shown inline: video grid, sensor plot and episode figure as PNG, the video as an animated GIF
    assert len(_outputs(nb, "image/png")) == 3 and len(_outputs(nb, "image/gif")) == 1
    report = json.load(open(os.path.join(work, "oneshot", "report.json")))
    episode = json.load(open(os.path.join(work, "oneshot", "episodes_test.json")))["episodes"][3]
    out = _stdout(nb)
    assert f"{report['final']['accuracy']:.2f}" in out or f"{report['final']['accuracy']:.1f}" in out
    truth = episode["query_labels"][0]
    assert f"true class {truth} ({episode['classes'][truth]})" in out
    assert all(clip in out for clip in episode["support"] + episode["query"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_setup_cell_explains_a_missing_repository(path, tmp_path, monkeypatch):
    """Outside a checkout and without REPO_URL, the setup cell stops with what to do (no silent clone)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"][:1]
    src = nb.cells[0].source.replace('find_repo("/content/mumae_jax")', "None")
    nb.cells[0].source = src
    monkeypatch.chdir(tmp_path)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(Exception, match="set REPO_URL to its git URL"):
        client.execute()
