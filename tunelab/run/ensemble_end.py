"""The study's ensembles, once its cells are closed: per dataset (and split), Caruana's selection over the
predictions its cells kept (``report.ensemble.select``, as the report makes it), its members refit where their
cells' resources are, logged into a run of its own (``ensemble · <dataset>``, under the study run) as one model —
the members' weighted mean, taking raw rows like every other — and registered with alias ``ensemble``.

A dataset gets one only where every one of its cells was closed in this driver session with kept predictions (a
resumed study's earlier cells are not held in memory: no partial ensemble is registered).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import ray

from trainables import FAMILIES
from trainables.base import TASK_METRICS, Context, on_test_split, score
from trainables.trial import refit
from tunelab.report.ensemble import ROUNDS, blend, select
from tunelab.run.cell_end import MODEL_LOG_DEADLINE_S, STUDY_KEY, CellRuns
from tunelab.run.plan import Cell, Plan
from tunelab.tracking import DATASET, ROLE, ROLE_ENSEMBLE, SPLIT, STUDY, Tracker, registered_name

log = logging.getLogger("tunelab")
REFIT = ray.remote(refit)


def register_ensembles(plan: Plan, tracker: Tracker, cell_runs: CellRuns, refs: dict[str, Any]) -> None:
    """An ensemble per dataset whose cells (two or more) all kept their best trials' predictions in this session."""
    by_dataset: dict[str, list[Cell]] = {}
    for cell in plan.cells:
        by_dataset.setdefault(cell.dataset, []).append(cell)
    for dataset, cells in by_dataset.items():
        if len(cells) < 2 or not all(cell_runs.kept_trials.get(c.key) for c in cells):
            continue  # one family, or a cell closed before a resume (or with every trial failed): no ensemble
        try:
            _ensemble(plan, tracker, cell_runs, refs, dataset, cells)
        except Exception as e:  # the cells' own results stand; the ensemble of this dataset is missing, and said so
            print(f"  ensemble · {dataset}: not made ({type(e).__name__}: {e})", file=sys.stderr, flush=True)


def _ensemble(plan: Plan, tracker: Tracker, runs: CellRuns, refs: dict, dataset: str, cells: list[Cell]) -> None:
    data, metric = plan.datasets[dataset], cells[0].metric
    task = next(t for t, metrics in TASK_METRICS.items() if metric in metrics)
    candidates = [(cell, n, *kept) for cell in cells for n, kept in sorted(runs.kept_trials[cell.key].items())]
    y_val = data.y_train if data.folds else data.y_val
    ctx = Context(task=task, n_classes=data.n_classes)
    picks = select([c[2] for c in candidates], y_val, ctx, metric)
    weights = {i: k / sum(picks.values()) for i, k in picks.items()}
    val = score(ctx, y_val, blend([c[2] for c in candidates], picks))[metric]
    test = score(ctx, data.y_test, blend([c[3] for c in candidates], picks), "test")
    members = [(candidates[i], w) for i, w in weights.items()]
    key, name = f"ensemble/{dataset}", f"ensemble · {dataset}"
    tags = {ROLE: ROLE_ENSEMBLE, DATASET: cells[0].dataset_name, SPLIT: cells[0].split, STUDY: plan.study.name}
    params = {
        "metric": metric,
        "rounds": ROUNDS,
        "members": "; ".join(f"{c.family} #{n} ×{w:.2f}" for (c, n, *_), w in members),
    }
    tracker.start_run(key, name, tags, parent=STUDY_KEY, params=params)
    tracker.log_metrics(key, {f"best_{metric}": val, **test}, step=0)
    if plan.study.tracking.register_models:
        fitted = ray.get(
            [
                REFIT.options(num_cpus=cell.resources.cpus_per_trial, num_gpus=cell.resources.gpus_per_trial).remote(
                    FAMILIES[cell.family], refs[dataset], config, plan.context(cell), step
                )
                for (cell, _, _, _, config, step), _ in members
            ]
        )
        models = [(FAMILIES[c.family], out["model"], w) for ((c, *_), w), out in zip(members, fitted)]
        registered = registered_name(plan.study.name, dataset)
        try:
            version = tracker.log_ensemble(key, models, data, registered).result(timeout=MODEL_LOG_DEADLINE_S)
            tracker.call(
                tracker.client.set_registered_model_alias,
                registered,
                ROLE_ENSEMBLE,
                str(version.registered_model_version),
            )
        except Exception as e:  # counted by the tracker as lost; the study's exit status says so
            log.warning("%s: not registered (%s: %s)", name, type(e).__name__, e)
    tracker.end_run(key, "FINISHED")
    log.info("%s: %s %.4g (validation), %s %.4g", name, metric, val, on_test_split(metric), test[on_test_split(metric)])
