"""Fault-injection suite: does a run survive what happens to real runs, and does it say so truthfully?

    python -m mumae_jax.faults [--kills 10] [--terms 10] [--only a,b] [--seed 0] [--workdir DIR] [--out X.json]

runs configs/pretrain.py:tiny (40 steps, a checkpoint every 10) in child processes (`child.py`) under
injected faults (`scenarios.SCENARIOS`): SIGKILL and SIGTERM at random moments of the loop; SIGKILL inside
an async checkpoint write, a metrics write and a TFDS build; SIGTERM during logging, evaluation and
pictures; a truncated and an incomplete newest checkpoint; a non-finite loss; a corrupt TFRecord shard; a
full disk (a per-file size limit); two runs on one workdir; two runs building one dataset. Each case is
rerun without the fault and compared with an uninterrupted run (`runs.Suite`): bit-exact per-step
records, one record per step, steps lost. It prints one table row per fault and exits non-zero when a
case is not as expected. The dataset cases write a small MMAct-layout tree of synthetic clips
(`mumae_jax.data.synthetic_export`, needs PyAV) and prepare it.
"""
