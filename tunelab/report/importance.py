"""Which hyperparameters carried each family's validation score: per cell, a random-forest surrogate of score on
configuration (fANOVA's model; its impurity importances as the variance share), pooled over the family's cells.

A cell's trials give (configuration, last validation score); with early stopping some scores are at a lower
budget, as in Optuna's and fANOVA's own use. Cells with fewer than MIN_TRIALS trials, or whose trials all scored
the same, are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from tunelab.report.record import StudyRecord, metric_of
from tunelab.tracking import DATASET, MODEL

MIN_TRIALS = 4
SURROGATE_TREES = 64


def cell_importance(params: pd.DataFrame, scores: np.ndarray, seed: int = 0) -> pd.Series:
    """Each hyperparameter's share (summing to 1) of what a surrogate forest explains of ``scores``; numbers as
    numbers, anything else by its category. Empty when there is nothing to explain."""
    varied = [c for c in params.columns if params[c].nunique(dropna=False) > 1]
    if len(params) < MIN_TRIALS or not varied or np.ptp(scores) == 0:
        return pd.Series(dtype=float)
    X = np.column_stack([_as_number(params[c]) for c in varied])
    forest = RandomForestRegressor(n_estimators=SURROGATE_TREES, min_samples_leaf=2, random_state=seed).fit(X, scores)
    share = forest.feature_importances_
    return pd.Series(share / share.sum() if share.sum() > 0 else share, index=varied)


def _as_number(values: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=float)
    return values.astype("category").cat.codes.to_numpy(dtype=float)  # a choice: trees split on its codes


def family_importance(record: StudyRecord) -> pd.DataFrame:
    """Per family and hyperparameter: the mean share over the family's cells (a parameter a cell did not vary
    counts 0 there), its spread, and the number of cells; most important first within each family."""
    rows = []
    for cell in record.cells:
        metric, trials = metric_of(cell), record.trials[cell.info.run_id]
        scored = [t for t in trials if metric in t.data.metrics]
        params = pd.DataFrame([t.data.params for t in scored])
        share = cell_importance(params, np.array([t.data.metrics[metric] for t in scored]))
        for name in params.columns if not share.empty else []:
            rows.append(
                {
                    "family": cell.data.tags[MODEL],
                    "dataset": cell.data.tags[DATASET],
                    "param": name,
                    "share": float(share.get(name, 0.0)),
                }
            )
    if not rows:
        return pd.DataFrame(columns=["family", "param", "importance", "std", "cells"])
    out = (
        pd.DataFrame(rows)
        .groupby(["family", "param"], sort=False)["share"]
        .agg(importance="mean", std="std", cells="count")
        .reset_index()
    )
    out["std"] = out["std"].fillna(0.0)
    return out.sort_values(["family", "importance"], ascending=[True, False]).reset_index(drop=True)
