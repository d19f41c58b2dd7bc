"""The README's results table, made by running the README's commands: `python -m mumae_jax.bench.readme_results`.

    python -m mumae_jax.bench.readme_results [--workdir=workdirs/readme_results] [--readme=README.md] [--tests]

Runs, as a user would (each in a fresh process, timed by the wall clock):
  pretrain   python main.py --config=configs/pretrain.py:runlocal --workdir=W/runlocal
  oneshot    python main.py --config=configs/oneshot.py:runlocal --config.model_init=W/runlocal --workdir=W/oneshot
  tests      (--tests) the README's test command, as .ci/run calls it: pytest -q -n 2 --dist loadfile tests
and writes the table (command, wall time, outcome read from the runs' summary.json / report.json), with the
machine, the date and the commit, between the `<!-- readme_results -->` markers of --readme (and to
W/results.md). Existing workdirs are replaced: every number comes from this invocation.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from typing import Optional, Sequence

from mumae_jax.core import cli

BEGIN, END = "<!-- readme_results:begin -->", "<!-- readme_results:end -->"


def machine() -> str:
    """CPU model, core count, memory, accelerator and versions, in one line."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        mem = "? GiB"
    dev = jax.devices()[0]
    acc = "no accelerator" if dev.platform == "cpu" else f"{len(jax.devices())}x {dev.device_kind}"
    return (f"{os.cpu_count()}-core {cpu}, {mem}, {acc}; Python {platform.python_version()}, jax {jax.__version__}")


def commit(root: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" + local changes" if dirty else "") if out.returncode == 0 else "?"
    except OSError:
        return "?"


def timed(argv: Sequence[str], cwd: str, log: str) -> float:
    """Runs `argv` (output to `log`); its wall seconds; a failure is an error naming the log."""
    t = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run(list(argv), cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        cli.fail(f"`{' '.join(argv)}` exited {rc}; see {log}")
    return time.perf_counter() - t


def minutes(s: float) -> str:
    """179.6 -> '3 min 00 s' (rounded to the second before splitting, never '2 min 60 s')."""
    m, r = divmod(round(s), 60)
    return f"{m} min {r:02d} s"


def pretrain_outcome(summary: dict) -> str:
    last = summary["latest"]
    probes = {k: v for k, v in last.items() if k.startswith("fewshot/") and k.endswith("_accuracy")}
    sensors = sum(v for k, v in last.items() if k.startswith("loss_") and k != "loss_video")
    return (f"{summary['step']} steps; loss {last['loss']:.4f} (video {last.get('loss_video', float('nan')):.3f}, "
            f"sensors {sensors:.3f}); compile + first step {summary['first_step_s']:.0f} s"
            + "".join(f"; {k.split('/', 1)[1]} {v:.1f} %" for k, v in sorted(probes.items())))


def oneshot_outcome(report: dict, summary: dict) -> str:
    f, v = report["final"], report["validation_selected"]
    return (f"{summary['step']} updates; test (novel classes, {f['num_queries']} queries): final "
            f"{f['accuracy']:.1f} ± {f['ci95']:.1f} %, validation-selected {v['accuracy']:.1f} ± {v['ci95']:.1f} % "
            f"(update {v['step']})")


def tests_outcome(log: str) -> str:
    with open(log, encoding="utf-8") as f:
        tail = [ln for ln in f.read().splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    return tail[-1].strip("= ") if tail else "?"


def table(rows: Sequence[tuple[str, float, str]], where: str, when: str, rev: str) -> str:
    lines = [f"Made by `python -m mumae_jax.bench.readme_results` on {when}, commit {rev}; {where}.", "",
             "| command | wall time | outcome |", "|---|---|---|"]
    lines += [f"| `{cmd}` | {minutes(s)} | {out} |" for cmd, s, out in rows]
    return "\n".join(lines)


def replace_block(text: str, block: str, path: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}"


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.bench.readme_results", __doc__)
    p.add_argument("--workdir", default="workdirs/readme_results", help="where the runs go (replaced)")
    p.add_argument("--readme", default="README.md", help="file whose marked block gets the table ('' : none)")
    p.add_argument("--root", default=".", help="the checkout the commands run in")
    p.add_argument("--tests", action="store_true", help="also run the test suite (about 12 min on 2 cores)")
    return p


def _run(a) -> int:
    root, wd = os.path.abspath(a.root), os.path.abspath(a.workdir)
    if not os.path.exists(os.path.join(root, "main.py")):
        raise FileNotFoundError(f"--root {root} has no main.py (run from the checkout or pass --root)")
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    py, rows = sys.executable, []
    pre, shot = os.path.join(wd, "runlocal"), os.path.join(wd, "oneshot")
    cmd = ["main.py", "--config=configs/pretrain.py:runlocal", f"--workdir={pre}"]
    s = timed([py, *cmd], root, os.path.join(wd, "pretrain.log"))
    with open(os.path.join(pre, "summary.json"), encoding="utf-8") as f:
        rows.append(("python " + " ".join(cmd).replace(wd, "W"), s, pretrain_outcome(json.load(f))))
    cmd = ["main.py", "--config=configs/oneshot.py:runlocal", f"--config.model_init={pre}", f"--workdir={shot}"]
    s = timed([py, *cmd], root, os.path.join(wd, "oneshot.log"))
    with open(os.path.join(shot, "report.json"), encoding="utf-8") as f, \
            open(os.path.join(shot, "summary.json"), encoding="utf-8") as g:
        rows.append(("python " + " ".join(cmd).replace(wd, "W"), s, oneshot_outcome(json.load(f), json.load(g))))
    if a.tests:
        cmd = ["-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "tests"]
        log = os.path.join(wd, "tests.log")
        s = timed([py, *cmd], root, log)
        rows.append(("python " + " ".join(cmd), s, tests_outcome(log)))
    block = table(rows, machine(), time.strftime("%Y-%m-%d"), commit(root))
    with open(os.path.join(wd, "results.md"), "w", encoding="utf-8") as f:
        f.write(block + "\n")
    if a.readme:
        with open(a.readme, encoding="utf-8") as f:
            text = replace_block(f.read(), block, a.readme)
        with open(a.readme, "w", encoding="utf-8") as f:
            f.write(text)
    print(block)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_run, parser().parse_args(argv))


if __name__ == "__main__":
    cli.quiet_environment()
    raise SystemExit(main())
