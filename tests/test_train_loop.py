"""train_and_evaluate end to end on the synthetic data: metrics, checkpoints, exact resume, NaN stop."""
import json
import os
import re
import signal

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mumae_jax.core import checkpointing, loop, metrics
from mumae_jax.trainers import pretraining


def _losses(workdir):
    return {r["step"]: r["loss"] for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))}


def test_killed_and_resumed_run_replays_exactly(tiny_config, tmp_path):
    full = str(tmp_path / "full")
    tiny_config.write_tensorboard = True
    out = pretraining.train_and_evaluate(tiny_config, full)
    tiny_config.write_tensorboard = False
    assert out["step"] == 6 and not out["preempted"]
    ref = _losses(full)
    events = EventAccumulator(os.path.join(full, "tensorboard"))
    events.Reload()
    tb = {e.step: e.value for e in events.Scalars("loss")}
    assert tb.keys() == ref.keys() and all(tb[s] == pytest.approx(ref[s], rel=1e-6) for s in ref)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    record = metrics.read_jsonl(os.path.join(full, "metrics.jsonl"))[-1]
    for key in ("loss_video", "loss_acc_phone", "loss_orientation", "lr", "grad_norm", "clips_per_sec"):
        assert np.isfinite(record[key])
    ckpt = checkpointing.Checkpointer(os.path.join(full, "checkpoints"), 2)
    assert ckpt.all_steps() == [4, 6]  # every 2 steps, keep 2

    killed = str(tmp_path / "killed")

    def kill_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    out = pretraining.train_and_evaluate(tiny_config, killed, step_hook=kill_at_3)
    assert out["preempted"] and out["step"] == 3
    assert checkpointing.Checkpointer(os.path.join(killed, "checkpoints"), 2).latest_step() == 3
    out = pretraining.train_and_evaluate(tiny_config, killed)  # resumes from step 3
    assert out["step"] == 6
    resumed = _losses(killed)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert [resumed[s] for s in range(1, 7)] == [ref[s] for s in range(1, 7)]  # bit-identical
    a, b = (jax.device_get(o["state"]["params"]) for o in (out, pretraining.train_and_evaluate(tiny_config, full)))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sigterm_during_logging_still_saves_that_step(tiny_config, tmp_path, monkeypatch, caplog):
    """The signal lands while step 3 is being logged (after the loop decided it was not the last step;
    step 3 is no periodic checkpoint): the run still saves step 3 before it says so."""
    write = metrics.MetricWriter.write

    def write_then_signal(self, step, scalars):
        write(self, step, scalars)
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(metrics.MetricWriter, "write", write_then_signal)
    workdir = str(tmp_path / "term")
    with caplog.at_level("WARNING"):
        out = pretraining.train_and_evaluate(tiny_config, workdir)
    assert out["preempted"] and out["step"] == 3
    assert "saved a checkpoint at step 3" in caplog.text
    assert checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 2).latest_step() == 3


def test_nonfinite_loss_stops_without_checkpoint(tiny_config, tmp_path):
    tiny_config.base_lr = 1e35
    tiny_config.checkpoint_every_steps = 1
    tiny_config.total_steps = 8
    workdir = str(tmp_path / "nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient norm at training step \d+") as e:
        pretraining.train_and_evaluate(tiny_config, workdir)
    bad = int(re.search(r"step (\d+)", str(e.value)).group(1))
    steps = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 3).all_steps()
    assert all(s < bad for s in steps), (steps, bad)


@pytest.mark.parametrize("section,field,value,message", [
    ("", "batch_size", 6, "config.batch_size=6 must be divisible by the number of devices"),
    ("", "batch_size", 0, "config.batch_size=0 must be >= 1"),
    ("data", "name", "nope", "unsupported dataset name 'nope'"),  # found when the data's size is read
])
def test_a_failed_start_names_the_problem_and_leaves_no_workdir(tiny_config, tmp_path, section, field, value,
                                                                 message):
    (tiny_config[section] if section else tiny_config)[field] = value
    with pytest.raises(ValueError, match=message):
        pretraining.train_and_evaluate(tiny_config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_periodic_fewshot_evaluation_is_logged_and_deterministic(tiny_config, tmp_path):
    from mumae_jax.evaluators import frozen

    tiny_config.total_steps = 2
    tiny_config.evals.fewshot.update(every_steps=2, num_episodes=6, batch_size=16)
    out = pretraining.train_and_evaluate(tiny_config, str(tmp_path))
    logged = [r for r in metrics.read_jsonl(os.path.join(tmp_path, "metrics.jsonl")) if "fewshot/ridge_accuracy" in r]
    assert [r["step"] for r in logged] == [2]
    assert "loss" in out["history"][-1] and "fewshot/ridge_accuracy" in out["history"][-1]  # main.py reads it
    for p in ("prototype", "ridge"):
        assert 0 <= logged[0][f"fewshot/{p}_accuracy"] <= 100 and logged[0][f"fewshot/{p}_ci95"] >= 0
    evaluator = frozen.FewshotEvaluator(tiny_config, tiny_config.evals.fewshot)
    again = [evaluator(out["state"]["params"]) for _ in range(2)]
    assert again[0] == again[1] == {k: v for k, v in logged[0].items() if k.startswith("fewshot/")}
    # the run's summary: summary.json and the closing lines main.py prints
    s = json.load(open(os.path.join(tmp_path, "summary.json")))
    assert s == json.loads(json.dumps(out["summary"])) and (s["step"], s["last_checkpoint"]) == (2, 2)
    assert s["latest"]["fewshot/ridge_accuracy"] == logged[0]["fewshot/ridge_accuracy"]
    assert s["latest"]["loss"] == out["history"][-1]["loss"] and s["workdir"] == str(tmp_path)
    assert s["wall_s"] > s["first_step_s"] > 0 and s["evaluation_s"] > 0
    oneshot = f"python main.py --config=configs/oneshot.py --config.model_init={tmp_path}"
    assert s["next_commands"][2].startswith(oneshot)
    text = loop.format_summary(s)
    assert f"fewshot/ridge_accuracy {s['latest']['fewshot/ridge_accuracy']:.4g}" in text
    assert "last checkpoint   step 2" in text and text.splitlines()[-1] == f"  {s['next_commands'][-1]}"
