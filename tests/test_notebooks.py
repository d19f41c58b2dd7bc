"""The Colab notebooks (launch/colab/) execute headlessly, top to bottom, on the tiny configuration.

Each notebook has one cell tagged `parameters`; the test inserts a cell after it (as papermill does) that
shrinks the run, then executes the notebook in a fresh Python kernel with nbclient from the notebook's own
directory, so its setup cell finds this checkout instead of cloning."""
import base64
import glob
import io
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from mumae_jax.core import metrics
from mumae_jax.evaluators import episode_accuracy

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


def _execute(name: str, params: dict):
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
        # the library is called, not shelled out to (only the setup cell runs pip / git, through subprocess)
        lines = [line.lstrip() for c in code for line in c.source.splitlines()]
        assert not any("main.py" in line or line.startswith(("!", "%")) for line in lines)


def test_training_notebook_runs(tmp_path):
    work = str(tmp_path / "run")
    with_probes = {**TINY_PRETRAIN, "evals.fewshot.every_steps": 3, "evals.fewshot.num_episodes": 2}
    nb = _execute("training.ipynb", {"WORKDIR": work, "PRETRAIN_OVERRIDES": with_probes, "EVAL_EPISODES": 6,
                                     "PROBES": ("prototype", "ridge")})
    records = metrics.read_jsonl(os.path.join(work, "metrics.jsonl"))
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert [r["step"] for r in records if "fewshot/prototype_accuracy" in r] == [3]
    (png,) = _outputs(nb, "image/png")  # loss curves and, beside them, the probe curves: a wide figure
    w, h = Image.open(io.BytesIO(base64.b64decode(png["data"]["image/png"]))).size
    assert w > 2.5 * h
    out = _stdout(nb)
    assert "finished at step 3" in out and f"-> {logged[-1]['loss']:.3f} at step 3" in out
    evals = json.load(open(os.path.join(work, "frozen_eval_novel.json")))
    assert evals["pretrained"]["step"] == 3 and evals["random init"]["step"] is None
    for r in evals.values():
        assert r["num_episodes"] == 6 and r["geometry"]["image_size"] == 32
        assert all(0 <= r[p]["accuracy"] <= 100 and r[p]["num_queries"] == 6 for p in ("prototype", "ridge"))


def test_demo_notebook_runs(tmp_path):
    work = str(tmp_path / "demo")
    oneshot = {"episodes.num_frames": 2, "episodes.image_size": 32, "episodes.resize_to": 36, "model.fused_dim": 64,
               "model.channels": 16, "model.sensor_dim": 8, "data.num_subjects": 2, "data.num_sessions": 1,
               "data.num_cameras": 2, "total_tasks": 8, "evals.episodes.every_tasks": 8, "evals.episodes.val_episodes": 8,
               "evals.episodes.test_episodes": 8, "evals.episodes.batch_episodes": 8, "write_tensorboard": False, "progress_bar": False}
    nb = _execute("demo.ipynb", {"WORKDIR": work, "PRETRAIN_OVERRIDES": TINY_PRETRAIN, "ONESHOT_OVERRIDES": oneshot,
                                 "EXAMPLE": 2, "EPISODE": 3})
    pics = sorted(os.listdir(os.path.join(work, "pictures")))
    assert pics == ["episode3_step1.png", "example2_step3_sensors.png", "example2_step3_video.gif",
                    "example2_step3_video.png"]
    # shown inline: video grid, sensor plot and episode figure as PNG, the video as an animated GIF
    assert len(_outputs(nb, "image/png")) == 3 and len(_outputs(nb, "image/gif")) == 1
    report = json.load(open(os.path.join(work, "oneshot", "report.json")))
    episode = json.load(open(os.path.join(work, "oneshot", "episodes_test.json")))["episodes"][3]
    out = _stdout(nb)
    assert episode_accuracy.format_report(report) in out
    truth = episode["query_labels"][0]
    assert f"true class {truth} ({episode['classes'][truth]})" in out
    assert all(clip in out for clip in episode["support"] + episode["query"])


def _setup_cell(path: str, replacements: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"][:1]
    for a, b in replacements.items():
        assert a in nb.cells[0].source, a
        nb.cells[0].source = nb.cells[0].source.replace(a, b)
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_setup_cell_explains_a_missing_repository(path, tmp_path, monkeypatch):
    """Outside a checkout and without REPO_URL, the setup cell stops with what to do (no silent clone)."""
    nb = _setup_cell(path, {'find_repo("/content/mumae_jax")': "None"})
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(Exception, match="set REPO_URL to its git URL"):
        client.execute()


def test_setup_cell_in_the_colab_layout_installs_and_imports_the_checkout(tmp_path):
    """Colab: the kernel runs in /content and the clone is /content/mumae_jax, a folder Python would import as
    an empty namespace package. The cell must still install where the distribution is missing and import the
    checkout's package and configs/. (pip is replaced by a print; a distribution name that does not exist
    stands for the missing install.)"""
    content = tmp_path / "content"
    content.mkdir()
    os.symlink(ROOT, content / "mumae_jax")
    pip = 'subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{REPO}[{extras}]"], check=True)'
    nb = _setup_cell(os.path.join(COLAB, "demo.ipynb"), {
        'find_repo("/content/mumae_jax")': f'find_repo({str(content / "mumae_jax")!r})',
        '("mumae_jax", "matplotlib", "pillow")': '("mumae_jax", "matplotlib", "pillow", "no-such-distribution-x")',
        pip: 'print("PIP", f"{REPO}[{extras}]")'})
    nb.cells.append(nbformat.v4.new_code_cell(
        "import mumae_jax.models.mae, configs.pretrain\nprint('FROM', mumae_jax.__file__, configs.pretrain.__file__)"))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(content)}}).execute()
    out = _stdout(nb)
    repo = str(content / "mumae_jax")
    assert f"PIP {repo}[viz" in out and f"mumae_jax repository: {repo}" in out
    assert f"FROM {repo}/mumae_jax/__init__.py {repo}/configs/pretrain.py" in out
