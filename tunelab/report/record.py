"""What the store holds of a study: its run, its cell runs and their trial runs; each cell's best configuration."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from trainables.base import metric_sign, on_test_split
from tunelab.errors import StudyError
from tunelab.study import data_key
from tunelab.tracking import (
    BEST_PREFIX,
    BEST_STEPS,
    COMPUTE_S,
    DATASET,
    MODEL,
    PARENT,
    ROLE_CELL,
    ROLE_TRIAL,
    SPLIT,
    TRIAL_NUMBER,
    find_study_run,
    registered_name,
    run_filter,
    search_runs,
)

DIAGNOSTICS_DIR = "diagnostics"


@dataclass
class StudyRecord:
    """What the store holds of one study run: the run, its cell runs and their trial runs."""

    client: MlflowClient
    study: Run
    cells: list[Run]
    trials: dict[str, list[Run]]  # cell run id -> its trial runs, in trial order

    @classmethod
    def load(cls, client: MlflowClient, name: str) -> "StudyRecord":
        study = find_study_run(client, name)
        exp = study.info.experiment_id
        cells = [
            c
            for c in search_runs(client, [exp], run_filter(ROLE_CELL, parent=study.info.run_id))
            if c.info.status == "FINISHED"
        ]
        ids = {c.info.run_id for c in cells}
        trials: dict[str, list[Run]] = {i: [] for i in ids}
        for t in search_runs(client, [exp], run_filter(ROLE_TRIAL, study=name)):
            parent = t.data.tags.get(PARENT)
            if parent in trials:
                trials[parent].append(t)
        for runs in trials.values():
            runs.sort(key=lambda t: int(t.data.tags.get(TRIAL_NUMBER, 0)))
        cells.sort(key=lambda c: (c.data.tags[DATASET], c.data.tags[MODEL], int(c.data.tags.get(SPLIT, 0))))
        return cls(client, study, cells, trials)


def metric_of(cell: Run) -> str:
    """The metric a cell run selected on."""
    return cell.data.params["metric"]


def trial_compute_s(trial: Run) -> float:
    """Seconds a trial trained (Tune's ``time_total_s``); the run's duration for runs without the tag."""
    if COMPUTE_S in trial.data.tags:
        return float(trial.data.tags[COMPUTE_S])
    end = trial.info.end_time or trial.info.start_time
    return max(0.0, (end - trial.info.start_time) / 1000)


def cell_diagnostics(record: StudyRecord) -> dict[str, bytes]:
    """The PNGs each cell run holds under ``diagnostics/``, named ``diagnostics_<dataset>__<family>__<file>``."""
    out = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    with tempfile.TemporaryDirectory(prefix="tunelab-report-") as tmp:
        for c in record.cells:
            run_id = c.info.run_id
            pngs = [f.path for f in record.client.list_artifacts(run_id, DIAGNOSTICS_DIR) if f.path.endswith(".png")]
            for path in pngs:
                local = record.client.download_artifacts(run_id, path, tmp)
                key = f"diagnostics_{c.data.tags[DATASET]}__{c.data.tags[MODEL]}__{Path(path).name}"
                out[key] = Path(local).read_bytes()
    return out


def best_configs(client: MlflowClient, name: str, dataset: Optional[str] = None) -> list[dict]:
    """Per cell of study ``name`` (or of one dataset): the selected configuration, its scores and model URI."""
    study = find_study_run(client, name)
    cells = search_runs(client, [study.info.experiment_id], run_filter(ROLE_CELL, parent=study.info.run_id))
    known = sorted({c.data.tags[DATASET] for c in cells})
    if dataset is not None and dataset not in known:
        raise StudyError("--dataset", f"study '{name}' has no dataset '{dataset}' (expected one of {', '.join(known)})")
    out = []
    for c in cells:
        tags, metric = c.data.tags, metric_of(c)
        if (dataset is not None and tags[DATASET] != dataset) or f"best_{metric}" not in c.data.metrics:
            continue
        uri, registered = None, registered_name(name, data_key(tags[DATASET], int(tags.get(SPLIT, 0))))
        try:  # the registered alias, when this cell's model is the one it points to
            mv = client.get_model_version_by_alias(registered, tags[MODEL])
            uri = f"models:/{registered}@{tags[MODEL]}" if mv.run_id == c.info.run_id else None
        except Exception:  # never registered (tracking.register_models: false)
            pass
        out.append(
            {
                "dataset": tags[DATASET],
                "split": int(tags.get(SPLIT, 0)),
                "family": tags[MODEL],
                "metric": metric,
                "best_val": c.data.metrics[f"best_{metric}"],
                "test": c.data.metrics.get(on_test_split(metric)),
                "config": {
                    k.removeprefix(BEST_PREFIX): yaml.safe_load(v)
                    for k, v in sorted(tags.items())
                    if k.startswith(BEST_PREFIX)
                },
                "steps": tags.get(BEST_STEPS),
                "model_uri": uri,
                "run_id": c.info.run_id,
            }
        )
    out.sort(key=lambda r: (r["dataset"], r["split"], metric_sign(r["metric"]) * r["best_val"]))
    return out
