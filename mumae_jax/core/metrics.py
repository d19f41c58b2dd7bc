"""Metric writers: JSON lines (always) and TensorBoard event files (optional).

Only process 0 writes; the workdir may be local or gs:// (etils.epath). `metrics.jsonl` holds one
object per log step: {"step": int, name: float, ...}.
TensorBoard events go through the `tensorboard` package's own event-file writer (no TensorFlow ops:
eager TF calls in the training loop would contend for the GIL with the tf.data workers).
"""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Optional

import jax
from etils import epath


class MetricWriter:
    def __init__(self, workdir: str, tensorboard: bool = True, enabled: Optional[bool] = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not self.enabled:
            return
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from tensorboard.compat.proto import event_pb2, summary_pb2
                from tensorboard.summary.writer.event_file_writer import EventFileWriter
            except ImportError as e:
                raise ImportError("config.write_tensorboard=True needs the tensorboard package (pip install "
                                  "tensorboard); set --config.write_tensorboard=False to write metrics.jsonl "
                                  "only") from e
            self._tb = EventFileWriter(os.path.join(workdir, "tensorboard"))
            self._event, self._summary = event_pb2.Event, summary_pb2.Summary

    def truncate_after(self, step: int) -> None:
        """A (re)start at `step`: drops the JSONL records with step > `step` and tells TensorBoard to do the
        same (a SessionLog START event at `step + 1`: TensorBoard then hides the steps >= `step + 1` of
        the events written before it).

        Called at every start, step 0 included, so a run killed before its first checkpoint leaves no
        records beside the rerun's. A torn last line (a kill in the middle of a write) is dropped; a bad
        line elsewhere is an error naming the file and the line.
        """
        if not self.enabled:
            return
        if self._tb is not None:
            from tensorboard.compat.proto import event_pb2
            start = self._event(wall_time=time.time(), step=int(step) + 1,
                                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
            self._tb.add_event(start)
            self._tb.flush()
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        keep = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if i == len(lines) - 1:  # torn by a kill during the write: the step is re-logged
                    break
                raise ValueError(f"{self.path}: line {i + 1} is not JSON ({e})") from e
            if record["step"] <= step:
                keep.append(line + "\n")
        self.path.write_text("".join(keep), encoding="utf-8")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")
        if self._tb is not None:
            summary = self._summary(value=[self._summary.Value(tag=k, simple_value=v) for k, v in values.items()])
            self._tb.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in epath.Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
