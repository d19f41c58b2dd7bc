"""Pretraining-step benchmark: parameters, FLOPs, compile time, step time, clips/s, MFU, memory.

    python -m mumae_jax.bench --config=configs/pretrain.py:variant=S [--batch 8] [--steps 10] [--warmup 2]
        [--peak_tflops 989] [--peer hf] [--rounds 3] [--memory] [--input] [--json out.json]
        [--config.compute_dtype=bfloat16 --config.model.remat=block ...]

What it measures (one jitted, sharded training step on device-resident synthetic batches; TensorFlow is
never imported unless --input is given):
  params            parameter count
  FLOPs per clip    analytic (mumae_jax/bench/flops.py) and XLA's cost analysis of the lowered step
  compile_s         lower + compile of the step
  step_s            median, p10 and p90 over --steps steps after --warmup, each ended by a device sync;
                    `pipelined_step_s`: the mean when --steps steps are dispatched back to back (one sync)
  clips/s           batch / median step time
  MFU               analytic FLOPs per second / peak (--peak_tflops, or the table below by device kind)
  matmul floor      analytic FLOPs / the rate of one large matmul measured here (`matmul_tflops`): no
                    implementation of the same arithmetic runs faster on this device
  memory            peak device memory (GPU/TPU memory_stats) and the process's peak host RSS
--peer hf: the same video shapes through transformers' VideoMAEForPreTraining (fwd + bwd + AdamW), and
   mumae_jax's video-only step, alternated for --rounds rounds of --steps steps; prints the time ratio.
--memory: re-runs the jax step (and, with --peer hf, the video-only jax step and the torch step) each alone
   in a fresh process and reports each one's peak RSS (one framework's memory is not mixed with the
   other's, nor with this process's cost analysis). Both sides give what their compilers/allocators freed
   back to the system first (host_memory.release_freed, as the training loop does).
--input: the input pipeline alone (mumae_jax/data/input_speed.py; needs TensorFlow).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Optional

from mumae_jax.core import cli  # noqa: E402

cli.quiet_environment()  # before TensorFlow is imported

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mumae_jax.core import host_memory  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Pretraining config (configs/pretrain.py[:args]).", lock_config=False)
flags.DEFINE_integer("batch", 0, "Global batch (0: config.batch_size; on CPU at most CPU_BATCH).")
flags.DEFINE_integer("steps", 10, "Timed steps (per round with --peer).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s for MFU (0: from the table by device kind).")
flags.DEFINE_enum("peer", "", ["", "hf"], "Also run the transformers VideoMAE step, alternated.")
flags.DEFINE_integer("rounds", 3, "Alternation rounds with --peer.")
flags.DEFINE_enum("framework", "", ["", "jax", "torch"], "Only this framework's step, lean (used by --memory).")
flags.DEFINE_bool("video_only", False, "With --framework: the video modality alone.")
flags.DEFINE_bool("memory", False, "Peak host RSS of each framework's step in a fresh process.")
flags.DEFINE_bool("input", False, "Also measure the input pipeline alone (needs TensorFlow).")
flags.DEFINE_string("compilation_cache", "", "Persistent compilation cache directory (jax_compilation_cache_dir).")
flags.DEFINE_string("json", "", "Also write the result as JSON here.")
flags.mark_flags_as_required(["config"])

# Peak dense bf16 TFLOP/s by device kind (substring match, first hit wins).
PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("TPU v5p", 459.0), ("TPU v5 lite", 197.0),
               ("TPU v5e", 197.0), ("TPU v4", 275.0), ("TPU v6", 918.0))


def peak_tflops(device_kind: str, given: float = 0.0) -> Optional[float]:
    if given > 0:
        return given
    for name, peak in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


NOISY_SPREAD = 1.5  # p90 / p10 of a step's times above which a side-by-side comparison is flagged
NOISY_RERUNS = 2  # extra passes of --rounds before a noisy comparison is reported as such


def spread(p: dict) -> float:
    """p90 / p10 of a `_percentiles` record: 1 for perfectly steady steps."""
    return p["p90"] / p["p10"]


def _percentiles(times):
    import numpy as np

    t = np.asarray(times)
    return {"median": float(np.median(t)), "p10": float(np.percentile(t, 10)), "p90": float(np.percentile(t, 90)),
            "n": int(t.size)}


class JaxStep:
    """The jitted pretraining step of `config` on a device-resident synthetic batch."""

    def __init__(self, config, batch: int):
        import jax
        import numpy as np

        from mumae_jax.core import sharding
        from mumae_jax.steps import pretraining_step

        self.config, self.batch = config, batch
        self.mesh = sharding.make_mesh()
        sharding.check_batch_size(batch, self.mesh, "--batch")
        self.model, init, self.abstract, self.step_fn = pretraining_step.step_for_config(config, batch, self.mesh)
        rng = np.random.default_rng(0)
        bsh = sharding.batch_sharding(self.mesh)
        self.inputs = {s.name: jax.device_put(rng.standard_normal((batch,) + s.input_shape, np.float32), bsh)
                       for s in self.model.specs}
        t0 = time.perf_counter()
        lowered = self.step_fn.lower(self.abstract, self.inputs)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        del lowered
        host_memory.release_freed()  # what the compiler freed (as the training loop does)
        self.state = jax.block_until_ready(init())
        host_memory.release_freed()
        self.params = pretraining_step.param_count(self.state["params"])

    def __call__(self) -> float:
        import jax

        t0 = time.perf_counter()
        self.state, metrics = self.compiled(self.state, self.inputs)
        jax.block_until_ready(metrics)
        return time.perf_counter() - t0

    def pipelined(self, steps: int) -> float:
        """Mean step time when `steps` steps are dispatched without waiting (one sync at the end)."""
        import jax

        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, metrics = self.compiled(self.state, self.inputs)
        jax.block_until_ready((self.state, metrics))
        return (time.perf_counter() - t0) / steps


def matmul_tflops(dtype: str = "float32", shape=(3136, 768, 3072), repeats: int = 5) -> float:
    """Measured rate of one large dense matmul [m,k]@[k,n] on the default device (TFLOP/s, best of
    `repeats`; float32 accumulation). The default shape is a ViT-B MLP layer at batch 2 x 1568 tokens.

    `analytic FLOPs / this rate` is a floor for the step time that no implementation of the same
    arithmetic reaches on this device; the bench prints it next to the measured step."""
    import jax
    import jax.numpy as jnp

    m, k, n = shape
    a = jnp.ones((m, k), dtype)
    b = jnp.ones((k, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, b))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best / 1e12


def _device_memory():
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return {k: stats[k] for k in ("peak_bytes_in_use", "bytes_limit") if k in stats}


def measure_jax(config, batch: int, steps: int, warmup: int, peak: float = 0.0) -> dict[str, Any]:
    import jax

    from mumae_jax.bench import flops

    step = JaxStep(config, batch)
    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    pipelined = step.pipelined(steps)
    analytic = flops.from_config(config)["train_flops_per_clip"]
    dev = jax.devices()[0]
    t = _percentiles(times)
    pk = peak_tflops(dev.device_kind, peak)
    rate = matmul_tflops(config.get("compute_dtype", "float32"))
    out = {
        "framework": f"jax {jax.__version__}", "variant": config.model.variant,
        "modalities": list(config.modalities), "compute_dtype": config.get("compute_dtype", "float32"),
        "attention_impl": config.model.get("attention_impl", "") or "default",
        "remat": config.model.get("remat", "none"), "batch": batch, "params": step.params,
        "analytic_gflops_per_clip": analytic / 1e9,
        "xla_gflops_per_clip": flops.xla_flops_per_clip(config, batch, step.mesh) / 1e9,
        "compile_s": step.compile_s, "step_s": t, "pipelined_step_s": pipelined,
        "clips_per_s": batch / t["median"], "pipelined_clips_per_s": batch / pipelined,
        "achieved_tflops": analytic * batch / t["median"] / 1e12, "peak_tflops": pk,
        "mfu": (analytic * batch / t["median"] / (pk * 1e12)) if pk else None,
        "matmul_tflops": rate, "matmul_floor_step_s": analytic * batch / (rate * 1e12),
        "device": f"{dev.platform}:{dev.device_kind} x{jax.device_count()}", "device_memory": _device_memory(),
        "host_peak_rss_mb": host_memory.peak_rss_mb(),
    }
    return out


def side_by_side(config, batch: int, steps: int, warmup: int, rounds: int, matmul_rate: float) -> dict[str, Any]:
    """transformers VideoMAE vs mumae_jax (video only) at equal shapes, alternated in one process;
    `matmul_rate` (TFLOP/s, `matmul_tflops`) gives the step's floor."""
    from mumae_jax.bench import peer, flops

    video = peer.video_only(config)
    ours = JaxStep(video, batch)
    peer, info = peer.make_step(video, batch)
    for _ in range(warmup):
        ours()
        peer()
    t_ours, t_peer = [], []
    for attempt in range(1 + NOISY_RERUNS):  # a noisy comparison gets more rounds before it is reported
        for _ in range(rounds):
            t_peer += [peer() for _ in range(steps)]
            t_ours += [ours() for _ in range(steps)]
        a, b = _percentiles(t_ours), _percentiles(t_peer)
        if max(spread(a), spread(b)) <= NOISY_SPREAD:
            break
    video_flops = flops.from_config(video)["train_flops_per_clip"]
    return {"matmul_floor_step_s": video_flops * batch / (matmul_rate * 1e12),
            "shapes": f"video {list(ours.model.specs[0].input_shape)}, batch {batch}, "
                      f"mask {ours.model.specs[0].mask_ratio}",
            "analytic_gflops_per_clip": video_flops / 1e9,
            "mumae_jax": {"step_s": a, "clips_per_s": batch / a["median"], "params": ours.params,
                          "compile_s": ours.compile_s},
            "transformers": {"step_s": b, "clips_per_s": batch / b["median"], **info},
            "speedup": b["median"] / a["median"], "rounds": rounds * (attempt + 1),
            "noisy": max(spread(a), spread(b)) > NOISY_SPREAD}


