"""Multi-host on one box: two `main.py` processes (launch/local_multiprocess.sh) on 127.0.0.1 (CPU, gloo) train
the tiny config with the data split between them; a SIGTERM to one of them stops both at the same saved step;
they logged the same losses as one process on the whole batch, and their checkpoint restores in a single
process. When to join a job, and a clear error when the coordinator is unreachable."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import FAST_COMPILE
from mumae_jax.core import config_files, distributed, metrics
from mumae_jax.trainers import pretraining
from mumae_jax.weights import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/conftest.make_tiny_config as command-line overrides (what a user of main.py would type)
TINY = ["--config=configs/pretrain.py:runlocal", "--config.model.width=64", "--config.model.depth=2",
        "--config.model.num_heads=2", "--config.model.mlp_dim=128", "--config.model.decoder_width=32",
        "--config.model.decoder_depth=1", "--config.model.decoder_heads=2", "--config.modality.video.num_frames=4",
        "--config.modality.video.image_size=32", "--config.batch_size=8", "--config.total_steps=3",
        "--config.warmup_steps=1", "--config.log_every_steps=1", "--config.checkpoint_every_steps=3",
        "--config.write_tensorboard=False", "--config.progress_bar=False", "--config.data.num_subjects=2",
        "--config.data.num_sessions=1", "--config.evals.fewshot.every_steps=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _finish(proc: subprocess.Popen, what: str) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"
    return out


def _run_pair_until_signalled(workdir: str, args: list, env: dict, after_step: int) -> int:
    """Launches the pair, waits until it has logged a step > `after_step`, sends SIGTERM to process 1 only and
    returns the step both processes saved (each one's log says so)."""
    launcher = subprocess.Popen(["bash", "launch/local_multiprocess.sh", "2", *args, f"--workdir={workdir}"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = launcher.stdout.readline()
    pids = re.match(r"started 2 processes \(pids (\d+) (\d+);", first)
    assert pids, first
    log = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(log) and any(r["step"] > after_step for r in _records(log))):  # training has started
        assert time.time() < deadline and launcher.poll() is None, "the pair did not start"
        time.sleep(0.2)
    os.kill(int(pids.group(2)), signal.SIGTERM)
    out = first + _finish(launcher, "the launcher")
    stop = int(re.search(r"finished at step (\d+) \(stopped by SIGTERM\)", out).group(1))
    assert after_step < stop < 5000, out
    for i in range(2):
        with open(os.path.join(workdir, "logs", f"process_{i}.log"), encoding="utf-8") as f:
            text = f.read()
        assert f"joined a 2-process job as process {i} (explicit; 1 local / 2 global devices)" in text, text[-2000:]
        assert f"saved a checkpoint at step {stop} and stopping" in text, text[-2000:]
        # quiet by default (mumae_jax/core/cli.py): no TensorFlow oneDNN notice, no jax backend probing lines
        assert "oneDNN" not in text and "Unable to initialize backend" not in text, text[:2000]
        if after_step:
            assert re.search(rf"resumed from \S+ at step {after_step}\b", text), text[-2000:]
    return stop


def _records(path: str) -> list:
    try:
        return metrics.read_jsonl(path)
    except ValueError:  # a line being written
        return []


def test_a_launched_pair_stops_together_on_one_sigterm_resumes_and_matches_one_process(tmp_path):
    """launch/local_multiprocess.sh starts two processes; only process 1 is signalled, and the preemption sync
    makes both save the same step S1 and stop. Launched again, the pair resumes from S1 and is stopped the same
    way at S2. Its logged losses equal one uninterrupted process on the whole batch (this test's 8 devices)
    stopped at S2, and its checkpoint restores here and equals that process's."""
    pair = str(tmp_path / "pair")
    long_run = [a for a in TINY if not a.startswith(("--config.total_steps", "--config.checkpoint_every_steps"))]
    long_run += ["--config.total_steps=5000", "--config.checkpoint_every_steps=5000"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMAE_JAX_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}", JAX_PLATFORMS="cpu",
               PORT=str(_free_port()), PYTHON=sys.executable, MUMAE_JAX_INIT_TIMEOUT="120")
    first_stop = _run_pair_until_signalled(pair, long_run, env, 0)
    stop = _run_pair_until_signalled(pair, long_run, env, first_stop)

    single = str(tmp_path / "single")  # the same configuration in this process, signalled at the same step
    spec, overrides = long_run[0].split("=", 1)[1], long_run[1:]
    config = config_files.load_config_file(os.path.join(ROOT, spec), overrides)
    signal_at = lambda step: step == stop and os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    assert pretraining.train_and_evaluate(config, single, step_hook=signal_at)["step"] == stop
    a, b = (metrics.read_jsonl(os.path.join(d, "metrics.jsonl")) for d in (pair, single))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, stop + 1))
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in a], [r["grad_norm"] for r in b], rtol=1e-4)
    (_, p_pair, step), (_, p_single, _) = (pretrained.load_params(d) for d in (pair, single))
    assert step == stop
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                 jax.device_get(p_pair), jax.device_get(p_single))


def test_unreachable_coordinator_fails_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUMAE_JAX_")}
    env.update(MUMAE_JAX_COORDINATOR=f"127.0.0.1:{_free_port()}", MUMAE_JAX_NUM_PROCESSES="2",
               MUMAE_JAX_PROCESS_ID="1", MUMAE_JAX_INIT_TIMEOUT="2", JAX_PLATFORMS="cpu")
    code = "from mumae_jax.core import distributed; distributed.maybe_initialize()"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "process 1 of 2: the coordinator 127.0.0.1:" in r.stderr and "within 2 s" in r.stderr


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"MUMAE_JAX_COORDINATOR": "h:1", "MUMAE_JAX_NUM_PROCESSES": "2", "MUMAE_JAX_PROCESS_ID": "0"}, "explicit"),
    ({"MUMAE_JAX_DISTRIBUTED": "1"}, "asked"),
    ({"MUMAE_JAX_DISTRIBUTED": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}, None),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}, "slurm"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_NTASKS": "4"}, None),  # an allocation, not a step started by srun
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "mpi"),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, "tpu_pod"),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU VM
])
def test_when_to_join_a_job(env, expected):
    assert distributed.detect(env) == expected
    if expected is None:
        assert distributed.maybe_initialize(env) is False


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="MUMAE_JAX_DISTRIBUTED='maybe'"):
        distributed.detect({"MUMAE_JAX_DISTRIBUTED": "maybe"})
    with pytest.raises(ValueError, match="also set MUMAE_JAX_NUM_PROCESSES"):
        distributed.maybe_initialize({"MUMAE_JAX_COORDINATOR": "127.0.0.1:1", "MUMAE_JAX_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="expected host:port"):
        distributed.wait_for_coordinator("nohost", 1, "p")
