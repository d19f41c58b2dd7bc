"""A (re)start replaces what an earlier run logged past its starting step, in metrics.jsonl and in what
TensorBoard shows (read back with TensorBoard's own event reader), and survives a torn last line."""
import pytest
from tensorboard.backend.event_processing import event_accumulator

from mumae_jax.core import metrics


def _run(workdir, start, steps, value, restart=True):
    w = metrics.MetricWriter(str(workdir), tensorboard=True, enabled=True)
    if restart:
        w.truncate_after(start)
    for s in steps:
        w.write(s, {"loss": value + s})
    w.close()


def _tensorboard(workdir):
    acc = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss")]


def test_restart_drops_later_records_in_jsonl_and_tensorboard(tmp_path):
    _run(tmp_path, 0, range(1, 7), 10.0)  # a run killed after logging step 6, its last checkpoint at 3
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # killed in the middle of a write
    _run(tmp_path, 3, (4, 5), 100.0)
    assert [(r["step"], r["loss"]) for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == \
        [(1, 11.0), (2, 12.0), (3, 13.0), (4, 104.0), (5, 105.0)]
    assert _tensorboard(tmp_path) == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 104.0), (5, 105.0)]

    # negative control: appending without the restart keeps the killed run's steps beside the new ones
    other = tmp_path / "other"
    _run(other, 0, range(1, 7), 10.0)
    _run(other, 3, (4, 5), 100.0, restart=False)
    assert [r["step"] for r in metrics.read_jsonl(other / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6, 4, 5]
    assert len(_tensorboard(other)) > 5


def test_a_start_at_step_zero_drops_everything_and_a_bad_middle_line_is_named(tmp_path):
    _run(tmp_path, 0, (1, 2), 0.0)  # killed before its first checkpoint
    _run(tmp_path, 0, (1,), 50.0)
    assert metrics.read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 51.0}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\nnot json\n{"step": 2, "loss": 2.0}\n')
    w = metrics.MetricWriter(str(tmp_path), tensorboard=False, enabled=True)
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        w.truncate_after(1)
