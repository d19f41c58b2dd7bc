"""Evaluators as plug-ins, configured the same way in both stages:

    config.evals.<name> = dict(type=<type>, every_steps=N (pretraining) | every_tasks=N (one-shot), ...)

`from_config(config.evals, stage)` builds one `core.loop.Evaluator` (`name`, `every`, `run(step, state)` ->
named scalars; files it writes are its own) per entry whose period is positive, with the factory of its type:

  fewshot   frozen-encoder probes on a fixed episode list, on the live parameters (evaluators/frozen.py)
  pictures  reconstruction pictures of one fixed clip (evaluators/pictures.py)
  episodes  one-shot accuracy on the fixed validation / test lists; best checkpoint in best/
            (evaluators/oneshot_episodes.py)

Each type's module has `make_evaluator(name, settings, stage)` -> Evaluator or None (off). `stage` holds what a
trainer offers: `config`, `mesh`, `workdir`, and stage-specific entries the factory documents. A new type is one
function in its module plus a line in `TYPES`.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

TYPES = {"fewshot": "mumae_jax.evaluators.frozen", "pictures": "mumae_jax.evaluators.pictures",
         "episodes": "mumae_jax.evaluators.oneshot_episodes"}


def from_config(evals: Mapping[str, Mapping[str, Any]], stage: Mapping[str, Any]) -> list:
    """The evaluators `evals` (config.evals) asks for, in its order; entries with period 0 are off."""
    out = []
    for name, settings in (evals or {}).items():
        kind = settings.get("type", "") or (name if name in TYPES else "")  # configs written before `type`
        if kind not in TYPES:
            raise ValueError(f"config.evals.{name}.type={kind!r}: expected one of {sorted(TYPES)}")
        evaluator = importlib.import_module(TYPES[kind]).make_evaluator(name, settings, stage)
        if evaluator is not None:
            out.append(evaluator)
    return out
