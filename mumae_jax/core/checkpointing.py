"""Orbax checkpoints of the train state: periodic + final saves, keep-N, resume from the workdir."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)


def absolute(path: str) -> str:
    """A local path made absolute; gs:// (and other epath URLs) as given."""
    return path if "://" in path else os.path.abspath(path)


def _whole_replicas_on_cpu() -> None:
    """On CPU, replicated arrays are written from one whole replica.

    Orbax's default outside GPUs ("replica-parallel") has each of R replicas write 1/R of an array, through one
    compiled slice per array and replica (3,000 compilations for the tiny model on 8 CPU devices: 7 s on this
    repository's tests). CPU devices share the host's memory, so the split only costs. The files are the same
    format either way; checkpoints written with or without it restore alike."""
    global _CPU_HANDLER
    if jax.default_backend() == "cpu" and not _CPU_HANDLER:
        absl_log = logging.getLogger("absl")  # orbax warns about any override; this one is deliberate
        level = absl_log.level
        absl_log.setLevel(logging.ERROR)
        try:
            ocp.type_handlers.register_type_handler(
                jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
        finally:
            absl_log.setLevel(level)
        _CPU_HANDLER = True


_CPU_HANDLER = False  # registered once per process


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` storing {'state': pytree, 'meta': json}.

    The caller decides when to save (every N steps, at the end, on SIGTERM); orbax keeps the newest
    `keep` checkpoints and writes asynchronously.
    """

    def __init__(self, directory: str, keep: int):
        if keep < 1:
            raise ValueError(f"keep_checkpoints={keep} must be >= 1")
        _whole_replicas_on_cpu()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.directory = absolute(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        with self._write_errors():  # an earlier asynchronous write may fail here
            return self.manager.save(step, args=args, force=True)

    @contextlib.contextmanager
    def _write_errors(self):
        """A failed checkpoint write (full disk, file-size limit, permissions) as one clear OSError.

        Orbax writes a step into a temporary folder and renames it when complete, so an unfinished one is
        never taken for a checkpoint: the run can resume from the newest finished one."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - tensorstore/orbax raise ValueError and others
            text = str(e)
            cause = re.search(r"(File too large|No space left on device|Disk quota exceeded|Permission denied"
                              r"|Read-only file system)", text)
            if cause is None and not isinstance(e, OSError):
                raise
            raise OSError(f"writing a checkpoint under {self.directory} failed: "
                          f"{cause.group(1) if cause else text.splitlines()[0][:200]}. Free space (or raise the "
                          f"limit) and rerun: it resumes from the newest finished checkpoint "
                          f"({self.latest_step() or 'none yet'}).") from e

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying the *current* shardings)."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return out["state"], out["meta"]

    def restore_newest(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
        """(step, state, meta) of the newest checkpoint that restores, or None when there is none.

        A checkpoint that cannot be read even without a target (files missing or corrupt) is moved aside
        to `<directory>/../damaged_checkpoints/` with a warning, never deleted, and the next older one is
        tried. One that reads but does not fit `abstract_state` (another model) is an error, not damage.
        """
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, abstract_state)
                return step, state, meta
            except Exception as e:  # noqa: BLE001 - orbax raises many kinds; told apart just below
                try:
                    self.restore_as_saved(step)
                except Exception as damage:  # noqa: BLE001
                    where = self._move_aside(step)
                    log.warning("checkpoint %s/%d cannot be restored (%s: %s); moved it to %s and trying an "
                                "older one", self.directory, step, type(damage).__name__,
                                str(damage).splitlines()[0][:200], where)
                    continue
                raise ValueError(f"checkpoint {self.directory}/{step} is readable but does not fit this "
                                 f"run's model or optimizer: {str(e).splitlines()[0][:300]}") from e
        return None

    def _move_aside(self, step: int) -> str:
        """Moves the step's directory out of the manager's view (process 0 renames; all re-list)."""
        src = epath.Path(self.directory) / str(step)
        dst = epath.Path(self.directory).parent / "damaged_checkpoints" / f"{step}-{int(time.time())}"
        if jax.process_index() == 0 and src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
        self.manager.reload()
        return str(dst)

    def restore_as_saved(self, step: int) -> tuple[Any, dict]:
        """Restores the tree as it was saved (numpy leaves on the host), without a target structure."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return out["state"], out["meta"]

    def wait(self):
        with self._write_errors():
            self.manager.wait_until_finished()

    def close(self):
        self.manager.close()

