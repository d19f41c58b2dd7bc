"""The official Mu-MAE sensor preprocessing (docs/official_code.md §1.4, §6 item 9), in numpy.

Per file and per axis min-max normalisation to [0, 1], then resampling to a fixed number of samples
with `floor(linspace(0, L - 1, n))`. Each sensor is stretched independently, whatever its rate.

Difference from the official code: an axis that is constant over the file (max == min) is mapped to
0 here; the official code divides 0 by 0 and produces NaN.
"""
from __future__ import annotations

import numpy as np

DEFAULT_LENGTH = 128


def _check_values(values) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"sensor values must have shape [L, C], got shape {v.shape}")
    if v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"sensor values are empty (shape {v.shape})")
    if not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
        raise ValueError(f"sensor values must be real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("sensor values contain NaN or infinite entries")
    return v


def minmax_normalize(values) -> np.ndarray:
    """Per-axis min-max normalisation of one file. values [L, C] → float32 [L, C] in [0, 1].

    A constant axis becomes all zeros (the official code gives NaN there).
    """
    v = _check_values(values)
    lo = v.min(axis=0)
    span = v.max(axis=0) - lo
    ok = span > 0
    out = np.where(ok, (v - lo) / np.where(ok, span, 1.0), 0.0)
    return out.astype(np.float32)


def resample_indices(length: int, n: int = DEFAULT_LENGTH) -> np.ndarray:
    """Indices `floor(linspace(0, length - 1, n))` as int64 [n].

    For length < n samples repeat; this is what the official code effectively does (it tiles the
    tensor but indexes it with the original length).
    """
    length, n = int(length), int(n)
    if length < 1:
        raise ValueError(f"cannot resample an empty sequence (length={length})")
    if n < 1:
        raise ValueError(f"number of output samples must be >= 1, got {n}")
    return np.floor(np.linspace(0.0, length - 1, n)).astype(np.int64)


def preprocess_sensor(values, n: int = DEFAULT_LENGTH) -> np.ndarray:
    """values [L, C] → float32 [n, C]: `minmax_normalize` then `resample_indices`."""
    norm = minmax_normalize(values)
    return norm[resample_indices(norm.shape[0], n)]
