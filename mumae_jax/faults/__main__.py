"""`python -m mumae_jax.faults`: the fault-injection suite (see mumae_jax/faults/__init__.py)."""
from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np
import tqdm

from mumae_jax.core import cli
from mumae_jax.faults import scenarios
from mumae_jax.faults.runs import Suite

_HEADER = ("fault", "runs", "survived", "steps lost (max)", "bit-exact", "1 record/step", "as expected",
           "what the user saw (last case)")


def _cell(values) -> str:
    values = [v for v in values if v is not None]
    return f"{sum(map(bool, values))}/{len(values)}" if values else "-"


def table(outcomes: list[scenarios.Outcome]) -> str:
    """One Markdown row per fault (repeated faults summed): counts of yes over runs."""
    rows, order = {}, []
    for o in outcomes:
        if o.fault not in rows:
            order.append(o.fault)
        rows.setdefault(o.fault, []).append(o)
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for fault in order:
        os_ = rows[fault]
        lost = [o.steps_lost for o in os_ if o.steps_lost is not None]
        msg = os_[-1].message.replace("|", "/")[:160]
        lines.append(f"| {fault} | {len(os_)} | {_cell(o.survived for o in os_)} | "
                     f"{max(lost) if lost else '-'} | {_cell(o.bit_exact for o in os_)} | "
                     f"{_cell(o.one_record_per_step for o in os_)} | {_cell(o.ok for o in os_)} | `{msg}` |")
    return "\n".join(lines)


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.faults", __doc__)
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs at random moments (default: %(default)s)")
    p.add_argument("--terms", type=int, default=10, help="SIGTERMs at random moments (default: %(default)s)")
    p.add_argument("--only", default="", help=f"comma-separated scenarios (default: all of "
                                              f"{', '.join(scenarios.SCENARIOS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random moments (default: %(default)s)")
    p.add_argument("--workdir", default="", help="scratch folder, kept (default: a temporary one, removed)")
    p.add_argument("--out", default="", help="also write every case as JSON here")
    return p


def main(argv=None) -> int:
    return cli.run(_run, parser().parse_args(argv))


def _run(a) -> int:
    names = [n for n in a.only.split(",") if n] or list(scenarios.SCENARIOS)
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; known: {', '.join(scenarios.SCENARIOS)}", file=sys.stderr)
        return 2
    repeats = {"random_sigkill": a.kills, "random_sigterm": a.terms}
    cases = [n for n in names for _ in range(repeats.get(n, 1))]
    rng = np.random.default_rng(a.seed)
    scratch = a.workdir or tempfile.mkdtemp(prefix="mumae_faults_")
    suite = Suite(scratch, log=tqdm.tqdm.write)
    outcomes, skipped, t0 = [], [], time.perf_counter()
    for name in tqdm.tqdm(cases, desc="faults", unit="case", disable=not sys.stderr.isatty()):
        need = scenarios.missing(name)
        if need:
            if name not in skipped:
                skipped.append(name)
                tqdm.tqdm.write(f"skipped {name}: needs {', '.join(need)} (not installed)")
            continue
        o = scenarios.SCENARIOS[name](suite, rng)
        outcomes.append(o)
        if not o.ok:
            tqdm.tqdm.write(f"NOT AS EXPECTED: {o.fault}: {o.message}")
    print(table(outcomes))
    bad = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s, {bad} not as expected"
          + (f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else "") + f"; scratch: {scratch}"
          + ("" if a.workdir else " (removed)"))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"cases": [o.__dict__ for o in outcomes], "skipped": skipped}, f, indent=1)
    if not a.workdir:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if not outcomes:
        print("error: no case ran", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    cli.quiet_environment()
    sys.exit(main())
