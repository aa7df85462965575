"""``tunelab rescore NAME --metric M``: the study report under another metric of the task, from the store alone:
no Ray, no training.

Each cell's selection is made again under M among the trials whose predictions it kept (``stored_predictions``:
its best ``tracking.keep_predictions`` under the metric it ran with), and the selected trial's test score is
computed from its stored test predictions. The record is then the study as if it had selected on M, and the
report is built from it as ever: leaderboards, normalised scores and ranks, intervals, the critical-difference
diagram, anytime and learning curves (every trial logs every metric of its task), importance, what tuning bought
(each cell logged its defaults' test score under every metric). Cells of the other task, or without stored
predictions, are left out, and the report says how many.
"""

from __future__ import annotations

from mlflow.entities import Metric, Param, Run, RunData, RunTag
from mlflow.tracking import MlflowClient

from trainables.base import METRIC_MODES, TASK_METRICS, Context, metric_sign, score
from tunelab import stored_predictions
from tunelab.errors import StudyError
from tunelab.report.record import StudyRecord, metric_of
from tunelab.tracking import BEST_STEPS, BEST_TRIAL


def rescore(record: StudyRecord, metric: str) -> tuple[StudyRecord, list[str]]:
    """``record`` as if every cell had selected on ``metric``, and notes on the cells left out."""
    if metric not in METRIC_MODES:
        raise StudyError("--metric", f"unknown metric '{metric}' (expected one of {', '.join(METRIC_MODES)})")
    cells, other_task, without = [], 0, 0
    for cell in record.cells:
        task = next(t for t, metrics in TASK_METRICS.items() if metric_of(cell) in metrics)
        if metric not in TASK_METRICS[task]:
            other_task += 1
            continue
        kept = stored_predictions.load(record.client, cell)
        if kept is None:
            without += 1
            continue
        cells.append(_selected_on(cell, task, metric, kept))
    if not cells:
        raise StudyError("--metric", f"no cell of the study has stored predictions for {metric}")
    notes = [f"rescored under {metric}: each cell's selection made again among its stored trials' predictions"]
    if other_task:
        notes.append(f"{other_task} cell(s) of the other task left out ({metric} does not apply)")
    if without:
        notes.append(f"{without} cell(s) without stored predictions left out (tracking.keep_predictions: 0)")
    kept_ids = {c.info.run_id for c in cells}
    trials = {k: v for k, v in record.trials.items() if k in kept_ids}
    return StudyRecord(record.client, record.study, cells, trials), notes


def _selected_on(cell: Run, task: str, metric: str, kept: stored_predictions.CellPredictions) -> Run:
    """A copy of the cell run whose selection, best score, test score and best trial are those under ``metric``."""
    ctx = Context(task=task, n_classes=0)
    sign = metric_sign(metric)
    val = {n: score(ctx, kept.y_val, v)[metric] for n, (v, _) in kept.trials.items()}
    number = min(val, key=lambda n: sign * val[n])
    test = score(ctx, kept.y_test, kept.trials[number][1], "test")
    row = next(t for t in kept.index if t["number"] == number)
    metrics = {**cell.data.metrics, f"best_{metric}": val[number], **test}
    params = {**cell.data.params, "metric": metric}
    tags = {**cell.data.tags, BEST_TRIAL: row["trial_id"], BEST_STEPS: str(row["step"])}
    data = RunData(
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    return Run(cell.info, data, cell.inputs)


def load(client: MlflowClient, name: str, metric: str) -> tuple[StudyRecord, list[str]]:
    return rescore(StudyRecord.load(client, name), metric)
