"""Warm starts (``search.warm_start``): each cell's searcher first evaluates the best configurations of its family
in earlier studies of the same store — the same dataset's first, then those of the datasets most alike by simple
meta-features (rows, columns, classes, share of categorical columns) — and then searches as usual.

Read from the store before any work (``preflight``); a configuration outside the cell's space now (the space
changed since) is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml
from mlflow.tracking import MlflowClient

from trainables.base import TASK_METRICS, Data
from tunelab.errors import StudyError
from tunelab.predictor import CATEGORICAL
from tunelab.run.plan import Cell, Plan
from tunelab.tracking import (
    BEST_PREFIX,
    DATASET,
    META_PREFIX,
    MODEL,
    ROLE_CELL,
    find_study_run,
    run_filter,
    search_runs,
)

FIELD = "search.warm_start.from"


@dataclass(frozen=True)
class Start:
    """A configuration a cell starts from, and where it came from."""

    config: dict
    study: str
    dataset: str
    distance: float  # between the datasets' meta-features: 0 for the same dataset, inf where unknown

    @property
    def origin(self) -> str:
        return f"{self.study}/{self.dataset}"


@dataclass(frozen=True)
class Source:
    """An earlier cell's best configuration, with what the warm start matches on."""

    study: str
    family: str
    dataset: str
    task: str
    config: dict
    meta: dict


def meta_features(data: Data) -> dict[str, float]:
    """What tells datasets apart for a warm start: rows, raw columns, classes (0: regression), categorical share."""
    columns = len(data.columns) or len(data.feature_names)
    categorical = sum(kind == CATEGORICAL for kind in data.columns.values())
    return {
        "rows": float(len(data.y_train) + len(data.y_val) + len(data.y_test)),
        "columns": float(columns),
        "classes": float(data.n_classes),
        "categorical": categorical / columns if columns else 0.0,
    }


def distance(a: dict, b: dict) -> float:
    """Euclidean, on log rows, log columns, log(1 + classes) and the categorical share; inf where one is unknown."""
    if not a or not b:
        return math.inf
    return math.sqrt(
        (math.log(a["rows"]) - math.log(b["rows"])) ** 2
        + (math.log(a["columns"]) - math.log(b["columns"])) ** 2
        + (math.log1p(a["classes"]) - math.log1p(b["classes"])) ** 2
        + (a["categorical"] - b["categorical"]) ** 2
    )


def starts(plan: Plan, client: MlflowClient) -> dict[str, list[Start]]:
    """Per cell key, the configurations it starts from (at most ``top``), nearest dataset first."""
    ws = plan.study.search.warm_start
    if ws is None:
        return {}
    sources = [s for name in ws.studies for s in _sources(client, name, plan.source)]
    return {cell.key: pick(sources, cell, meta_features(plan.datasets[cell.dataset]), ws.top) for cell in plan.cells}


def pick(sources: list[Source], cell: Cell, here: dict, top: int) -> list[Start]:
    """The ``top`` distinct configurations of ``cell``'s family and task that fit its space: the same dataset's
    first, then by the distance of their dataset's meta-features to ``here`` (the cell's)."""
    found = sorted(
        (
            Start(s.config, s.study, s.dataset, 0.0 if s.dataset == cell.dataset_name else distance(here, s.meta))
            for s in sources
            if s.family == cell.family and s.task == cell.task and _fits(cell, s.config)
        ),
        key=lambda s: s.distance,
    )
    picked: list[Start] = []
    for s in found:
        if len(picked) < top and all(s.config != p.config for p in picked):
            picked.append(s)
    return picked


def _sources(client: MlflowClient, name: str, source) -> list[Source]:
    study = find_study_run(client, name, hint=f" (named in {source}: {FIELD})")
    cells = search_runs(client, [study.info.experiment_id], run_filter(ROLE_CELL, parent=study.info.run_id))
    out = []
    for c in cells:
        tags, metric = c.data.tags, c.data.params.get("metric", "")
        config = {k.removeprefix(BEST_PREFIX): yaml.safe_load(v) for k, v in tags.items() if k.startswith(BEST_PREFIX)}
        task = next((t for t, metrics in TASK_METRICS.items() if metric in metrics), None)
        if c.info.status != "FINISHED" or not config or task is None:
            continue
        meta = {k.removeprefix(META_PREFIX): float(v) for k, v in tags.items() if k.startswith(META_PREFIX)}
        out.append(Source(name, tags[MODEL], tags[DATASET], task, config, meta))
    if not out:
        raise StudyError(f"{source}: {FIELD}", f"study '{name}' has no finished cell with a best configuration")
    return out


def _fits(cell: Cell, config: dict) -> bool:
    """Every parameter the cell searches is in ``config``, within the cell's space."""
    params = cell.space.params
    return all(n in config and p.contains(config[n]) for n, p in params.items() if p.kind != "constant")