def _isolated(framework: str, argv: list[str], video_only: bool = False) -> dict:
    """Runs this module for one framework's step in a fresh process; returns its JSON result."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        keep = [a for a in argv[1:] if not a.startswith(("--peer", "--memory", "--json", "--framework", "--input",
                                                           "--rounds", "--video_only"))]
        cmd = [sys.executable, "-m", "mumae_jax.bench", *keep, f"--framework={framework}", f"--json={out}",
               f"--video_only={video_only}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def measure_jax_only(config, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """The jax step alone (no cost analysis, no peer): its time and the process's peak host RSS."""
    step = JaxStep(config, batch)
    for _ in range(warmup):
        step()
    t = _percentiles([step() for _ in range(steps)])
    return {"batch": batch, "step_s": t, "clips_per_s": batch / t["median"],
            "host_peak_rss_mb": host_memory.peak_rss_mb()}


def measure_torch_only(config, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    from mumae_jax.bench import peer

    step, info = peer.make_step(config, batch)
    host_memory.release_freed()  # as JaxStep does after building
    for _ in range(warmup):
        step()
    t = _percentiles([step() for _ in range(steps)])
    return {**info, "batch": batch, "step_s": t, "clips_per_s": batch / t["median"],
            "host_peak_rss_mb": host_memory.peak_rss_mb()}


def _ms(p: dict) -> str:
    return f"{p['median'] * 1e3:.1f} ms ({p['p10'] * 1e3:.1f}-{p['p90'] * 1e3:.1f})"


def format_table(result: dict) -> str:
    r = result["step"]
    rows = [("variant / modalities", f"{r['variant']} / {'+'.join(r['modalities'])}"),
            ("device", r["device"]), ("compute dtype / attention / remat",
                                      f"{r['compute_dtype']} / {r['attention_impl']} / {r['remat']}"),
            ("batch", r["batch"]), ("parameters", f"{r['params'] / 1e6:.1f} M"),
            ("GFLOP per clip (analytic / XLA)",
             f"{r['analytic_gflops_per_clip']:.1f} / " + (f"{r['xla_gflops_per_clip']:.1f}"
                                                          if r["xla_gflops_per_clip"] else "n/a")),
            ("compile", f"{r['compile_s']:.1f} s"),
            ("step (median, p10-p90)", f"{r['step_s']['median'] * 1e3:.1f} ms ({r['step_s']['p10'] * 1e3:.1f}-"
                                       f"{r['step_s']['p90'] * 1e3:.1f}, n={r['step_s']['n']})"),
            ("step, pipelined (no per-step sync)", f"{r['pipelined_step_s'] * 1e3:.1f} ms"),
            ("clips/s (synced / pipelined)", f"{r['clips_per_s']:.2f} / {r['pipelined_clips_per_s']:.2f}"),
            ("achieved TFLOP/s", f"{r['achieved_tflops']:.3f}"),
            ("MFU", f"{100 * r['mfu']:.1f} % of {r['peak_tflops']:g} TFLOP/s" if r["mfu"] is not None
             else "n/a (no peak known for this device; pass --peak_tflops)"),
            ("one large matmul here / step floor", f"{r['matmul_tflops']:.3f} TFLOP/s -> "
                                                   f"{r['matmul_floor_step_s'] * 1e3:.0f} ms "
                                                   f"(step at {100 * r['matmul_floor_step_s'] / r['step_s']['median']:.0f} %"
                                                   " of that rate)"),
            ("peak device memory", f"{r['device_memory']['peak_bytes_in_use'] / 2**30:.2f} GiB"
             if "peak_bytes_in_use" in r["device_memory"] else "n/a"),
            ("peak host RSS (process)", f"{r['host_peak_rss_mb']:.0f} MB")]
    if "peer" in result:
        p = result["peer"]
        worst = max(spread(p["transformers"]["step_s"]), spread(p["mumae_jax"]["step_s"]))
        noisy = (f"  NOISY: p90/p10 spread {worst:.1f} > {NOISY_SPREAD} after {p['rounds']} rounds; rerun on a "
                 "quiet machine") if p.get("noisy") else ""
        rows += [("side by side", p["shapes"]),
                 ("  transformers step (median, p10-p90)", f"{_ms(p['transformers']['step_s'])} "
                                                            f"({p['transformers']['framework']}, "
                                                            f"{p['transformers']['attention']})"),
                 ("  mumae_jax video-only step", _ms(p["mumae_jax"]["step_s"])),
                 ("  speed-up (transformers / mumae_jax)", f"{p['speedup']:.2f}x{noisy}"),
                 ("  matmul floor of this step (see above)", f"{p['matmul_floor_step_s'] * 1e3:.0f} ms: at most "
                                                             f"{p['transformers']['step_s']['median'] / p['matmul_floor_step_s']:.2f}x"
                                                             " faster than transformers is possible here")]
    if "memory" in result:
        for k, v in result["memory"].items():
            rows.append((f"peak host RSS, {k} alone", f"{v:.0f} MB"))
    if "input" in result:
        i = result["input"]
        rows.append(("input pipeline alone", f"{i['clips_per_sec']:.1f} clips/s ({i['pipeline']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


CPU_BATCH = 16  # a config's accelerator batch (64 for the paper) would take minutes per step on a CPU


def default_batch(config_batch: int, backend: str, devices: int) -> int:
    """The config's batch; on CPU at most CPU_BATCH, rounded up to a multiple of the device count."""
    if backend != "cpu" or config_batch <= CPU_BATCH:
        return config_batch
    return -(-CPU_BATCH // devices) * devices


def main(argv):
    import jax

    config = flags.FLAGS.config
    f = flags.FLAGS
    if f.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", f.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    batch = f.batch or default_batch(config.batch_size, jax.default_backend(), jax.device_count())
    print(f"batch {batch}{'' if f.batch else ' (default; --batch to change)'} on {jax.device_count()} "
          f"{jax.default_backend()} device(s); compiling ...", flush=True)
    if f.framework:
        from mumae_jax.bench import peer

        cfg = peer.video_only(config) if f.video_only else config
        measure = measure_torch_only if f.framework == "torch" else measure_jax_only
        result = {f.framework: measure(cfg, batch, f.steps, f.warmup)}
    else:
        result = {"step": measure_jax(config, batch, f.steps, f.warmup, f.peak_tflops),
                  "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
                  "date": time.strftime("%Y-%m-%d")}
        if f.peer == "hf":
            result["peer"] = side_by_side(config, batch, f.steps, f.warmup, f.rounds, result["step"]["matmul_tflops"])
        if f.memory:
            result["memory"] = {"mumae_jax (this config)": _isolated("jax", sys.argv)["jax"]["host_peak_rss_mb"]}
            if f.peer == "hf":
                for name, fw in (("mumae_jax (video)", "jax"), ("transformers (video)", "torch")):
                    result["memory"][name] = _isolated(fw, sys.argv, video_only=True)[fw]["host_peak_rss_mb"]
        if f.input:
            from mumae_jax.bench import input_speed

            cfg = config.copy_and_resolve_references()
            cfg.batch_size = batch
            result["input"] = input_speed.measure(cfg, max(f.steps, 5), f.warmup)
        print(format_table(result))
    if f.json:
        with open(f.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    cli.run_absl(main)
