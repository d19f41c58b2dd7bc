"""The shared loop skeleton (core/loop.py) on a toy step, then each trainer through it: resume, SIGTERM, the
non-finite stop and periodic evaluators behave the same in both stages."""
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mumae_jax.core import checkpointing, loop, metrics, sharding
from mumae_jax.steps import train_state


def _config(**kw):
    c = ml_collections.ConfigDict(dict(log_every_steps=2, checkpoint_every_steps=3, keep_checkpoints=10,
                                       write_tensorboard=False, progress_bar=False))
    c.update(kw)
    return c


def _toy(workdir, config, total=7, bad_at=0, signal_at=0, every=2, evaluate=None):
    """A loop over a one-parameter 'model' whose loss is (w - 3)^2, trained with SGD through the real
    TrainLoop, guarded update and checkpointer. Returns (run, state, evaluator calls). `evaluate(run, step)`:
    also called by the evaluator."""
    import optax

    mesh = sharding.make_mesh()
    tx = optax.sgd(0.1)
    init, abstract, state_sh = train_state.replicated_initializer(
        lambda rng: train_state.new_state({"w": jnp.zeros(())}, tx), jax.random.key(0), mesh)

    @jax.jit
    def step_fn(state, poison):
        loss, grads = jax.value_and_grad(lambda p: (p["w"] - 3.0) ** 2 * poison)(state["params"])
        new, norms = train_state.guarded_update(tx, state, grads, loss)
        return new, {"loss": loss, **norms}

    os.makedirs(workdir, exist_ok=True)
    calls, holder = [], {}
    ev = loop.FunctionEvaluator("toy", every, lambda step, st: calls.append(step) or (
        evaluate and evaluate(holder["run"], step)) or {"w": float(st["params"]["w"])})
    with loop.TrainLoop(workdir, config, total=total, desc="toy", examples_per_step=4, evaluators=[ev]) as run:
        holder["run"] = run
        state, start = run.restore_or_init(abstract, init)
        for step in range(start + 1, total + 1):
            state, m = step_fn(state, jnp.float32(np.nan if step == bad_at else 1.0))
            if step == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            if run.end_step(step, state, m):
                break
    return run, state, calls


def test_itstime_and_steps():
    assert [s for s in range(1, 8) if loop.itstime(s, 3, 7)] == [3, 6, 7]
    assert not any(loop.itstime(s, 0, 7) for s in range(1, 8))
    c = ml_collections.ConfigDict(dict(total_steps=-1, total_epochs=2.0))
    assert loop.steps(c, "total", num_examples=50, batch_size=8) == 12  # round(2 * 50 / 8)
    with pytest.raises(ValueError, match="config.warmup_steps or config.warmup_epochs"):
        loop.steps(c, "warmup", 50, 8)


def test_toy_loop_logs_evaluates_saves_and_resumes_exactly(tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run, state, calls = _toy(full, _config())
    assert calls == [2, 4, 6, 7] and not run.preempted
    assert checkpointing.Checkpointer(os.path.join(full, "checkpoints"), 10).all_steps() == [3, 6, 7]
    logged = metrics.read_jsonl(os.path.join(full, "metrics.jsonl"))
    assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6, 7]
    assert all("clips_per_sec" in r and "steps_per_sec" in r for r in logged if "loss" in r)
    w = float(state["params"]["w"])
    np.testing.assert_allclose(w, 3.0 * (1 - 0.8 ** 7), rtol=1e-6)  # w <- w - 0.1 * 2 (w - 3)

    run, _, calls = _toy(cut, _config(), signal_at=4)  # SIGTERM during step 4: evaluate and save 4, stop
    assert run.preempted and calls == [2, 4]
    assert checkpointing.Checkpointer(os.path.join(cut, "checkpoints"), 10).all_steps() == [3, 4]
    run, state, calls = _toy(cut, _config())  # resumes at 4
    assert run.start == 4 and calls == [6, 7] and float(state["params"]["w"]) == w
    # the resumed run's history holds the earlier run's records (step 4 logged on the stop) and its own
    assert [h["step"] for h in run.history if "loss" in h] == [2, 4, 6, 7]


def test_the_bar_says_evaluating_leaves_pauses_out_of_its_rate_and_results_are_printed(tmp_path, capsys,
                                                                                       monkeypatch):
    import time

    import tqdm

    import functools

    bar_cls = tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", functools.partial(bar_cls, mininterval=0, miniters=1))  # every step a sample
    descs, rates = [], []

    def slow(run, step):
        descs.append(run.bar.desc)
        rates.append(run.bar.format_dict["rate"])  # the rate the ETA uses, before this pause
        time.sleep(0.3)

    run, _, calls = _toy(str(tmp_path / "w"), _config(progress_bar=True), total=7, evaluate=slow)
    assert calls == [2, 4, 6, 7] and descs == ["toy (evaluating): "] * 4 and run.bar.desc == "toy: "
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")] == [
        "step 2", "step 4", "step 6", "step 7"] and "w " in out, out
    # negative control: the same run with the pauses counted (no unpause) shows a much lower rate
    monkeypatch.setattr(bar_cls, "unpause", lambda self: None)
    kept = rates[-1]
    _toy(str(tmp_path / "p"), _config(progress_bar=True), total=7, evaluate=slow)
    assert kept > 3 * rates[-1], (kept, rates[-1])


def test_toy_loop_stops_on_a_nonfinite_loss_without_saving_it(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient norm at training step 5"):
        _toy(str(tmp_path), _config(checkpoint_every_steps=1), bad_at=5)
    steps = checkpointing.Checkpointer(os.path.join(tmp_path, "checkpoints"), 10).all_steps()
    assert steps == [1, 2, 3, 4]  # step 5's state (update skipped, step recorded) is never saved


def test_a_setting_below_one_is_named():
    with pytest.raises(ValueError, match="config.log_every_steps=0 must be >= 1"):
        loop.check_positive(_config(log_every_steps=0), ("log_every_steps", "checkpoint_every_steps"))
