"""The one-shot stage's evaluation: fixed validation / test episode lists, accuracy ± CI of a state on
a list, the periodic evaluator of the episodic trainer (validation accuracy, best checkpoint kept in
`best/`, optional test accuracy) and the final report (final, validation-selected and, labelled, the
paper's test-selected maximum).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from etils import epath

from mumae_jax.core import checkpointing, loop, sharding
from mumae_jax.data import episodes as E
from mumae_jax.data import sources
from mumae_jax.data.geometry import ClipGeometry
from mumae_jax.evaluators import episode_accuracy
from mumae_jax.models.oneshot import MuMAEOneShot
from mumae_jax.steps import episodic_step

log = logging.getLogger(__name__)

PARTS = {"val": "validation", "test": "novel"}


def geometry(config) -> ClipGeometry:
    """What an episode clip becomes (`config.episodes`: `num_frames` frames, image_size, resize_to, sensor_length)."""
    ep = config.episodes
    return ClipGeometry(num_frames=ep.num_frames, image_size=ep.image_size, sensor_length=ep.sensor_length,
                        sensors=tuple(config.sensors), resize_to=ep.resize_to)


def draw(config, recs, cs, part: str, num: int, seed: int) -> E.EpisodeList:
    """`num` episodes of the config's episode geometry from class-split part `part`."""
    ep = config.episodes
    return E.make_episode_list(recs, cs, part=part, way=ep.way, shot=ep.shot, protocol=ep.protocol,
                               queries=ep.queries, num_episodes=num, seed=seed,
                               distinct_instances=ep.distinct_instances)


def eval_list(config, recs, cs, workdir: str, which: str) -> Optional[E.EpisodeList]:
    """The fixed `which` ('val' | 'test') list: a given file, else drawn (and checked against the one a
    resumed run saved). Writes nothing: `save_eval_list` saves a drawn list once the run is set up."""
    part = PARTS[which]
    given = config.evals.episodes.get(f"{which}_list", "")
    if given:
        lst = E.load_episode_list(given)
        E.verify_episode_list(lst, recs)
        return lst
    if not getattr(cs, part):
        return None
    path = epath.Path(workdir) / f"episodes_{which}.json"
    settings = config.evals.episodes
    lst = draw(config, recs, cs, part, settings[f"{which}_episodes"], settings[f"{which}_seed"])
    if path.exists():
        saved = E.load_episode_list(path)
        if list(saved) != list(lst):
            raise ValueError(f"{path} differs from the list this config draws; a resumed run must keep its "
                             f"episodes (delete the workdir or pass eval.{which}_list={path})")
    return lst


def save_eval_list(config, workdir: str, which: str, lst: Optional[E.EpisodeList]) -> None:
    """Saves a drawn `which` list as workdir/episodes_{which}.json (process 0, once)."""
    path = epath.Path(workdir) / f"episodes_{which}.json"
    if lst is not None and not config.evals.episodes.get(f"{which}_list", "") and not path.exists() \
            and jax.process_index() == 0:
        E.save_episode_list(path, lst)


def late_weights(config) -> tuple[float, ...]:
    """`config.evals.episodes.late_weights` under late fusion: the weights to choose from on validation (() = the
    model's `late_weight`); like `model.late_weight`, unused by the other fusions."""
    if config.model.get("fusion", "mae_query") != "late":
        return ()
    return tuple(float(w) for w in config.evals.episodes.get("late_weights", ()))


def check_late_weights(config, val_list) -> None:
    """A weight grid is chosen on validation classes: an error when the class split has none."""
    grid = late_weights(config)
    if grid and not val_list:
        raise ValueError(f"config.evals.episodes.late_weights={grid} is chosen on validation classes, and this "
                         "class split has none (config.class_split.num_val=0)")


def choose_late_weight(val_result: dict) -> int:
    """Index of the best validation accuracy of a grid evaluation (the first of equals: list the preferred
    weight first)."""
    return int(np.argmax(val_result["accuracy"]))


