"""The training loop's shared pieces, used by both trainers (`trainers/pretraining.py`, `trainers/oneshot_training.py`).

A trainer builds its stage (model, data, jitted step), then runs

    with loop.TrainLoop(workdir, config, total=T, desc="pretrain", examples_per_step=B) as run:
        state, start = run.restore_or_init(abstract_state, init)   # newest checkpoint, else init()
        ...                                                       # warm start, input from `start`
        for step in range(start + 1, T + 1):
            state, metrics = step_fn(state, next(batches))
            if run.end_step(step, state, metrics):               # log, evaluate, save; True: preempted
                break

`TrainLoop` owns the run lock, the checkpointer, the metric writer (JSONL + TensorBoard), the progress bar,
preemption, the non-finite stop, the periodic evaluators and the cleanup, so both stages behave alike:

- log every `config.log_every_steps` and at the last step: means of the pending step metrics, steps/s and
  examples/s, after a non-finite check;
- evaluators (`Evaluator`: `every` steps and at the last step, a step that stops on SIGTERM included: the
  resumed run starts after it and would not redo it; a stop therefore waits for the evaluation due at its step);
- checkpoint every `config.checkpoint_every_steps`, at the last step and when stopping; a non-finite state is
  never saved (`check_finite`);
- SIGTERM (`Preemption`): with several processes all of them stop at the same step.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import jax
import numpy as np
import tqdm
from etils import epath

from mumae_jax.core import checkpointing, host_memory, metrics, run_lock

log = logging.getLogger(__name__)


def steps(config, prefix: str, num_examples: int, batch_size: int) -> int:
    """`config.<prefix>_steps` if positive, else `<prefix>_epochs` x examples / batch, rounded."""
    n = config.get(f"{prefix}_steps", -1)
    if n is not None and n > 0:
        return int(n)
    epochs = config.get(f"{prefix}_epochs", -1)
    if epochs is None or epochs < 0:
        raise ValueError(f"set config.{prefix}_steps or config.{prefix}_epochs")
    return int(round(epochs * num_examples / batch_size))


def itstime(step: int, every: int, total: int) -> bool:
    """True every `every` steps (1-based `step`) and at the last step; never when `every` <= 0."""
    return every > 0 and (step % every == 0 or step == total)


def check_positive(config, fields: Sequence[str]) -> None:
    """ValueError naming the first `config.<field>` below 1."""
    for field in fields:
        if config[field] < 1:
            raise ValueError(f"config.{field}={config[field]} must be >= 1")


def check_finite(state) -> None:
    """FloatingPointError naming the first step whose loss or gradient norm was not finite (`nonfinite_step`)."""
    bad = int(jax.device_get(state["nonfinite_step"]))
    if bad >= 0:
        raise FloatingPointError(f"non-finite loss or gradient norm at training step {bad}; stopping. "
                                 f"No checkpoint was written for step {bad} or later.")


def write_json(workdir: str, name: str, obj: Any) -> None:
    """workdir/name as indented JSON, written by process 0 only."""
    if jax.process_index() == 0:
        (epath.Path(workdir) / name).write_text(json.dumps(obj, indent=1), encoding="utf-8")


def format_summary(s: Mapping[str, Any]) -> str:
    """The closing lines of a run (`TrainLoop.summary`): where it is, what it reached, how long it took, the
    latest loss and evaluation numbers, and what usually comes next."""
    def secs(v):
        return "n/a" if v is None else f"{v:.0f} s"

    lines = [f"{s['stage']} finished at step {s['step']} of {s['total_steps']}"
             + (" (stopped by SIGTERM)" if s["preempted"] else ""),
             f"  workdir           {s['workdir']} (summary.json)",
             f"  last checkpoint   step {s['last_checkpoint']}",
             f"  time              {secs(s['wall_s'])}: compile + first step {secs(s['first_step_s'])}, "
             f"evaluation {secs(s['evaluation_s'])}"]
    for k, v in s["latest"].items():
        if k == "loss" or k.endswith("_accuracy"):
            lines.append(f"  {k:<17} {v:.4g}")
    if s["next_commands"]:
        lines += ["next:"] + [f"  {c}" for c in s["next_commands"]]
    return "\n".join(lines)


def write_config(config, workdir: str) -> None:
    """workdir/config.json (process 0): what `weights.pretrained.load_config` and a resumed run read."""
    if jax.process_index() == 0:
        (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2), encoding="utf-8")


def warm_start(state: Mapping[str, Any], params, tx, state_sh) -> dict:
    """`state` with `params` (placed with the state's shardings) and a fresh optimizer state for them.

    Goes through host copies: converted parameters may share arrays (one MAE kernel can feed both TimeSformer
    attentions), and a donated state must not hold one buffer twice.
    """
    params = jax.device_put(jax.tree.map(np.array, jax.device_get(params)), state_sh["params"])
    return {**state, "params": params, "opt_state": jax.jit(tx.init, out_shardings=state_sh["opt_state"])(params)}


class Preemption:
    """SIGTERM as a stop decision polled once per step: `should_stop(step)`, the same on every process.

    One process: a Python handler sets `requested` (only possible in the main thread). Several processes
    (`jax.distributed`): jax's preemption service owns SIGTERM and `reached_preemption_sync_point(step)` is
    True at the same step on every process, so all of them save that step and stop together, even when only
    one was signalled. `requested` is then only this process's view (used to skip work before the save).
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._synced = None

    def __enter__(self):
        from jax._src import distributed as jax_distributed  # where jax keeps its preemption sync manager

        state = getattr(jax_distributed, "global_state", None)
        if jax.process_count() > 1 and getattr(state, "preemption_sync_manager", None) is not None:
            from jax.experimental import multihost_utils

            self._synced = multihost_utils.reached_preemption_sync_point  # SIGTERM is left to jax's notifier
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook kernels)
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Must be called at every step by every process (the multi-process check is a collective)."""
        return self._synced(step) if self._synced else self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Evaluator(Protocol):
    """A periodic evaluator: `every` steps (and at the last step) `run(step, state)` returns named scalars
    (written to the metrics at that step); files it writes are its own."""

    name: str
    every: int

    def run(self, step: int, state: Mapping[str, Any]) -> dict[str, float]: ...


@dataclasses.dataclass
class FunctionEvaluator:
    """An `Evaluator` from a function of (step, state)."""

    name: str
    every: int
    fn: Callable[[int, Mapping[str, Any]], dict]

    def run(self, step, state):
        return self.fn(step, state)


class TrainLoop:
    """Run lock, checkpoints, metrics, progress bar, preemption, evaluators and cleanup of one training run.

    `examples_per_step` (clips or episodes per step) gives the `<example_name>_per_sec` metric; `postfix`
    maps logged metric names to the format the progress bar shows them in. `history` holds the records
    logged so far, those of earlier (resumed) runs included.
    """

    def __init__(self, workdir: str, config, *, total: int, desc: str, examples_per_step: int,
                 example_name: str = "clips", postfix: Optional[Mapping[str, str]] = None,
                 evaluators: Sequence[Evaluator] = ()):
        self.workdir, self.total, self.desc = workdir, int(total), desc
        self.examples_per_step, self.example_name = int(examples_per_step), example_name
        self.postfix = dict(postfix or {"loss": "{:.4f}"})
        self.evaluators = list(evaluators)
        self.log_every, self.save_every = int(config.log_every_steps), int(config.checkpoint_every_steps)
        self.keep, self.tensorboard = int(config.keep_checkpoints), bool(config.write_tensorboard)
        self.show_bar = bool(config.progress_bar) and jax.process_index() == 0
        self.preempted, self.history, self.start = False, [], 0
        self._closers: list[Callable[[], None]] = []
        self._pending: list = []
        self.times = {"first_step_s": None, "evaluation_s": 0.0}  # compile + first step; evaluator runs
        self.last_saved: Optional[int] = None

    # ---- set-up and cleanup ----
    def __enter__(self):
        self._t_enter = time.perf_counter()
        self._lock = run_lock.RunLock(self.workdir).__enter__()
        try:
            self.ckpt = checkpointing.Checkpointer(os.path.join(self.workdir, "checkpoints"), self.keep)
            self.writer = metrics.MetricWriter(self.workdir, tensorboard=self.tensorboard)
            self.stop = Preemption().__enter__()  # stays until the last checkpoint is committed
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def closing(self, close: Callable[[], None]) -> None:
        """Runs `close()` when the loop ends (input iterators), before the checkpoint wait; so are the
        evaluators' own `close()`."""
        self._closers.append(close)

    def __exit__(self, *exc):
        try:
            for close in self._closers + [e.close for e in self.evaluators if hasattr(e, "close")]:
                close()
            if hasattr(self, "bar"):
                self.bar.close()
            self.ckpt.wait()
            self.ckpt.close()
            self.writer.close()
        finally:
            self.stop.__exit__(*exc)
            self._lock.__exit__(*exc)

    def restore_or_init(self, abstract, init: Callable[[], Any]) -> tuple[Any, int]:
        """(state, start): the newest restorable checkpoint (damaged ones are moved aside) into `abstract`'s
        shardings, else `init()` at step 0. Metrics logged past `start` by a killed run are dropped."""
        newest = self.ckpt.restore_newest(abstract)
        self.start = newest[0] if newest else 0
        self.writer.truncate_after(self.start)
        if self.writer.path.exists():
            for rec in metrics.read_jsonl(self.writer.path):
                self._merge(rec["step"], {k: v for k, v in rec.items() if k != "step"})
        if self.start:
            log.info("resumed from %s at step %d", self.ckpt.directory, self.start)
            state = newest[1]
        else:
            state = jax.block_until_ready(init())
        self.bar = tqdm.tqdm(total=self.total, initial=self.start, desc=f"{self.desc} (compiling)", unit="step",
                             dynamic_ncols=True, disable=not self.show_bar)
        self._t_log, self._since_log = time.perf_counter(), 0
        self._t_first = self._t_log
        return state, self.start

    # ---- per step ----
    def end_step(self, step: int, state, step_metrics) -> bool:
        """After training step `step` (1-based): log, evaluate and save as due. True when the run must stop
        (preempted: the step is saved and committed)."""
        if step == self.start + 1:  # the step was just compiled: give what the compiler freed back
            self.times["first_step_s"] = time.perf_counter() - self._t_first
            host_memory.release_freed()
            self._resume_bar()  # the rate (ETA) leaves compilation out
        self._pending.append(step_metrics)
        self._since_log += 1
        self.bar.update(1)
        last = step == self.total or self.stop.requested
        if step % self.log_every == 0 or last:
            self._log(step, state)
        due = [ev for ev in self.evaluators if itstime(step, ev.every, self.total)]
        if due:  # also on a stop: a resumed run does not redo this step's evaluation
            t = time.perf_counter()
            self.bar.set_description(f"{self.desc} (evaluating)")
            for ev in due:
                scalars = {k: float(v) for k, v in ev.run(step, state).items()}
                self.record(step, scalars)
                if scalars:
                    self._say(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
            self.times["evaluation_s"] += time.perf_counter() - t
            self._resume_bar()
        stopping = self.stop.should_stop(step)  # read again: the signal may have come while logging or evaluating
        if last or stopping or step % self.save_every == 0:
            self.save(step, state)
        if stopping:
            self.preempted = True
            self.ckpt.wait()  # async save: say "saved" only once it is committed
            log.warning("SIGTERM received: saved a checkpoint at step %d and stopping", step)
        return stopping

    def _resume_bar(self) -> None:
        """After a pause (compilation, evaluation): the bar's rate and ETA do not count it."""
        self.bar.set_description(self.desc)
        self.bar.unpause()

    def _say(self, line: str) -> None:
        """One line for the console (process 0), above the progress bar when there is one."""
        if jax.process_index() == 0:
            if self.show_bar:
                self.bar.write(line)
            else:
                log.info("%s", line)

    def _log(self, step: int, state) -> None:
        fetched = jax.device_get(self._pending)
        check_finite(state)
        elapsed = time.perf_counter() - self._t_log
        rec = {k: float(np.mean([f[k] for f in fetched])) for k in fetched[0]}
        rec["steps_per_sec"] = self._since_log / elapsed
        rec[f"{self.example_name}_per_sec"] = self._since_log * self.examples_per_step / elapsed
        self.record(step, rec)
        self.bar.set_postfix({k: f.format(rec[k]) for k, f in self.postfix.items() if k in rec})
        self._pending, self._since_log, self._t_log = [], 0, time.perf_counter()

    def record(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes `scalars` at `step` and merges them into `history` (one record per step)."""
        self.writer.write(step, scalars)
        self._merge(step, scalars)

    def _merge(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.history and self.history[-1]["step"] == step:
            self.history[-1].update(scalars)
        else:
            self.history.append({"step": step, **scalars})

    def save(self, step: int, state) -> None:
        check_finite(state)
        self.ckpt.save(step, state, {"step": step, "total_steps": self.total})
        self.last_saved = step

    # ---- the end ----
    def summary(self, step: int, next_commands: Sequence[str] = ()) -> dict:
        """What the run did, for `<workdir>/summary.json` and the closing lines (`format_summary`): steps, the
        last checkpoint, wall time (this process), compile + first step, evaluation time, the latest value of
        each logged metric, and the commands that usually come next."""
        latest: dict[str, Any] = {}
        for rec in self.history:
            latest.update({k: v for k, v in rec.items() if k != "step"})
        return {"workdir": checkpointing.absolute(self.workdir), "stage": self.desc, "start_step": self.start,
                "step": int(step), "total_steps": self.total, "preempted": self.preempted,
                "last_checkpoint": self.ckpt.latest_step() if self.last_saved is None else self.last_saved,
                "wall_s": time.perf_counter() - self._t_enter, **self.times, "latest": latest,
                "next_commands": list(next_commands)}

    def write_summary(self, step: int, next_commands: Sequence[str] = ()) -> dict:
        """`summary` written to `<workdir>/summary.json` (process 0) and returned."""
        s = self.summary(step, next_commands)
        write_json(self.workdir, "summary.json", s)
        return s
