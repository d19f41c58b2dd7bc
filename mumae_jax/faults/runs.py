"""Starting, stopping and reading the fault suite's child runs (`mumae_jax.faults.child`).

A `Suite` owns a scratch folder, starts child processes, keeps one uninterrupted reference run per data
source, and compares a finished workdir's `metrics.jsonl` with the reference's, record by record.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from mumae_jax.faults.child import TOTAL_STEPS

TIMING_KEYS = ("steps_per_sec", "clips_per_sec")  # the only fields allowed to differ between runs
_RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


@dataclasses.dataclass
class Run:
    """A finished child: exit code (negative: killed by that signal), output, wall seconds."""
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def resumed_at(self) -> int:
        m = _RESUMED.search(self.stderr)
        return int(m.group(1)) if m else 0

    def said(self, *patterns: str) -> str:
        """The last output line matching the first of `patterns` (regexes) that any line matches, else the
        last line, else ''."""
        lines = [ln.strip() for ln in (self.stderr + "\n" + self.stdout).splitlines() if ln.strip()]
        for p in patterns:
            for ln in reversed(lines):
                if re.search(p, ln):
                    return ln
        return lines[-1] if lines else ""


def training_records(workdir) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl` that carry a training loss (a torn last line is skipped)."""
    path = Path(workdir) / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in record:
                out.append(record)
    return out


def last_step(workdir) -> int:
    records = training_records(workdir)
    return records[-1]["step"] if records else 0


def complete_checkpoints(workdir) -> list[int]:
    """Steps of the finished checkpoints (orbax renames a step's temporary folder to `<step>` when done)."""
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


class Suite:
    def __init__(self, root, *, log=print, timeout_s: float = 600, in_process: bool = False):
        """in_process: the runs without a fault (the reference, the reruns) run in this process, which must
        see the same devices as the children; saves a process start where jax is already imported (tests)."""
        self.root = Path(root)
        self.in_process = in_process
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timeout_s = timeout_s
        self._references: dict[str, list[dict]] = {}
        self._prepared: Optional[Path] = None
        self._count = 0
        checkout = Path(__file__).resolve().parents[2]  # configs/ lives in the checkout, beside the package
        cache = {"JAX_COMPILATION_CACHE_DIR": str(self.root / "jax_cache"),  # one compilation for all runs
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        self.env = {**cache, **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                    "PYTHONPATH": os.pathsep.join([str(checkout)] + [p for p in
                                                   os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}

    def workdir(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:03d}-{name}"

    def start(self, workdir, *, data: str = "", inject: str = "", sets=(), file_size_limit: int = 0):
        cmd = [sys.executable, "-m", "mumae_jax.faults.child", "--workdir", str(workdir)]
        cmd += ["--data", data] if data else []
        cmd += ["--inject", inject] if inject else []
        for s in sets:
            cmd += ["--set", s]

        def limit():  # a full disk, as the process sees it: writes past the limit fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                preexec_fn=limit if file_size_limit else None)
        proc.started = time.perf_counter()
        return proc

    def finish(self, proc) -> Run:
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\nerror: the fault suite stopped this run after {self.timeout_s:.0f} s"
        return Run(proc.returncode, out, err, time.perf_counter() - proc.started)

    def run(self, workdir, **kw) -> Run:
        if self.in_process and not (kw.get("inject") or kw.get("sets") or kw.get("file_size_limit")):
            return self._run_here(workdir, kw.get("data", ""))
        return self.finish(self.start(workdir, **kw))

    def _run_here(self, workdir, data: str) -> Run:
        """A run without a fault in this process, its log lines captured as a child's stderr would be."""
        import io
        import logging

        from mumae_jax.trainers import pretraining
        from mumae_jax.faults.child import suite_config

        stream, logger = io.StringIO(), logging.getLogger("mumae_jax")
        handler, level = logging.StreamHandler(stream), logger.level
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        t0, rc, out = time.perf_counter(), 0, ""
        try:
            result = pretraining.train_and_evaluate(suite_config(data), str(workdir))
            out = f"finished at step {result['step']}"
        except Exception as e:  # noqa: BLE001 - reported like a child's last line
            rc = 1
            stream.write(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n")
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        return Run(rc, out, stream.getvalue(), time.perf_counter() - t0)

    def wait_for_step(self, proc, workdir, step: int) -> bool:
        """Polls until `workdir` has logged `step` (True) or the process ended (False)."""
        while proc.poll() is None:
            if last_step(workdir) >= step:
                return True
            time.sleep(0.005)
        return False

    # ---- data and references ---------------------------------------------------------------------------

    def prepared(self, fresh: bool = False) -> str:
        """A prepared MMAct-layout directory of synthetic clips (written once); `fresh`: a new copy of it
        without any TFDS build, for a scenario that damages it or builds it itself."""
        if self._prepared is None:
            from mumae_jax.data import prepare_mmact, synthetic_export

            tree, out = self.root / "release_tree", self.root / "prepared"
            synthetic_export.write_release_tree(tree, ("walking", "kicking", "jumping", "running", "throwing",
                                                       "carrying", "pointing", "standing"))
            prepare_mmact.prepare(out, tree, short_side=48, min_frames=8, shard_size=8, progress=False,
                                  log=lambda *a: None)
            self._prepared = out
        if not fresh:
            return str(self._prepared)
        copy = self.workdir("prepared")
        shutil.copytree(self._prepared, copy, ignore=shutil.ignore_patterns("tfds"))
        return str(copy)

    def reference(self, data: str = "") -> list[dict]:
        """Training records of an uninterrupted run on `data` ('' synthetic, 'mmact' the prepared copy)."""
        if data not in self._references:
            wd = self.workdir(f"reference-{data or 'synthetic'}")
            run = self.run(wd, data=self.prepared() if data else "")
            records = training_records(wd)
            if run.rc != 0 or [r["step"] for r in records] != list(range(1, TOTAL_STEPS + 1)):
                raise RuntimeError(f"the uninterrupted reference run failed (exit {run.rc}): {run.said('error')}")
            self._references[data] = records
            self.log(f"reference run ({data or 'synthetic'} data): {run.seconds:.0f} s")
        return self._references[data]

    def compare(self, workdir, data: str = "") -> tuple[bool, bool]:
        """(bit-exact, one record per step): the workdir's training records against the reference's."""
        ref, got = self.reference(data), training_records(workdir)
        one_per_step = [r["step"] for r in got] == list(range(1, TOTAL_STEPS + 1))
        same = one_per_step and all({k: v for k, v in a.items() if k not in TIMING_KEYS} ==
                                    {k: v for k, v in b.items() if k not in TIMING_KEYS} for a, b in zip(got, ref))
        return same, one_per_step
