"""The one-shot loop end to end on tiny shapes: pretrained initialisation, validation selection, the
report's three rows, deterministic evaluation of a saved checkpoint, resume."""
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from mumae_jax.configs import oneshot as oneshot_config
from conftest import make_tiny_config
from mumae_jax.core import metrics
from mumae_jax.evaluators import episode_accuracy, pictures
from mumae_jax.trainers import oneshot_training, pretraining
from mumae_jax.data import episodes as E


def tiny(pre_workdir, **kw):
    c = oneshot_config.get_config("runlocal,recipe=paper")  # official episodes and SGD: the loop as in the paper
    c.model_init = pre_workdir
    c.episodes.update(num_frames=2, image_size=32, resize_to=36)
    c.model.update(fused_dim=64, channels=16, sensor_dim=8)
    c.data.update(num_subjects=2, num_sessions=1, num_cameras=2)
    c.tasks_per_batch = 8
    c.total_tasks = 24
    c.evals.episodes.update(every_tasks=8, val_episodes=8, test_episodes=16, batch_episodes=8, report_test_selection=True)
    c.log_every_steps = 1
    c.checkpoint_every_steps = 1
    c.keep_checkpoints = 5
    c.write_tensorboard = False
    c.progress_bar = False
    for k, v in kw.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def pre_workdir(tmp_path_factory):
    w = str(tmp_path_factory.mktemp("pre"))
    pretraining.train_and_evaluate(make_tiny_config(total_steps=2), w)
    return w


