"""Evaluation protocol of the one-shot stage: fixed episode lists, accuracy ± 95% CI, honest selection.

`evaluate` runs a predictor over every episode of a fixed list (deterministic input: centre frames, no
flip) and returns the per-query hits with `accuracy_with_ci` (1.96·std/√n, percentage points).

`selection_report` turns the evaluation history of a run into the three numbers a reader needs:
  final             the last checkpoint, on the test episodes;
  validation        the checkpoint with the best accuracy on the VALIDATION classes, on the test episodes;
  test_selected     only when asked: the maximum over all test evaluations, labelled
                    "selected on test (paper protocol)" — what the official code reports (spec §5-I).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tqdm

from mumae_jax.data import episodes as E

TEST_SELECTED_LABEL = "selected on test (paper protocol)"


def evaluate(predict: Callable[[Mapping[str, np.ndarray]], np.ndarray], batches, num_episodes: int,
             batch_episodes: int, desc: str = "eval", progress: bool = False) -> dict[str, Any]:
    """predict(episodes [B, ...]) -> predictions [B, Q]; `batches` yields single episodes (episode_input).

    The last batch is padded by repeating its last episode; padded results are dropped.
    Returns {'accuracy', 'ci95', 'num_queries', 'hits' [E, Q] bool}.
    """
    hits = []
    bar = tqdm.tqdm(total=num_episodes, desc=desc, unit="episode", disable=not progress, leave=False)
    done = 0
    while done < num_episodes:
        n = min(batch_episodes, num_episodes - done)
        eps = [next(batches) for _ in range(n)]
        eps += [eps[-1]] * (batch_episodes - n)
        stacked = {k: np.stack([e[k] for e in eps]) for k in eps[0] if k != "episode"}
        pred = np.asarray(predict(stacked))[:n]
        hits.append(pred == stacked["query_labels"][:n])
        done += n
        bar.update(n)
    bar.close()
    h = np.concatenate(hits, axis=0)
    acc, ci = E.accuracy_with_ci(h)
    return {"accuracy": acc, "ci95": ci, "num_queries": int(h.size), "hits": h}


def selection_report(history: Sequence[Mapping[str, Any]], final: Mapping[str, Any],
                     validation: Optional[Mapping[str, Any]], report_test_selection: bool) -> dict[str, Any]:
    """The run's report.

    history: evaluation records {'step', 'tasks', 'val_accuracy', 'val_ci95', ['test_accuracy', 'test_ci95']};
    final / validation: {'step', 'accuracy', 'ci95', ...} test results of the final and of the
    validation-selected checkpoint (validation None when no validation classes exist).
    """
    report = {"final": dict(final), "validation_selected": dict(validation) if validation else None}
    if report_test_selection:
        tested = [h for h in history if "test_accuracy" in h]
        if tested:
            best = max(tested, key=lambda h: h["test_accuracy"])
            report["test_selected"] = {"label": TEST_SELECTED_LABEL, "step": best["step"],
                                       "accuracy": best["test_accuracy"], "ci95": best["test_ci95"],
                                       "num_evaluations": len(tested)}
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """A short text table of `selection_report`'s output."""
    rows = [("final checkpoint", report["final"])]
    if report.get("validation_selected"):
        rows.append(("selected on validation classes", report["validation_selected"]))
    if report.get("test_selected"):
        rows.append((TEST_SELECTED_LABEL, report["test_selected"]))
    lines = [f"{'model':<36} {'step':>6}  test accuracy (%)"]
    for name, r in rows:
        lines.append(f"{name:<36} {r['step']:>6}  {r['accuracy']:6.2f} ± {r['ci95']:.2f}")
    return "\n".join(lines)
