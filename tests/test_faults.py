"""A small part of the fault suite (`python -m mumae_jax.faults`): a kill inside a metrics write, resumed.

The child run shares the test session's compilation cache (conftest); the runs without a fault (the
reference and the resume) run in the test's process, so this costs one short child run.
"""
import json

import numpy as np
import pytest

from mumae_jax.faults import __main__ as cli
from mumae_jax.faults import scenarios
from mumae_jax.faults.child import TOTAL_STEPS, suite_config
from mumae_jax.faults.runs import Suite, training_records


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return Suite(tmp_path_factory.mktemp("faults"), log=lambda *a: None, timeout_s=300, in_process=True)


def test_kill_inside_a_metrics_write_resumes_bit_exact(suite):
    out = scenarios.SCENARIOS["kill_in_metrics_write"](suite, np.random.default_rng(0))
    assert out.ok, out  # resumed at the newest finished checkpoint: 10, or 0 while 10 was still being written
    assert out.message.startswith("exit -9; then: ")
    assert (out.bit_exact, out.one_record_per_step) == (True, True) and out.steps_lost in (4, 14)  # 14 logged
    row = cli.table([out]).splitlines()[2]
    assert f"| 1 | 1/1 | {out.steps_lost} | 1/1 | 1/1 | 1/1 |" in row


def test_the_comparison_sees_a_changed_record_and_a_repeated_step(suite, tmp_path):
    reference = suite.reference()
    assert [r["step"] for r in reference] == list(range(1, TOTAL_STEPS + 1))
    records = [dict(r) for r in reference]
    records[7]["loss"] = np.nextafter(records[7]["loss"], np.inf)  # one ulp
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert suite.compare(tmp_path) == (False, True)
    records[7] = dict(reference[7])
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + records[-1:]))
    assert suite.compare(tmp_path) == (False, False)
    records[7]["steps_per_sec"] = 1.0  # timing may differ
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert suite.compare(tmp_path) == (True, True)
    assert len(training_records(tmp_path)) == TOTAL_STEPS


def test_suite_config_overrides_and_unknown_scenario():
    c = suite_config(sets=("evals.fewshot.every_steps=10", "evals.pictures.every_steps=5"))
    assert (c.total_steps, c.checkpoint_every_steps, c.evals.fewshot.every_steps, c.evals.pictures.every_steps) == (
        TOTAL_STEPS, 10, 10, 5)
    assert cli.main(["--only", "no_such_fault"]) == 2