def at_weight(result: dict, k: int, grid: Sequence[float]) -> dict:
    """The single-weight result {'accuracy', 'ci95', 'num_queries', 'hits' [E, Q], 'late_weight'} of a grid
    evaluation."""
    return {"accuracy": result["accuracy"][k], "ci95": result["ci95"][k], "num_queries": result["num_queries"],
            "hits": result["hits"][:, k], "late_weight": grid[k]}


def validate(evaluate: Callable, state, val_list, grid: Sequence[float], progress: bool = False
             ) -> tuple[dict, Optional[int]]:
    """The validation result of `evaluate` (a `clip_evaluator`) and, with a late-weight `grid`, the index of the
    weight chosen on it, the result taken at that weight; (result, None) without a grid."""
    v = evaluate(state, val_list, "validation", progress=progress)
    if not grid:
        return v, None
    k = choose_late_weight(v)
    return at_weight(v, k, grid), k


def clip_evaluator(config, model: MuMAEOneShot, mesh, state_sh, grid: Sequence[float] = ()) -> Callable:
    """evaluate(state, episode_list, part, progress=False) -> {'accuracy', 'ci95', 'num_queries', 'hits'}:
    every distinct clip of the list encoded once (evaluation transform), then the episode head per episode
    (`episode_accuracy.evaluate_by_clips`; the same predictions as running the model episode by episode).
    With a `grid` of late-fusion weights, one result per weight (lists, hits [E, K, Q]; `at_weight`)."""
    encode_step, head_step = episodic_step.make_clip_eval_steps(model, mesh, state_sh, grid)
    source, geo, be = sources.get_source(config.data), geometry(config), int(config.evals.episodes.batch_episodes)
    rank, procs = jax.process_index(), jax.process_count()

    def local(batch):  # this process's share of a batch every process holds whole
        per = len(next(iter(batch.values()))) // procs
        return sharding.to_global({k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}, mesh)

    def evaluate(state, lst, part: str, progress: bool = False):
        names = sorted({c for e in lst for c in (*e.support, *e.query)})
        it = source.clip_input(names, geo, part=part, batch_size=be)
        try:
            encoded = episode_accuracy.encode_clips(
                lambda b: jax.device_get(encode_step(state, sharding.to_global(b, mesh))), it, len(names),
                share=(rank, procs), progress=progress)
        finally:
            it.close()
        return episode_accuracy.evaluate_by_clips(lambda b: jax.device_get(head_step(state, local(b))), encoded,
                                                  names, lst, be)

    return evaluate


def make_evaluator(name: str, settings, stage) -> "EpisodeEvaluator":
    """The `episodes` evaluator type (`evaluators/common.py`) of the one-shot stage, every `settings.every_tasks`
    tasks. stage: config, mesh, workdir, model, state_sh, val_list, test_list, tasks_per_step, start, history,
    progress."""
    grid = late_weights(stage["config"])
    evaluate = clip_evaluator(stage["config"], stage["model"], stage["mesh"], stage["state_sh"], grid)
    return EpisodeEvaluator(settings, evaluate, stage["workdir"], stage["val_list"], stage["test_list"],
                            stage["tasks_per_step"], stage["start"], stage["history"], stage["progress"], name, grid)


