"""The faults, one function each: `SCENARIOS[name](suite, rng) -> Outcome`.

Every scenario injects its fault into a child run, then (where the run can go on) reruns the same
workdir without the fault and checks it against the suite's uninterrupted reference: the training
records equal bit for bit, exactly one per step, and the steps lost are at most what the expectation
allows. `Outcome.ok` says whether what happened is what `Outcome.expected` promises.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import signal
import time
from pathlib import Path
from typing import Optional

from mumae_jax.faults.child import TOTAL_STEPS
from mumae_jax.faults.runs import Run, Suite, complete_checkpoints, last_step


@dataclasses.dataclass
class Outcome:
    fault: str
    expected: str
    survived: bool  # the work went on to the last step (or the fault was refused cleanly)
    steps_lost: Optional[int]
    bit_exact: Optional[bool]
    one_record_per_step: Optional[bool]
    message: str
    ok: bool
    seconds: float = 0.0


def _resume(suite: Suite, fault: str, expected: str, wd, first: Run, *, data: str = "", reached: int,
            allowed_start: int) -> Outcome:
    """Reruns `wd` on the same data (`data`: a prepared directory, '' synthetic) without the fault; ok when
    it resumes at `allowed_start` and ends bit-exact with one record a step. The message is the rerun's."""
    again = suite.run(wd, data=data)
    same, one = suite.compare(wd, "mmact" if data else "")
    ok = again.rc == 0 and same and one and again.resumed_at == allowed_start
    msg = again.said(r"^error") if again.rc else again.said(r"moved it to", r"resumed from")
    return Outcome(fault, expected, again.rc == 0, max(0, reached - again.resumed_at), same, one, msg, ok,
                   first.seconds + again.seconds)


def _signal_at_random(sig, suite: Suite, rng) -> Outcome:
    """`sig` at a random moment of the training loop: after a random step, a random part of a step later."""
    name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
    wd = suite.workdir(f"random-{name.lower()}")
    proc = suite.start(wd)
    target = int(rng.integers(1, TOTAL_STEPS - 1))
    running = suite.wait_for_step(proc, wd, target)
    if running:
        time.sleep(float(rng.uniform(0.0, 0.05)))  # a tiny step takes ~20-50 ms on a CPU
        proc.send_signal(sig)
    first = suite.finish(proc)
    reached, done = last_step(wd), complete_checkpoints(wd)
    if sig == signal.SIGKILL:
        expected = "resumes from the newest finished checkpoint, bit-exact"
        allowed = max(done, default=0)
    else:
        expected = "saves the step it stopped at: nothing lost, bit-exact"
        allowed = reached
    out = _resume(suite, f"{name} at a random moment", expected, wd, first, reached=reached, allowed_start=allowed)
    if sig == signal.SIGTERM:
        out.message = first.said(r"SIGTERM received", r"^error")
        out.ok = out.ok and (first.rc == 0 or (first.rc == -signal.SIGTERM and reached == 0))
    else:
        out.message = f"killed after step {reached}; {out.message}"
    return out


def random_sigkill(suite, rng):
    return _signal_at_random(signal.SIGKILL, suite, rng)


def random_sigterm(suite, rng):
    return _signal_at_random(signal.SIGTERM, suite, rng)


def _injected(fault: str, inject: str, expected: str, *, data: str = "", sets=(), term: bool = False):
    """A scenario: one injected fault (`child.INJECTIONS`), then the resume. SIGTERM ones must lose nothing.
    data='fresh': on a new, unbuilt copy of the prepared data, used again by the rerun."""
    def scenario(suite: Suite, rng) -> Outcome:
        wd = suite.workdir(inject.split("@")[0])
        prepared = suite.prepared(fresh=True) if data == "fresh" else ""
        first = suite.run(wd, data=prepared, inject=inject, sets=sets)
        reached, done = last_step(wd), complete_checkpoints(wd)
        out = _resume(suite, fault, expected, wd, first, data=prepared, reached=reached,
                      allowed_start=reached if term else max(done, default=0))
        if term:
            out.message = first.said(r"SIGTERM received", r"^error")
        else:
            out.message = f"exit {first.rc}; then: {out.message}"
        out.ok = out.ok and (first.rc == 0 if term else first.rc == -signal.SIGKILL)
        return out
    return scenario


def damaged_checkpoint(how: str):
    """The newest checkpoint (step 30 of 10/20/30) truncated or missing files: expected to fall back to 20."""
    def scenario(suite: Suite, rng) -> Outcome:
        wd = suite.workdir(f"damaged-{how}")
        first = suite.run(wd, inject="term_in_logging@30")
        newest = Path(wd) / "checkpoints" / "30"
        if how == "truncated":
            big = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
            big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
        else:
            shutil.rmtree(newest / "meta")
        out = _resume(suite, f"newest checkpoint {how}", "moved aside with a warning; resumes from the one "
                      "before, bit-exact", wd, first, reached=30, allowed_start=20)
        out.ok = out.ok and first.rc == 0 and "moved it to" in out.message
        return out
    return scenario


