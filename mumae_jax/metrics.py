"""Metric writers: JSON lines (always) and TensorBoard event files (optional; needs TensorFlow).

Only process 0 writes. `metrics.jsonl` holds one object per log step: {"step": int, name: float, ...}.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import jax


class MetricWriter:
    def __init__(self, workdir: str, tensorboard: bool = True, enabled: Optional[bool] = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if tensorboard:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it to write events)
                import tensorflow as tf
            except ImportError as e:
                raise ImportError("config.write_tensorboard=True needs TensorFlow and TensorBoard (pip install "
                                  "tensorflow-cpu tensorboard); set --config.write_tensorboard=False to write "
                                  "metrics.jsonl only") from e
            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drops records with step > `step` (a resumed run re-logs the steps after its checkpoint)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(keep)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=int(step)):
                for k, v in scalars.items():
                    tf.summary.scalar(k, float(v))
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
