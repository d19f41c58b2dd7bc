"""Orbax checkpoints of the train state: periodic + final saves, keep-N, resume from the workdir."""
from __future__ import annotations

import os
from typing import Any, Optional

import orbax.checkpoint as ocp


def absolute(path: str) -> str:
    """A local path made absolute; gs:// (and other epath URLs) as given."""
    return path if "://" in path else os.path.abspath(path)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` storing {'state': pytree, 'meta': json}.

    The caller decides when to save (every N steps, at the end, on SIGTERM); orbax keeps the newest
    `keep` checkpoints and writes asynchronously.
    """

    def __init__(self, directory: str, keep: int):
        if keep < 1:
            raise ValueError(f"keep_checkpoints={keep} must be >= 1")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.directory = absolute(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying the *current* shardings)."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return out["state"], out["meta"]

    def restore_as_saved(self, step: int) -> tuple[Any, dict]:
        """Restores the tree as it was saved (numpy leaves on the host), without a target structure."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return out["state"], out["meta"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()

