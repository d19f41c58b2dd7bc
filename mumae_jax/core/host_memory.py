"""Host memory of this process: peak resident size and giving freed heap memory back to the system.

XLA's compiler frees a few hundred MB of host memory after compiling a large step (ViT-B: about 0.3 GB),
which glibc's allocator keeps mapped; `release_freed()` (glibc `malloc_trim`) returns it, so the
compile peak does not add to the training peak. Elsewhere (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed() -> bool:
    """Returns freed heap memory to the OS (glibc only); True if it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux VmHWM; unlike ru_maxrss not inherited across exec)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float | None:
    """Current resident memory of this process in MB (Linux only, else None)."""
    return _status_mb("VmRSS")
