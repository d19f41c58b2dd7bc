"""Reconstruction pictures: written periodically during pretraining and by the command, with the
expected sizes; the reconstruction keeps the visible tubes and differs from the original where masked."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import make_tiny_config
from mumae_jax.evaluators import pictures, reconstruction
from mumae_jax.trainers import pretraining

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pictures_during_training_and_from_the_command(tmp_path):
    config = make_tiny_config(total_steps=2, checkpoint_every_steps=2)
    config.evals.pictures.every_steps = 2
    config.lock()  # as main.py passes it
    run = str(tmp_path / "run")
    pretraining.train_and_evaluate(config, run)
    t, size = 4, 32  # tiny config: 4 frames of 32x32
    grid = Image.open(os.path.join(run, "pictures", "step0000002_video.png"))
    assert grid.size == (110 + t * (size + 2), 28 + 3 * (size + 2))
    gif = Image.open(os.path.join(run, "pictures", "step0000002_video.gif"))
    assert gif.n_frames == t and gif.size == (3 * size + 2 * 2, size)
    assert Image.open(os.path.join(run, "pictures", "step0000002_sensors.png")).size[0] > 300

    specs, inputs, masks, preds, step = pictures.predict_clip(run, example=5, seed=1)
    assert step == 2
    rec = reconstruction.reconstruct_all(specs, inputs, masks, preds)["video"]
    hidden = rec["sample_mask"]
    np.testing.assert_array_equal(rec["reconstruction"][~hidden], rec["original"][~hidden])
    assert np.abs(rec["reconstruction"][hidden] - rec["original"][hidden]).mean() > 1e-3

    out = tmp_path / "pics"
    r = subprocess.run([sys.executable, "-m", "mumae_jax.evaluators.pictures", f"--workdir={run}", "--example=5", "--seed=1",
                        f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    paths = r.stdout.split()
    assert [os.path.basename(p) for p in paths] == ["example5_step2_video.png", "example5_step2_video.gif",
                                                   "example5_step2_sensors.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)
    # the command's picture shows the same reconstruction: its last row is the reconstructed frames
    img = np.asarray(Image.open(paths[0]).convert("RGB"))
    y0 = 28 + 2 * (size + 2)
    first = img[y0:y0 + size, 110:110 + size].astype(np.float32) / 255
    np.testing.assert_allclose(first, np.clip(rec["reconstruction"][0], 0, 1), atol=1 / 255 + 1e-6)
