"""The input benchmark measures real batches of the configured geometry."""
import json
import os
import subprocess
import sys

from mumae_jax.bench import input_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_measure_counts_clips_and_frames(tiny_config):
    r = input_speed.measure(tiny_config, batches=2, warmup=1)
    assert r["batch_size"] == 8 and r["frames_per_clip"] == 4 and r["image_size"] == 32 and r["sensors"] == 4
    assert r["seconds"] > 0
    assert abs(r["clips_per_sec"] * r["seconds"] - 16) < 1e-6
    assert abs(r["frames_per_sec"] - 4 * r["clips_per_sec"]) < 1e-6


def test_command_prints_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "mumae_jax.bench.input_speed", "--config=configs/pretrain.py:runlocal",
           "--config.batch_size=4", "--config.data.num_subjects=2", "--config.data.num_sessions=1",
           "--batches=2", "--warmup=1", f"--json={out}"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "clips/s" in p.stdout and "pretrain/synthetic" in p.stdout and "episodes/synthetic" in p.stdout
    pre, epi = json.loads(out.read_text())
    assert pre["batch_size"] == 4 and pre["frames_per_clip"] == 8 and pre["clips_per_sec"] > 0
    assert epi["frames_per_clip"] == 8 and epi["image_size"] == 224 and abs(epi["clips_per_sec"] - 6 * epi["episodes_per_sec"]) < 1e-9 * epi["clips_per_sec"]