def nonfinite_loss(suite: Suite, rng) -> Outcome:
    at = 25
    wd = suite.workdir("nonfinite")
    first = suite.run(wd, inject=f"nonfinite_at@{at}")
    done = complete_checkpoints(wd)
    out = _resume(suite, f"non-finite loss at step {at}", "stops naming the step, no checkpoint at or after "
                  "it; the rerun resumes before it", wd, first, reached=last_step(wd), allowed_start=20)
    out.message = first.said(r"^error")
    out.ok = out.ok and first.rc == 1 and f"step {at}" in out.message and max(done, default=0) < at
    return out


def corrupt_shard(suite: Suite, rng) -> Outcome:
    prepared = Path(suite.prepared(fresh=True))
    shard = sorted(prepared.glob("clips-*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)  # zeroed bytes inside a record: its checksum no longer matches
    shard.write_bytes(bytes(data))
    wd = suite.workdir("corrupt-shard")
    first = suite.run(wd, data=str(prepared))
    msg = first.said(r"^error")
    ok = first.rc == 1 and shard.name in msg and not (Path(wd) / "checkpoints").exists()
    return Outcome("corrupt TFRecord shard", "an error naming the file; nothing trained on it", False, None,
                   None, None, msg, ok, first.seconds)


def full_disk(suite: Suite, rng) -> Outcome:
    limit = 256 << 10  # bytes per file: metrics and config fit, a checkpoint's array file does not
    wd = suite.workdir("full-disk")
    first = suite.run(wd, file_size_limit=limit)
    out = _resume(suite, f"full disk (files limited to {limit >> 10} KiB)", "stops with a clear error; no "
                  "checkpoint that restores wrongly (the rerun is bit-exact)", wd, first, reached=last_step(wd),
                  allowed_start=max(complete_checkpoints(wd), default=0))
    out.message = first.said(r"^error")
    out.ok = out.ok and first.rc == 1
    return out


def two_runs_one_workdir(suite: Suite, rng) -> Outcome:
    wd = suite.workdir("two-runs")
    a = suite.start(wd, inject="pause_at@5")  # holds the workdir until released
    suite.wait_for_step(a, wd, 5)
    b = suite.run(wd)
    Path(f"{wd}.go").touch()
    first = suite.finish(a)
    same, one = suite.compare(wd)
    msg = b.said(r"^error")
    ok = b.rc == 1 and "WorkdirInUse" in msg and first.rc == 0 and same and one
    return Outcome("two runs on one workdir", "the second is refused naming the first; the first is unharmed",
                   first.rc == 0, 0, same, one, msg, ok, first.seconds)


def two_runs_one_dataset(suite: Suite, rng) -> Outcome:
    prepared = suite.prepared(fresh=True)  # not built yet: both runs start the build together
    wds = [suite.workdir(f"shared-data-{k}") for k in "ab"]
    procs = [suite.start(wd, data=prepared) for wd in wds]
    runs = [suite.finish(p) for p in procs]
    checks = [suite.compare(wd, "mmact") for wd in wds]
    ok = all(r.rc == 0 for r in runs) and all(s and o for s, o in checks)
    msg = "; ".join(r.said(r"^finished", r"^error") for r in runs)
    return Outcome("two runs on one unbuilt dataset", "both build-or-wait and train bit-exact", ok, 0,
                   all(s for s, _ in checks), all(o for _, o in checks), msg, ok, max(r.seconds for r in runs))


_EXPECT_KILL = "resumes from the newest finished checkpoint, bit-exact"
_EXPECT_TERM = "saves that step: nothing lost, bit-exact"
_EVAL = ("evals.fewshot.every_steps=10", "evals.fewshot.num_episodes=4", "evals.fewshot.batch_size=8")

SCENARIOS = {
    "random_sigkill": random_sigkill,
    "random_sigterm": random_sigterm,
    "kill_in_checkpoint_write": _injected("SIGKILL inside an async checkpoint write (step 20)",
                                          "kill_in_checkpoint_write@20", _EXPECT_KILL),
    "kill_in_metrics_write": _injected("SIGKILL inside a metrics write (step 15)", "kill_in_metrics_write@15",
                                       _EXPECT_KILL),
    "kill_in_dataset_build": _injected("SIGKILL inside the TFDS build", "kill_in_dataset_build@3",
                                       "the rerun builds the dataset and trains bit-exact", data="fresh"),
    "term_in_logging": _injected("SIGTERM during logging (step 15)", "term_in_logging@15", _EXPECT_TERM, term=True),
    "term_in_evaluation": _injected("SIGTERM during evaluation (step 20)", "term_in_evaluation@2", _EXPECT_TERM,
                                    sets=_EVAL, term=True),
    "term_in_pictures": _injected("SIGTERM during pictures (step 20)", "term_in_pictures@2", _EXPECT_TERM,
                                  sets=("evals.pictures.every_steps=10",), term=True),
    "checkpoint_truncated": damaged_checkpoint("truncated"),
    "checkpoint_missing_files": damaged_checkpoint("missing"),
    "nonfinite_loss": nonfinite_loss,
    "corrupt_shard": corrupt_shard,
    "full_disk": full_disk,
    "two_runs_one_workdir": two_runs_one_workdir,
    "two_runs_one_dataset": two_runs_one_dataset,
}
NEEDS = {"term_in_pictures": ("matplotlib", "PIL"), "kill_in_dataset_build": ("av",), "corrupt_shard": ("av",),
         "two_runs_one_dataset": ("av",)}


def missing(name: str) -> list[str]:
    """Modules scenario `name` needs that are not installed (it is then reported as skipped)."""
    return [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]

