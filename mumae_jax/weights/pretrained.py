"""Load a pretraining run or a converted checkpoint (its config and parameters) for later stages.

A pretraining workdir holds `config.json` (written by `train.train_and_evaluate`) and `checkpoints/<step>`
with the whole train state; a converted directory (`python -m mumae_jax.weights.convert`, see
`model_init.py`) has the same layout with parameters only.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import ml_collections as mlc
from etils import epath

from mumae_jax.core import checkpointing, optim, sharding
from mumae_jax.steps import pretraining_step
from mumae_jax.weights import model_init
from mumae_jax.models import layer_stack, mae


def load_config(workdir: str) -> mlc.ConfigDict:
    """The pretraining config saved in `workdir/config.json`."""
    path = epath.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a pretraining workdir written by main.py or a "
                                "directory written by python -m mumae_jax.weights.convert")
    return mlc.ConfigDict(json.loads(path.read_text(encoding="utf-8")))


def load_params(workdir: str, step: Optional[int] = None, mesh=None) -> tuple[mlc.ConfigDict, Any, int]:
    """(pretraining config, params of the `MultimodalMAE`, step) from the latest (or given) checkpoint.

    Parameters come back replicated over `mesh` (default: all devices), in the per-layer layout
    (`block00`, ...) even when the run scanned its layers (`config.model.scan`, which then reads False
    in the returned config). A converted directory may hold an encoder-only subset of the parameters.
    """
    config = load_config(workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    ckpt = checkpointing.Checkpointer(ckpt_dir, keep=1 << 30)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
        step = max(steps) if step is None or step < 0 else int(step)
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt_dir}; available: {sorted(steps)}")
        mesh = mesh if mesh is not None else sharding.make_mesh()
        if model_init.is_converted(workdir):
            state, _ = ckpt.restore_as_saved(step)
            params = jax.device_put(state["params"], sharding.replicated(mesh))
            return config, params, step
        model = mae.from_config(config)
        tx, _ = optim.make_optimizer(config, 2, 1)  # the schedule does not change the state's structure
        _, abstract, _ = pretraining_step.state_initializer(model, tx, jax.random.key(0), mesh)
        state, _ = ckpt.restore(step, abstract)
    finally:
        ckpt.close()
    params = state["params"]
    if config.model.get("scan", False):
        params = jax.device_put(layer_stack.unstack(jax.device_get(params)), sharding.replicated(mesh))
        config.model.scan = False
    return config, params, step
