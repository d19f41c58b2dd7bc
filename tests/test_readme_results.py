"""The README's results table is written by `python -m mumae_jax.bench.readme_results` from the runs' own records,
between markers the README has (so a rerun replaces it rather than hand-edited numbers)."""
import os

import pytest

from mumae_jax.bench import readme_results as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_outcomes_are_read_from_the_run_records():
    summary = {"step": 300, "first_step_s": 21.4, "latest": {
        "loss": 2.8214, "loss_video": 0.9612, "loss_acc": 0.5, "loss_gyro": 0.25, "fewshot/prototype_accuracy": 21.5}}
    assert R.pretrain_outcome(summary) == ("300 steps; loss 2.8214 (video 0.961, sensors 0.750); compile + first "
                                           "step 21 s; prototype_accuracy 21.5 %")
    report = {"final": {"step": 100, "accuracy": 49.25, "ci95": 5.66, "num_queries": 300},
              "validation_selected": {"step": 50, "accuracy": 54.7, "ci95": 5.6, "num_queries": 300}}
    assert R.oneshot_outcome(report, {"step": 100}) == (
        "100 updates; test (novel classes, 300 queries): final 49.2 ± 5.7 %, validation-selected 54.7 ± 5.6 % "
        "(update 50)")
    table = R.table([("python main.py", 65.0, "ok")], "2-core cpu", "2026-12-07", "abc123")
    assert "| `python main.py` | 1 min 05 s | ok |" in table and "2026-12-07, commit abc123; 2-core cpu" in table


def test_the_block_is_replaced_between_the_markers_and_the_readme_has_them():
    text = f"a\n{R.BEGIN}\nold\n{R.END}\nb\n"
    assert R.replace_block(text, "new", "X.md") == f"a\n{R.BEGIN}\nnew\n{R.END}\nb\n"
    with pytest.raises(ValueError, match="X.md: no"):
        R.replace_block("a\nb\n", "new", "X.md")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert readme.count(R.BEGIN) == 1 and readme.count(R.END) == 1
