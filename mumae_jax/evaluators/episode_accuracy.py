"""Evaluation protocol of the one-shot stage: fixed episode lists, accuracy ± 95% CI, honest selection.

`evaluate_by_clips` scores every episode of a fixed list (deterministic input: centre frames, no flip)
from one encoding per distinct clip (`encode_clips`) and the episode head: the one-shot model mixes clips
only after its per-clip encoders, so this equals running the model episode by episode, and a
2,000-episode list of ~500 clips costs ~500 clip forwards instead of 20,000. It returns the per-query
hits with `accuracy_with_ci` (1.96·std/√n, percentage points).

`selection_report` turns the evaluation history of a run into the three numbers a reader needs:
  final             the last checkpoint, on the test episodes;
  validation        the checkpoint with the best accuracy on the VALIDATION classes, on the test episodes;
  test_selected     only when asked: the maximum over all test evaluations, labelled
                    "selected on test (paper protocol)" — what the official code reports (docs/official_code.md §5-I).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tqdm

from mumae_jax.core import cli
from mumae_jax.data import episodes as E

TEST_SELECTED_LABEL = "selected on test (paper protocol)"


def encode_clips(encode: Callable, clip_batches, num_clips: int, *, share: tuple[int, int] = (0, 1),
                 progress: bool = False) -> dict[str, np.ndarray]:
    """{name: float32 [num_clips, d]} from `encode(local_batch) -> {name: [B, d]}` over `clip_batches`
    (`episode_input.build_clip_input`: "index" -1 marks padding); `share` = (process index, process
    count): each process feeds its slice of every batch."""
    rank, procs = share
    out: dict[str, np.ndarray] = {}
    for b in tqdm.tqdm(clip_batches, desc="clips", unit="batch", disable=not (progress and cli.on_terminal()),
                       leave=False):
        per = len(b["index"]) // procs
        local = {k: v[rank * per:(rank + 1) * per] for k, v in b.items() if k != "index"}
        enc = encode(local)
        valid = b["index"] >= 0
        for k, v in enc.items():
            if k not in out:
                out[k] = np.zeros((num_clips,) + np.shape(v)[1:], np.float32)
            out[k][b["index"][valid]] = np.asarray(v, np.float32)[valid]
    if not out:
        raise ValueError("no clip was encoded")
    return out


def evaluate_by_clips(head: Callable, encoded: Mapping[str, np.ndarray], clip_names: Sequence[str],
                      episode_list: Sequence[E.Episode], batch_episodes: int) -> dict[str, Any]:
    """As `evaluate`, from per-clip encodings {name: [len(clip_names), d]}: `head({name: [B, N, d],
    "support_labels": [B, S]}) -> predictions [B, Q]` runs on `batch_episodes` episodes at a time (the last
    batch padded by repeating its last episode). Returns {'accuracy', 'ci95', 'num_queries', 'hits' [E, Q]}.
    A head that predicts K alternatives, [B, K, Q] (late-fusion weights), gives hits [E, K, Q] and lists of
    K accuracies and CIs."""
    if not episode_list:
        raise ValueError("the episode list is empty")
    pos = {n: i for i, n in enumerate(clip_names)}
    hits = []
    for start in range(0, len(episode_list), batch_episodes):
        eps = list(episode_list[start:start + batch_episodes])
        n = len(eps)
        eps += [eps[-1]] * (batch_episodes - n)
        rows = np.asarray([[pos[c] for c in (*e.support, *e.query)] for e in eps])
        sl = np.asarray([e.support_labels for e in eps], np.int32)
        ql = np.asarray([e.query_labels for e in eps], np.int32)
        pred = np.asarray(head({**{k: v[rows] for k, v in encoded.items()}, "support_labels": sl}))[:n]
        hits.append(pred == (ql[:n, None] if pred.ndim == 3 else ql[:n]))
    h = np.concatenate(hits, axis=0)
    if h.ndim == 3:
        acc, ci = zip(*(E.accuracy_with_ci(h[:, k]) for k in range(h.shape[1])))
        return {"accuracy": list(acc), "ci95": list(ci), "num_queries": int(h[:, 0].size), "hits": h}
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
        weight = f"  (late weight {r['late_weight']:g}, chosen on validation)" if "late_weight" in r else ""
        lines.append(f"{name:<36} {r['step']:>6}  {r['accuracy']:6.2f} ± {r['ci95']:.2f}{weight}")
    return "\n".join(lines)
