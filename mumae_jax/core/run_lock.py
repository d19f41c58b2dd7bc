"""One run per workdir: an exclusive lock on `<workdir>/run.lock`, held while a training loop runs.

A second run started on the same workdir (a pretraining launched twice, a one-shot run beside its own
resume) would interleave checkpoints and metrics; it is refused with a message naming the process that
holds the lock. The lock is `fcntl.flock` on a local file, so the kernel releases it when the holder
dies (SIGKILL included): there are no stale locks to clean up. Only process 0 of a multi-process job
takes it (the other processes share the workdir by design). On object stores (gs://) there is no such
lock; the run says so once and goes on.
"""
from __future__ import annotations

import datetime
import fcntl
import logging
import os
import socket

import jax

log = logging.getLogger(__name__)


class WorkdirInUse(RuntimeError):
    pass


class RunLock:
    """`with RunLock(workdir):` the body runs as the workdir's only run (the workdir must exist)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "run.lock")
        self._file = None

    def __enter__(self):
        if jax.process_index() != 0:
            return self
        if "://" in self.path:
            log.info("%s: no lock on an object store; make sure no other run uses this workdir", self.path)
            return self
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise WorkdirInUse(f"{os.path.dirname(self.path)} is in use by {holder}; wait for that run to end "
                               "or use another --workdir") from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"process {os.getpid()} on {socket.gethostname()} (started {started})\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
