"""Transfer benchmark wiring: the four conditions pretrain what they claim, and the table shows every cell."""
from mumae_jax import transfer_benchmark as TB


def test_conditions_pretrain_the_claimed_models():
    video = TB.pretrain_config(TB.CONDITIONS["video_mae"]["pretrain"], 300, 0)
    sync = TB.pretrain_config(TB.CONDITIONS["mumae_sync"]["pretrain"], 300, 0)
    indep = TB.pretrain_config(TB.CONDITIONS["mumae_indep"]["pretrain"], 300, 0)
    assert tuple(video.modalities) == ("video",)
    assert len(sync.modalities) == 5 and {sync.modality[m].mask_group for m in sync.modalities[1:]} == {"sensors"}
    assert {indep.modality[m].mask_group for m in indep.modalities[1:]} == {""}
    assert sync.total_steps == 300 and sync.warmup_steps == 30 and sync.checkpoint_every_steps == 300
    assert TB.CONDITIONS["random"]["pretrain"] is None
    c = TB.oneshot_config("", 192, 0, 200)
    assert c.init.mae == "random" and c.init.video == "random" and c.total_tasks == 192
    c = TB.oneshot_config("/x", 192, 0, 200)
    assert c.init.mae == "pretrained" and c.init.video == "mae" and c.init.pretrain_workdir == "/x"


def test_table_has_every_cell():
    cell = lambda a: {"accuracy": a, "ci95": 2.5}  # noqa: E731
    rows = [{"label": "(a) random initialisation", "frozen": {"prototype": cell(20.0), "ridge": cell(21.0)},
             "oneshot": {"final": cell(22.0), "validation_selected": cell(23.0)}},
            {"label": "(c) Mu-MAE", "pretrain_loss_first": 4.7, "pretrain_loss_last": 2.74,
             "frozen": {"prototype": cell(41.25), "ridge": cell(40.0)}, "oneshot": None}]
    table = TB.format_table(rows).splitlines()
    assert len(table) == 4
    assert table[2].split("|")[3:7] == [" 20.0 ± 2.5 ", " 21.0 ± 2.5 ", " 22.0 ± 2.5 ", " 23.0 ± 2.5 "]
    assert "4.70 → 2.74" in table[3] and "41.2 ± 2.5" in table[3] and table[3].count("—") == 2
