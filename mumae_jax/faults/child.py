"""One pretraining run of the fault suite, in its own process, with at most one injected fault.

    python -m mumae_jax.faults.child --workdir W [--data PREPARED_DIR] [--inject KIND@N] [--set key=value ...]

Runs `pretraining.train_and_evaluate` on `suite_config()` (configs/pretrain.py:tiny, 40 steps, a checkpoint
every 10, one metrics record per step). An injection patches one function of this process only
(`INJECTIONS`); the library's code is the code users run. The last stderr line is `error: <type>:
<message>` on a failure (exit 1) and stdout's last line `finished at step N` on success, as in main.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOTAL_STEPS = 40
CHECKPOINT_EVERY = 10


def suite_config(data_dir: str = "", sets=()):
    """mumae_jax/configs/pretrain.py:tiny (synthetic, or prepared MMAct-layout data in `data_dir`) at the suite's
    schedule; `sets` are `key=value` overrides of nested fields (values parsed as Python literals)."""
    import ast

    from mumae_jax.configs import pretrain

    c = pretrain.get_config("tiny" + (",data=mmact" if data_dir else ""))
    c.total_steps, c.warmup_steps = TOTAL_STEPS, 5
    c.checkpoint_every_steps, c.keep_checkpoints, c.log_every_steps = CHECKPOINT_EVERY, 3, 1
    if data_dir:
        c.data.dir = data_dir
    for item in sets:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node = c
        *path, leaf = key.split(".")
        for k in path:
            node = node[k]
        node[leaf] = value
    return c


def _self(sig):
    os.kill(os.getpid(), sig)


def _kill_in_checkpoint_write(at: int):
    """SIGKILL right after the checkpoint of step `at` was started (orbax writes it in the background)."""
    from mumae_jax.core import checkpointing

    save = checkpointing.Checkpointer.save

    def patched(self, step, state, meta):
        out = save(self, step, state, meta)
        if step == at:
            _self(signal.SIGKILL)
        return out

    checkpointing.Checkpointer.save = patched


def _kill_in_metrics_write(at: int):
    """SIGKILL halfway through writing the metrics line of step `at` (a torn last line)."""
    import json

    from mumae_jax.core import metrics

    write = metrics.MetricWriter.write

    def patched(self, step, scalars):
        if step == at:
            line = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line[: len(line) // 2])
            _self(signal.SIGKILL)
        return write(self, step, scalars)

    metrics.MetricWriter.write = patched


def _kill_in_dataset_build(at: int):
    """SIGKILL after the TFDS build has generated `at` examples of its first split."""
    from mumae_jax.data import mmact_tfds

    generate = mmact_tfds.Mmact._generate_examples

    def patched(self, prepared, recs):
        for n, item in enumerate(generate(self, prepared, recs), 1):
            yield item
            if n >= at:
                _self(signal.SIGKILL)

    mmact_tfds.Mmact._generate_examples = patched


def _term_in_logging(at: int):
    """SIGTERM while the training record of step `at` is being written (after its device_get)."""
    from mumae_jax.core import metrics

    write = metrics.MetricWriter.write

    def patched(self, step, scalars):
        write(self, step, scalars)
        if step == at and "loss" in scalars:
            _self(signal.SIGTERM)

    metrics.MetricWriter.write = patched


def _term_in_call(module: str, owner: str, name: str):
    """SIGTERM during the `at`-th call of `owner.name` (owner '' : a module function)."""
    def install(at: int):
        import importlib

        mod = importlib.import_module(module)
        target = getattr(mod, owner) if owner else mod
        fn = getattr(target, name)
        calls = [0]

        def patched(*a, **k):
            calls[0] += 1
            if calls[0] == at:
                _self(signal.SIGTERM)
            return fn(*a, **k)

        setattr(target, name, patched)
    return install


def _pause_at(at: int):
    """Waits after logging step `at` until the file `<workdir>.go` exists (at most 5 min): keeps the run,
    and its workdir lock, alive while the suite starts a second run on the same workdir."""
    import time

    from mumae_jax.core import metrics

    write = metrics.MetricWriter.write

    def patched(self, step, scalars):
        write(self, step, scalars)
        if step == at and "loss" in scalars:
            go, t0 = str(self.path.parent) + ".go", time.time()
            while not os.path.exists(go) and time.time() - t0 < 300:
                time.sleep(0.05)

    metrics.MetricWriter.write = patched


def _nonfinite_at(at: int):
    """NaN sensor values in the batch of step `at` (a damaged recording): the loss is non-finite."""
    import jax
    import jax.numpy as jnp

    from mumae_jax.steps import pretraining_step

    make = pretraining_step.make_train_step

    def patched_make(*a, **k):
        step_fn = make(*a, **k)

        def step(state, batch):
            if int(jax.device_get(state["step"])) == at - 1:
                batch = {n: (v * jnp.nan if n != "video" and jnp.issubdtype(v.dtype, jnp.floating) else v)
                         for n, v in batch.items()}
            return step_fn(state, batch)
        return step

    pretraining_step.make_train_step = patched_make


INJECTIONS = {
    "kill_in_checkpoint_write": _kill_in_checkpoint_write,
    "kill_in_metrics_write": _kill_in_metrics_write,
    "kill_in_dataset_build": _kill_in_dataset_build,
    "term_in_logging": _term_in_logging,
    "term_in_evaluation": _term_in_call("mumae_jax.evaluators.frozen", "FewshotEvaluator", "__call__"),
    "term_in_pictures": _term_in_call("mumae_jax.evaluators.pictures", "", "write_pictures"),
    "nonfinite_at": _nonfinite_at,
    "pause_at": _pause_at,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one run of the fault suite")
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", default="", help="a prepare_mmact output (default: the synthetic data)")
    p.add_argument("--inject", default="", help=f"KIND@N, KIND one of {', '.join(INJECTIONS)}")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mumae_jax").setLevel(logging.INFO)
    try:
        config = suite_config(a.data, a.set)
        if a.inject:
            kind, _, at = a.inject.partition("@")
            INJECTIONS[kind](int(at))
        from mumae_jax.trainers import pretraining

        out = pretraining.train_and_evaluate(config, a.workdir)
    except Exception as e:  # noqa: BLE001 - the one line a user of main.py reads last
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr, flush=True)
        return 1
    print(f"finished at step {out['step']}" + (" (stopped by SIGTERM)" if out["preempted"] else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