class EpisodeEvaluator:
    """The episodic trainer's periodic evaluator (`loop.Evaluator`): accuracy on the fixed validation list
    (a strictly better one saves the state in `best/`) and, with `settings.report_test_selection`, on the
    test list. `history`: the records already logged (a resumed run), for the best validation accuracy so far.
    With a `grid` of late-fusion weights (`evaluate` scores every weight), each evaluation first chooses the
    weight on validation (`late_weight` in the record) and reports validation and test accuracy at it.
    """

    def __init__(self, settings, evaluate: Callable, workdir: str, val_list, test_list, tasks_per_step: int,
                 start: int, history, progress: bool, name: str = "episodes", grid: Sequence[float] = ()):
        self.name, self.every = name, max(1, round(settings.every_tasks / tasks_per_step))
        self.grid = tuple(grid)
        self.settings, self.evaluate, self.progress, self.t = settings, evaluate, progress, tasks_per_step
        self.val_list, self.test_list = val_list, test_list
        self.best_ckpt = checkpointing.Checkpointer(os.path.join(workdir, "best"), 1)
        for b in self.best_ckpt.all_steps():
            if b > start:  # saved after the checkpoint the run resumes from; it will be re-evaluated
                self.best_ckpt.manager.delete(b)
        self.best = max((h["val_accuracy"] for h in history if "val_accuracy" in h), default=-1.0)

    def _validate(self, state) -> tuple[dict, Optional[int]]:
        return validate(self.evaluate, state, self.val_list, self.grid, self.progress)

    def _test(self, state, k: Optional[int]) -> dict:
        r = self.evaluate(state, self.test_list, "novel", progress=self.progress)
        return r if k is None else at_weight(r, k, self.grid)

    def run(self, step: int, state) -> dict:
        rec, k = {"tasks": step * self.t}, None
        if self.val_list:
            v, k = self._validate(state)
            rec.update(val_accuracy=v["accuracy"], val_ci95=v["ci95"])
            if k is not None:
                rec["late_weight"] = self.grid[k]
            if v["accuracy"] > self.best:
                self.best = v["accuracy"]
                self.best_ckpt.save(step, state, {"step": step, "val_accuracy": self.best})
        if self.settings.report_test_selection:
            r = self._test(state, k)
            rec.update(test_accuracy=r["accuracy"], test_ci95=r["ci95"])
        return rec  # the training loop prints and logs it

    def close(self) -> None:
        self.best_ckpt.wait()
        self.best_ckpt.close()

    def final_report(self, state, step: int, abstract, history, workdir: str) -> dict:
        """The report (also written to report.json / report.txt): test accuracy of the final state, of the
        validation-selected checkpoint and, if asked, the labelled test-selected maximum of `history`."""
        def logged_weight(at_step):  # the weight an evaluation at `at_step` chose, as its index in the grid
            w = next((h["late_weight"] for h in history if h["step"] == at_step and "late_weight" in h), None)
            return self.grid.index(w) if w in self.grid else None  # (another grid: chosen again below)

        def scored(st, at_step) -> dict:  # test result, with the late weight chosen on validation if a grid
            k = logged_weight(at_step) if self.grid else None
            if self.grid and k is None:
                k = self._validate(st)[1]
            r = self._test(st, k)
            return {"step": at_step, "accuracy": r["accuracy"], "ci95": r["ci95"], "num_queries": r["num_queries"],
                    **({"late_weight": r["late_weight"]} if k is not None else {})}

        final_rec = scored(state, step)
        val_rec = None
        self.best_ckpt.wait()
        best_step = self.best_ckpt.latest_step()
        if best_step is not None:
            chosen = final_rec if best_step == step else scored(self.best_ckpt.restore(best_step, abstract)[0],
                                                                best_step)
            val_acc = next(h["val_accuracy"] for h in history if h["step"] == best_step and "val_accuracy" in h)
            val_rec = {**chosen, "val_accuracy": val_acc}
        evals = [h for h in history if "val_accuracy" in h or "test_accuracy" in h]
        report = episode_accuracy.selection_report(evals, final_rec, val_rec, self.settings.report_test_selection)
        loop.write_json(workdir, "report.json", report)
        if jax.process_index() == 0:
            (epath.Path(workdir) / "report.txt").write_text(episode_accuracy.format_report(report) + "\n",
                                                            encoding="utf-8")
        log.info("one-shot report written to %s", os.path.join(workdir, "report.txt"))
        return report
