"""Input-pipeline benchmark: clips/s and frames/s of the pretraining input, with no model step.

    python -m mumae_jax.data.bench_input --config=configs/pretrain.py:runlocal [--batches 20] [--warmup 3]
        [--config.batch_size=32 ...] [--json out.json]

Prints a table and (with --json) a machine-readable record. Each batch is fully materialised as numpy
before the clock stops, so the figure is what the trainer can be fed at most.
"""
from __future__ import annotations

import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Pretraining config (configs/pretrain.py[:args]).", lock_config=True)
flags.DEFINE_integer("batches", 20, "Timed batches.")
flags.DEFINE_integer("warmup", 3, "Untimed batches first (pipeline start-up, caches).")
flags.DEFINE_string("json", "", "Also write the result as JSON here.")
flags.mark_flags_as_required(["config"])


def measure(config, batches: int, warmup: int) -> dict:
    """Times `batches` batches of the pretraining input after `warmup` batches."""
    from mumae_jax.data import input_pipeline
    from mumae_jax.models import modality

    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    video = next(s for s in specs if s.kind == "video")
    sensor_specs = [s for s in specs if s.kind == "sensor"]
    sensors = tuple(s.name for s in sensor_specs)
    frames, size = video.input_shape[0], video.input_shape[1]
    it, num_examples = input_pipeline.build_pretrain_input(
        config.data, num_frames=frames, frame_stride=config.input.frame_stride, image_size=size,
        sensor_length=sensor_specs[0].input_shape[0] if sensor_specs else 128, sensors=sensors,
        global_batch_size=config.batch_size, seed=config.seed)
    try:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            assert batch["video"].shape[0] == config.batch_size
        elapsed = time.perf_counter() - t0
    finally:
        it.close()
    clips = batches * config.batch_size
    return {"pipeline": f"pretrain/{config.data.name}", "split": config.data.split, "num_examples": num_examples,
            "batch_size": config.batch_size, "frames_per_clip": frames, "image_size": size,
            "sensors": len(sensors), "batches": batches, "seconds": elapsed, "clips_per_sec": clips / elapsed,
            "frames_per_sec": clips * frames / elapsed, "cpus": os.cpu_count(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d")}


def main(argv):
    del argv
    f = flags.FLAGS
    r = measure(f.config, f.batches, f.warmup)
    print(f"{'pipeline':<22}{'clip':>14}{'batch':>7}{'clips/s':>10}{'frames/s':>10}")
    print(f"{r['pipeline']:<22}{r['frames_per_clip']:>5}x{r['image_size']:>3}^2+{r['sensors']}s"
          f"{r['batch_size']:>7}{r['clips_per_sec']:>10.1f}{r['frames_per_sec']:>10.0f}")
    print(f"({r['batches']} batches in {r['seconds']:.1f} s on {r['cpus']} CPUs, {r['date']})")
    if f.json:
        with open(f.json, "w", encoding="utf-8") as fh:
            json.dump(r, fh, indent=2)


if __name__ == "__main__":
    app.run(main)