def test_oneshot_run_reports_final_validation_and_labelled_test_selection(pre_workdir, tmp_path):
    w = str(tmp_path / "os")
    c = tiny(pre_workdir)
    c.model.update(mae_delay_tasks=8, mae_dropout=0.5)  # the scheduled rate, traced: resumes bit for bit below
    res = oneshot_training.train_and_evaluate(c, w)
    assert res["step"] == 3 and not res["preempted"]
    init = json.load(open(os.path.join(w, "init_report.json")))
    assert init["model_init"] == pre_workdir and init["step"] == 2 and len(init["mae"]["loaded"]) > 20 and len(init["video"]["loaded"]) > 20
    evals = [r for r in metrics.read_jsonl(os.path.join(w, "metrics.jsonl")) if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [1, 2, 3]
    assert all(0 <= r["val_accuracy"] <= 100 and 0 <= r["test_accuracy"] <= 100 for r in evals)
    report = json.load(open(os.path.join(w, "report.json")))
    best = max(evals, key=lambda r: r["val_accuracy"])  # first maximum wins (strict improvement)
    assert report["validation_selected"]["step"] == best["step"]
    assert report["validation_selected"]["val_accuracy"] == best["val_accuracy"]
    assert report["final"]["step"] == 3 and report["final"]["num_queries"] == 16
    assert report["final"]["accuracy"] == pytest.approx(evals[-1]["test_accuracy"])
    sel = report["test_selected"]
    assert sel["label"] == episode_accuracy.TEST_SELECTED_LABEL
    assert sel["accuracy"] == max(r["test_accuracy"] for r in evals) and sel["num_evaluations"] == 3
    assert episode_accuracy.TEST_SELECTED_LABEL in open(os.path.join(w, "report.txt")).read()
    summary = json.load(open(os.path.join(w, "summary.json")))
    assert (summary["stage"], summary["step"], summary["last_checkpoint"]) == ("one-shot", 3, 3)
    assert summary["latest"]["val_accuracy"] == evals[-1]["val_accuracy"] and summary["evaluation_s"] > 0

    # the same checkpoint and episode list give the same accuracy twice (and equal the report)
    a = oneshot_training.evaluate_checkpoint(c, w, step=3)
    b = oneshot_training.evaluate_checkpoint(c, w, step=3)
    np.testing.assert_array_equal(a["hits"], b["hits"])
    assert a["accuracy"] == report["final"]["accuracy"] and a["ci95"] == report["final"]["ci95"]
    val = oneshot_training.evaluate_checkpoint(c, w, step=3, which="val")
    assert (val["accuracy"], val["ci95"]) == (evals[-1]["val_accuracy"], evals[-1]["val_ci95"])
    # one episode through the same checkpoint: the evaluation's hit, its clips, a distribution over 5 classes
    e = oneshot_training.predict_episode(c, w, index=5, step=3)
    assert e["step"] == 3 and e["episode"] == E.load_episode_list(os.path.join(w, "episodes_test.json"))[5]
    assert (e["prediction"] == e["query_labels"]).tolist() == a["hits"][5].tolist()
    assert e["support_video"].shape == (5, 2, 32, 32, 3) and e["query_video"].shape == (1, 2, 32, 32, 3)
    np.testing.assert_allclose(e["probabilities"].sum(-1), 1.0, rtol=1e-6)
    assert e["probabilities"].argmax(-1).tolist() == e["prediction"].tolist()
    pictures.episode_figure(e, str(tmp_path / "episode.png"))
    assert Image.open(tmp_path / "episode.png").size[0] > 500
    with pytest.raises(IndexError, match="episode 16 of a test list of 16"):
        oneshot_training.predict_episode(c, w, index=16)
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match="no_such_run/checkpoints not found"):
        oneshot_training.predict_episode(c, str(missing))
    assert not missing.exists()  # nothing created on the way to the error
    v = oneshot_training.evaluate_checkpoint(c, w, best=True)
    assert v["step"] == best["step"] and v["accuracy"] == report["validation_selected"]["accuracy"]

    # the shared loop in this stage: SIGTERM at step 2 saves step 2 and reports nothing; the resumed run logs
    # the uninterrupted run's losses bit for bit and reports the same
    cut = str(tmp_path / "cut")
    stopped = oneshot_training.train_and_evaluate(c, cut, step_hook=lambda s: s == 2 and os.kill(os.getpid(),
                                                                                               signal.SIGTERM))
    assert stopped["preempted"] and stopped["step"] == 2 and stopped["report"] is None
    assert not os.path.exists(os.path.join(cut, "report.json"))
    resumed = oneshot_training.train_and_evaluate(c, cut)
    assert resumed["step"] == 3 and resumed["report"] == report
    losses = [{r["step"]: r["loss"] for r in metrics.read_jsonl(os.path.join(d, "metrics.jsonl")) if "loss" in r}
              for d in (w, cut)]
    assert losses[0] == losses[1] and sorted(losses[0]) == [1, 2, 3]

    # a finished run resumes from its last checkpoint, trains nothing and reports the same numbers; without
    # asking, no test-selected row
    c.evals.episodes.report_test_selection = False
    again = oneshot_training.train_and_evaluate(c, w)
    assert again["step"] == 3 and again["report"]["final"] == report["final"]
    assert again["report"]["validation_selected"] == report["validation_selected"]
    assert "test_selected" not in again["report"]
    assert episode_accuracy.TEST_SELECTED_LABEL not in open(os.path.join(w, "report.txt")).read()


