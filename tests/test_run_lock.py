"""One run per workdir: a second run is refused with a message naming the holder, and the lock of a killed
run (SIGKILL) is free again."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import make_tiny_config
from mumae_jax.core import run_lock
from mumae_jax.trainers import pretraining

HOLD = ("import sys, time; from mumae_jax.core.run_lock import RunLock; lock = RunLock(sys.argv[1]).__enter__(); "
        "print('locked', flush=True); time.sleep(120)")


def test_a_second_run_is_refused_and_a_killed_holder_frees_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_lock.WorkdirInUse, match=rf"in use by process {holder.pid} on "):
            run_lock.RunLock(str(tmp_path)).__enter__()
        with pytest.raises(run_lock.WorkdirInUse, match=f"process {holder.pid}"):  # the loops take it too
            pretraining.train_and_evaluate(make_tiny_config(), str(tmp_path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock.RunLock(str(tmp_path)):  # the kernel released the killed holder's lock
        with pytest.raises(run_lock.WorkdirInUse, match=f"process {os.getpid()}"):
            run_lock.RunLock(str(tmp_path)).__enter__()
    with run_lock.RunLock(str(tmp_path)):  # released on exit
        pass
