"""Ablation table wiring (configs/ablations.py, mumae_jax.bench.ablations): each row pretrains and fine-tunes what
its label claims, rows run in the requested order, and the table shows every cell."""
import pytest

from mumae_jax.bench import ablations as A
from mumae_jax.core.config_files import load_config_file


@pytest.fixture(scope="module")
def config():
    return load_config_file("configs/ablations.py:runlocal")


def test_conditions_pretrain_the_claimed_models(config):
    got = {n: A.condition_config(config, n) for n in config.conditions}
    assert tuple(got["videomae"].modalities) == ("video",)
    sensors = ("acc_phone", "acc_watch", "gyro", "orientation")
    mask = lambda p, key: {p.modality[m][key] for m in sensors}  # noqa: E731
    assert mask(got["sync"], "mask_group") == {"sensors"} and mask(got["independent"], "mask_group") == {""}
    assert mask(got["time_aligned"], "mask_type") == {"time_aligned"} and mask(got["sync"], "mask_type") == {"random"}
    assert not config.conditions.random.pretrain and all(config.conditions[n].pretrain for n in got if n != "random")
    for p in got.values():  # one schedule, one seed, one geometry for every condition
        assert (p.total_steps, p.warmup_steps, p.seed, p.model.variant) == (2000, 100, 0, "Ti")
        assert p.modality.video.image_size == 64 and p.evals.fewshot.every_steps == 0
    assert A.present_groups(got["videomae"], ["all", "video", "sensors"]) == ["all", "video"]
    assert A.present_groups(got["sync"], ["sensors", "gyro", "depth"]) == ["sensors", "gyro"]
    assert {r.fusion for r in config.oneshot_rows.values()} == {"mae_query", "concat", "late"}
    assert config.oneshot_rows.oneshot_random.init == "random"
    assert {n: r.video_init for n, r in config.oneshot_rows.items() if r.init != "random"} == {
        "oneshot_sync": "mae", "oneshot_sync_concat": "mae", "oneshot_sync_late": "random"}


def test_rows_keep_the_requested_order_and_bring_their_initialisation(config):
    c = config.copy_and_resolve_references()
    c.rows = "oneshot_sync,videomae,random"
    assert A.selected_rows(c) == (["sync", "videomae", "random"], ["oneshot_sync"])
    c.rows = "sync,oops"
    with pytest.raises(ValueError, match="oops"):
        A.selected_rows(c)


def test_table_has_every_cell(config):
    cell = lambda a: {"accuracy": a, "ci95": 1.0}  # noqa: E731
    probes = {"prototype": cell(30.0), "ridge": cell(31.0)}
    anchor = {"all": probes, "video": probes, "sensors": probes, "seconds": 12.0}
    conds = [{"label": "VideoMAE (video only)", "pretrain_seconds": 100.0, "frozen": {"modality": {"all": probes, "video": {
        "prototype": cell(21.25), "ridge": cell(22.0)}}}, "frozen_seconds": {"modality": 20.0}}]
    shots = [{"label": "one-shot stage, random init", "seconds": 60.0,
              "report": {"final": cell(24.0), "validation_selected": None}}]
    lines = A.format_tables(config, anchor, conds, shots).splitlines()
    assert lines[0].startswith("| features | pooling | all: prototype | all: ridge | video: prototype")
    assert lines[2] == "| raw inputs (anchors) | — | " + " | ".join(["30.0 ± 1.0", "31.0 ± 1.0"] * 3) + " | 12 |"
    row = lines[3].split(" | ")
    assert row[:2] == ["| VideoMAE (video only)", "modality"] and row[4] == "21.2 ± 1.0"
    assert row[6:] == ["—", "—", "120 |"]  # no sensors; seconds = pretraining + probes
    assert lines[-1] == "| one-shot stage, random init | 24.0 ± 1.0 | — | 60 |"


def test_a_cached_row_made_with_other_settings_is_refused(config, tmp_path):
    """A rerun in the same workdir reuses a row only if it was made with the same settings; otherwise it
    names the keys that differ instead of printing another run's numbers."""
    p = A.condition_config(config, "sync")
    settings = A._settings(pretrain=p, frozen=config.frozen, episodes=config.episodes)
    path = tmp_path / "sync" / "result.json"
    path.parent.mkdir()
    fresh = A._cached(path, settings, {"name": "sync"})
    assert fresh == {"name": "sync", "settings": settings}
    A._write(path, {**fresh, "frozen": {"modality": {}}})
    assert A._cached(path, settings, {})["frozen"] == {"modality": {}}  # same settings: the cached result
    p.total_steps = 3000
    other = A._settings(pretrain=p, frozen=config.frozen, episodes=config.episodes)
    with pytest.raises(ValueError, match=r"pretrain\.total_steps: 2000 -> 3000"):
        A._cached(path, other, {})
