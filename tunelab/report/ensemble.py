"""Ensembles across families: per dataset (and split), greedy ensemble selection with replacement (Caruana et al.
2004) over the stored validation predictions of every family's best trials (``stored_predictions``), scored on
test with their stored test predictions. No training: what the trials predicted is averaged.

Selection starts from the best single trial and adds, ``ROUNDS`` times, the trial (any, again or not) whose
addition to the running average scores best on validation; the ensemble is the average of the picks, each trial
weighted by how often it was picked. It is selected on validation like every family's configuration, so its
test score compares fairly with theirs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from trainables.base import TASK_METRICS, Context, metric_sign, on_test_split, score
from tunelab import stored_predictions
from tunelab.report.record import StudyRecord, metric_of
from tunelab.tracking import DATASET, MODEL, SPLIT

ROUNDS = 25
NAME = "ensemble"
COLUMNS = [
    "dataset",
    "split",
    "metric",
    "best_val",
    "test",
    "selected_family",
    "selected_family_test",
    "best_family",
    "best_family_test",
    "members",
]


def select(val: list[np.ndarray], y: np.ndarray, ctx: Context, metric: str, rounds: int = ROUNDS) -> Counter:
    """Caruana's greedy selection with replacement: index -> times picked."""
    sign = metric_sign(metric)

    def loss(pred: np.ndarray) -> float:
        return sign * score(ctx, y, pred)[metric]

    first = min(range(len(val)), key=lambda i: loss(val[i]))
    picks, total = Counter({first: 1}), val[first].astype(np.float64)
    for n in range(1, rounds):
        best = min(range(len(val)), key=lambda i: loss((total + val[i]) / (n + 1)))
        picks[best] += 1
        total += val[best]
    return picks


def blend(preds: list[np.ndarray], picks: Counter) -> np.ndarray:
    n = sum(picks.values())
    return sum(preds[i].astype(np.float64) * (k / n) for i, k in picks.items())


def ensembles(record: StudyRecord) -> pd.DataFrame:
    """Per (dataset, split): the ensemble's validation and test score; the family the study selects (best on
    validation, the leaderboard's first) and the family best on test (a bar no selection on validation is sure to
    reach), with their test scores; the members with their weights."""
    groups: dict[tuple[str, int], list] = {}
    for cell in record.cells:
        kept = stored_predictions.load(record.client, cell)
        if kept is not None:
            groups.setdefault((cell.data.tags[DATASET], int(cell.data.tags.get(SPLIT, 0))), []).append((cell, kept))
    rows = []
    for (dataset, split), cells in groups.items():
        metric = metric_of(cells[0][0])
        task = next(t for t, metrics in TASK_METRICS.items() if metric in metrics)
        ctx, sign = Context(task=task, n_classes=0), metric_sign(metric)
        names, val, test = [], [], []
        for cell, kept in cells:
            for number, (v, t) in kept.trials.items():
                names.append(f"{cell.data.tags[MODEL]} #{number}")
                val.append(v)
                test.append(t)
        y_val, y_test = cells[0][1].y_val, cells[0][1].y_test
        picks = select(val, y_val, ctx, metric)
        best_cell = min(cells, key=lambda c: sign * c[0].data.metrics.get(on_test_split(metric), sign * np.inf))[0]
        selected = min(cells, key=lambda c: sign * c[0].data.metrics.get(f"best_{metric}", sign * np.inf))[0]
        rows.append(
            {
                "dataset": dataset,
                "split": split,
                "metric": metric,
                "best_val": score(ctx, y_val, blend(val, picks))[metric],
                "test": score(ctx, y_test, blend(test, picks), "test")[on_test_split(metric)],
                "selected_family": selected.data.tags[MODEL],
                "selected_family_test": selected.data.metrics.get(on_test_split(metric), np.nan),
                "best_family": best_cell.data.tags[MODEL],
                "best_family_test": best_cell.data.metrics.get(on_test_split(metric), np.nan),
                "members": ", ".join(f"{names[i]} ×{k}" for i, k in picks.most_common()),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def at_least(table: pd.DataFrame, bar: str = "best_family") -> float:
    """The share of datasets (splits averaged) on which the ensemble's test score is at least ``bar``'s: the family
    best on test (``best_family``) or the one the study selects on validation (``selected_family``)."""
    if table.empty:
        return float("nan")
    g = table.groupby("dataset").agg(metric=("metric", "first"), test=("test", "mean"), single=(f"{bar}_test", "mean"))
    sign = np.array([metric_sign(m) for m in g["metric"]])
    return float(np.mean(sign * g["test"] <= sign * g["single"] + 1e-12))