def test_random_init_needs_no_pretraining_run_and_pretrained_init_needs_one(tmp_path):
    c = tiny("")
    with pytest.raises(ValueError, match="need config.model_init"):
        oneshot_training.train_and_evaluate(c, str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()  # a failed start leaves no workdir behind
    # a non-finite loss stops the run naming the step, with no checkpoint of it or later
    nan = tiny("", lr=1e30, total_tasks=16)
    nan.init.update(mae="random", video="random", pretrain_config="tiny")  # random init: no pretraining run
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient norm at training step \d+") as e:
        oneshot_training.train_and_evaluate(nan, str(tmp_path / "nan"))
    bad = int(str(e.value).split("training step ")[1].split(";")[0])
    saved = [int(d) for d in os.listdir(tmp_path / "nan" / "checkpoints") if d.isdigit()]
    assert all(s < bad for s in saved), (saved, bad)
    with pytest.raises(ValueError, match="config.tasks_per_batch=0 must be >= 1"):
        oneshot_training.train_and_evaluate(tiny("", tasks_per_batch=0), str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_late_weight_is_chosen_on_validation_and_tested_at_that_weight(tmp_path):
    """evals.episodes.late_weights: each evaluation picks the weight with the best VALIDATION accuracy and
    reports validation and test accuracy at it (never test's own best); the final report reuses a logged
    choice, and a final step without a logged evaluation chooses on validation again. Fake evaluations."""
    import jax
    import ml_collections
    from mumae_jax.evaluators import oneshot_episodes

    grid = (0.0, 5.0, 10.0)
    table = {1: ([50, 60, 55], [40, 30, 45]), 2: ([70, 65, 80], [60, 75, 62]), 3: ([10, 20, 15], [1, 2, 3])}

    def evaluate(state, lst, part, progress=False):  # per step: validation / test accuracy at each weight
        accs = table[int(state["step"])][0 if part == "validation" else 1]
        return {"accuracy": [float(a) for a in accs], "ci95": [1.0] * 3, "num_queries": 20,
                "hits": np.zeros((4, len(grid), 5), bool)}

    settings = ml_collections.ConfigDict(dict(every_tasks=8, report_test_selection=True))
    ev = oneshot_episodes.EpisodeEvaluator(settings, evaluate, str(tmp_path), ["val"], ["test"], 8, 0, [], False,
                                           grid=grid)
    state = lambda step: {"step": np.full((), step, np.int32)}  # noqa: E731
    history = [{"step": s, **ev.run(s, state(s))} for s in (1, 2)]
    assert [(h["late_weight"], h["val_accuracy"], h["test_accuracy"]) for h in history] == [(5.0, 60, 30),
                                                                                            (10.0, 80, 62)]
    abstract = {"step": jax.ShapeDtypeStruct((), np.int32)}
    report = ev.final_report(state(2), 2, abstract, history, str(tmp_path))
    assert (report["final"]["late_weight"], report["final"]["accuracy"]) == (10.0, 62)
    assert report["validation_selected"]["step"] == 2 and report["validation_selected"]["accuracy"] == 62
    assert "late weight 10, chosen on validation" in episode_accuracy.format_report(report)
    report = ev.final_report(state(3), 3, abstract, history, str(tmp_path))  # step 3: never evaluated
    assert (report["final"]["late_weight"], report["final"]["accuracy"]) == (5.0, 2)  # validation's choice
    assert (report["validation_selected"]["step"], report["validation_selected"]["accuracy"]) == (2, 62)
    ev.close()
    c = oneshot_config.get_config("runlocal,recipe=paper")
    c.evals.episodes.late_weights = grid
    assert oneshot_episodes.late_weights(c) == ()  # a parameter of late fusion, unused by the paper's
    c.model.fusion = "late"
    assert oneshot_episodes.late_weights(c) == grid
    with pytest.raises(ValueError, match="chosen on validation classes"):
        oneshot_episodes.check_late_weights(c, None)


def test_saved_checkpoint_is_scored_at_the_late_weight_its_evaluation_chose(pre_workdir, tmp_path):
    """evaluate_checkpoint with `late_weights` re-chooses the weight on validation for a saved checkpoint: the
    same weight and accuracies as the run's own evaluation logged (validation) and reported (test)."""
    grid = (0.0, 5.0, 50.0)
    c = tiny(pre_workdir, total_tasks=8)
    c.model.update(fusion="late", mae_pooling="modality")
    c.evals.episodes.late_weights = grid
    w = str(tmp_path / "late")
    oneshot_training.train_and_evaluate(c, w)
    logged = [r for r in metrics.read_jsonl(os.path.join(w, "metrics.jsonl")) if "val_accuracy" in r][-1]
    report = json.load(open(os.path.join(w, "report.json")))
    val = oneshot_training.evaluate_checkpoint(c, w, step=1, which="val")
    test = oneshot_training.evaluate_checkpoint(c, w, step=1)
    assert logged["late_weight"] != c.model.late_weight  # else a checkpoint scored without the grid would pass
    assert val["late_weight"] == test["late_weight"] == logged["late_weight"] in grid
    assert (val["accuracy"], val["ci95"]) == (logged["val_accuracy"], logged["val_ci95"])
    assert (test["accuracy"], test["late_weight"]) == (report["final"]["accuracy"], report["final"]["late_weight"])
