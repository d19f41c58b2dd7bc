"""Device mesh and shardings: data parallelism over a 1-D 'data' axis spanning every device.

Parameters and optimizer state are replicated; batches are split along their leading axis. The mesh
uses Auto axis types (the MAE gathers/scatters over a batch-sharded array need them).
"""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
    """1-D mesh ('data',) over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch_size(global_batch: int, mesh: Mesh, name: str) -> None:
    """`global_batch` (the setting called `name` in the error) is >= 1 and splits evenly over devices and processes."""
    n, procs = mesh.devices.size, jax.process_count()
    if global_batch < 1:
        raise ValueError(f"{name}={global_batch} must be >= 1")
    if global_batch % n or global_batch % procs:
        raise ValueError(f"{name}={global_batch} must be divisible by the number of devices "
                         f"({n}) and of processes ({procs})")


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy batch (this process's share) -> global arrays sharded over 'data'."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(v)) for k, v in batch.items()}
