"""Input-pipeline benchmark: clips/s and frames/s of each input pipeline, with no model step.

    python -m mumae_jax.bench.input_speed --config=configs/pretrain.py:runlocal [--pipelines pretrain,episodes]
        [--batches 20] [--warmup 3] [--config.batch_size=32 ...] [--json out.json]

`pretrain`: the pretraining input of the config (synthetic or prepared MMAct). `episodes`: the one-shot
episode input (5-way 1-shot, one query, 8 frames, 224², evaluation mode) over the config's data — novel
classes of the synthetic data, or the `meta_test` split of prepared MMAct. Prints a table and (with
--json) machine-readable records. Each batch is fully materialised as numpy before the clock stops.
"""
from __future__ import annotations

import json
import os
import platform
import time

from mumae_jax.core import cli  # noqa: E402

cli.quiet_environment()  # before TensorFlow is imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402



def _define_flags():
    """Command-line flags (defined only when run as a command, so other CLIs can import `measure`)."""
    from mumae_jax.core.config_files import packaged

    config_flags.DEFINE_config_file("config", packaged("pretrain.py:runlocal"),
                                    "Pretraining config (configs/pretrain.py[:args]; default: the packaged "
                                    "pretrain.py:runlocal).", lock_config=True)
    flags.DEFINE_list("pipelines", ["pretrain", "episodes"], "Which pipelines to measure.")
    flags.DEFINE_integer("batches", 20, "Timed batches (episodes for the episode pipeline).")
    flags.DEFINE_integer("warmup", 3, "Untimed batches first (pipeline start-up, caches).")
    flags.DEFINE_string("json", "", "Also write the result as JSON here.")


def measure(config, batches: int, warmup: int) -> dict:
    """Times `batches` batches of the pretraining input after `warmup` batches."""
    from mumae_jax.data import sources
    from mumae_jax.data.geometry import ClipGeometry
    from mumae_jax.models import modality

    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    geometry = ClipGeometry.from_specs(specs, config.input.frame_stride)
    sensors, frames, size = geometry.sensors, geometry.num_frames, geometry.image_size
    it, num_examples = sources.get_source(config.data).pretrain_input(
        geometry, global_batch_size=config.batch_size, seed=config.seed, augment=config.get("augment"))
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


def measure_episodes(config, episodes_n: int, warmup: int, num_frames: int = 8, image_size: int = 224) -> dict:
    """Times `episodes_n` evaluation episodes (5-way 1-shot, 1 query) of the config's data."""
    from mumae_jax.data import episodes, sources, splits
    from mumae_jax.data.geometry import ClipGeometry
    from mumae_jax.models import kinds

    sensors = tuple(n for n in config.modalities if not kinds.get(config.modality[n].kind).frames)
    source = sources.get_source(config.data)
    elist = episodes.make_episode_list(source.records(), splits.mumae_split3(), part="novel",
                                       num_episodes=episodes_n + warmup, seed=config.seed)
    geometry = ClipGeometry(num_frames=num_frames, image_size=image_size, sensor_length=128, sensors=sensors)
    it = source.episode_input(elist, geometry, part="novel", train=False)
    try:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(episodes_n):
            next(it)
        elapsed = time.perf_counter() - t0
    finally:
        it.close()
    clips = episodes_n * 6
    return {"pipeline": f"episodes/{source.name}", "batch_size": 6, "frames_per_clip": num_frames,
            "image_size": image_size, "sensors": len(sensors), "batches": episodes_n, "seconds": elapsed,
            "clips_per_sec": clips / elapsed, "frames_per_sec": clips * num_frames / elapsed,
            "episodes_per_sec": episodes_n / elapsed, "cpus": os.cpu_count(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d")}


def main(argv):
    del argv
    f = flags.FLAGS
    results = []
    for p in f.pipelines:
        if p == "pretrain":
            results.append(measure(f.config, f.batches, f.warmup))
        elif p == "episodes":
            results.append(measure_episodes(f.config, f.batches, f.warmup))
        else:
            raise app.UsageError(f"unknown pipeline {p!r}; expected pretrain or episodes")
    print(f"{'pipeline':<22}{'clip':>14}{'batch':>7}{'clips/s':>10}{'frames/s':>10}")
    for r in results:
        print(f"{r['pipeline']:<22}{r['frames_per_clip']:>5}x{r['image_size']:>3}^2+{r['sensors']}s"
              f"{r['batch_size']:>7}{r['clips_per_sec']:>10.1f}{r['frames_per_sec']:>10.0f}")
    print(f"({', '.join(str(r['batches']) for r in results)} batches on {results[0]['cpus']} CPUs, "
          f"{results[0]['date']}; episode batch = 5 support + 1 query clips)")
    if f.json:
        with open(f.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    _define_flags()
    cli.run_absl(main)
