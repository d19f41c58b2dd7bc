"""Multi-host start: `jax.distributed.initialize` when launched on a cluster, or when asked to.

One process per host (TPU VM pods) or per GPU / node (Slurm). `maybe_initialize()` must run before
anything touches a JAX backend (main.py calls it first). It initialises when:
  MUMAE_JAX_COORDINATOR=host:port   with MUMAE_JAX_NUM_PROCESSES and MUMAE_JAX_PROCESS_ID: an explicit job
                                    (the local launcher, clusters JAX does not detect);
  MUMAE_JAX_DISTRIBUTED=1           asked: JAX detects the cluster (TPU pod, Slurm, Open MPI, ...);
  detected                          a Slurm step with more than one task, an Open MPI job with more than one
                                    rank, or a TPU VM pod (TPU_WORKER_HOSTNAMES lists more than one worker);
and never when MUMAE_JAX_DISTRIBUTED=0. MUMAE_JAX_INIT_TIMEOUT (seconds, default 300) bounds the wait
for the coordinator; past it the error names the coordinator, this process and what to check.
On CPU, cross-process collectives go through gloo.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping, Optional

import jax

log = logging.getLogger(__name__)

ENV_ASK, ENV_COORDINATOR, ENV_NUM, ENV_ID, ENV_TIMEOUT = (
    "MUMAE_JAX_DISTRIBUTED", "MUMAE_JAX_COORDINATOR", "MUMAE_JAX_NUM_PROCESSES", "MUMAE_JAX_PROCESS_ID",
    "MUMAE_JAX_INIT_TIMEOUT")


def _int(env: Mapping[str, str], name: str, default: int = 0) -> int:
    try:
        return int(env.get(name, default))
    except ValueError as e:
        raise ValueError(f"environment variable {name}={env.get(name)!r} is not an integer") from e


def detect(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why this process should join a multi-process job ('explicit', 'asked', 'slurm', 'mpi', 'tpu_pod'),
    or None for a single-process run."""
    env = os.environ if env is None else env
    ask = env.get(ENV_ASK, "").strip().lower()
    if ask in ("0", "false", "no"):
        return None
    if env.get(ENV_COORDINATOR):
        return "explicit"
    if ask in ("1", "true", "yes"):
        return "asked"
    if ask:
        raise ValueError(f"{ENV_ASK}={env[ENV_ASK]!r}: expected 1 or 0")
    if "SLURM_STEP_ID" in env and _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1)) > 1:
        return "slurm"
    if _int(env, "OMPI_COMM_WORLD_SIZE", 1) > 1:
        return "mpi"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1:
        return "tpu_pod"
    return None


def wait_for_coordinator(address: str, timeout: float, who: str) -> float:
    """Waits until `address` (host:port) accepts TCP connections; returns the seconds left of `timeout`.

    JAX's runtime aborts the whole process (no Python exception) when the coordinator stays unreachable,
    so processes other than the coordinator check first and fail with a message instead."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{ENV_COORDINATOR}={address!r}: expected host:port")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, timeout)):
                return max(deadline - time.monotonic(), 1.0)
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{who}: the coordinator {address} did not accept connections within {timeout:g} s ({e}). "
                    f"Check that process 0 was started and is reachable at that address and port (firewall, "
                    f"hostname), or raise {ENV_TIMEOUT}.") from e
            time.sleep(0.25)


def maybe_initialize(env: Optional[Mapping[str, str]] = None) -> bool:
    """Joins the multi-process job if `detect` says so; True if it did (see the module docstring)."""
    env = os.environ if env is None else env
    why = detect(env)
    if why is None:
        return False
    timeout = _int(env, ENV_TIMEOUT, 300)
    kwargs = {"initialization_timeout": timeout}
    if why == "explicit":
        num, pid = _int(env, ENV_NUM, -1), _int(env, ENV_ID, -1)
        if num < 1 or not 0 <= pid < num:
            raise ValueError(f"{ENV_COORDINATOR} is set: also set {ENV_NUM} >= 1 and 0 <= {ENV_ID} < {ENV_NUM} "
                             f"(got {env.get(ENV_NUM)!r}, {env.get(ENV_ID)!r})")
        kwargs.update(coordinator_address=env[ENV_COORDINATOR], num_processes=num, process_id=pid)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    where = kwargs.get("coordinator_address", "the coordinator JAX detects")
    who = f"process {kwargs['process_id']} of {kwargs['num_processes']}" if why == "explicit" else f"this {why} process"
    if why == "explicit" and kwargs["process_id"] > 0:
        kwargs["initialization_timeout"] = int(wait_for_coordinator(where, timeout, who))
    # If the runtime gives up later it aborts the process; this line says what it was waiting for.
    log.warning("%s: joining the job at %s (%s; waiting up to %d s, %s)", who, where, why, timeout, ENV_TIMEOUT)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # e.g. already initialised, bad arguments, no cluster detected
        raise RuntimeError(f"jax.distributed.initialize failed for {who} ({why}) with {where}: "
                           f"{type(e).__name__}: {e}") from e
    log.info("joined a %d-process job as process %d (%s; %d local / %d global devices)", jax.process_count(),
             jax.process_index(), why, jax.local_device_count(), jax.device_count())
    return True
