"""What tuning bought: each cell's selected configuration against its family's defaults, both trained on the same
rows and scored on the same test rows (the cell run's ``test_*`` and ``default_test_*``).

The gain is the share of the defaults' error that tuning removed: ``(error(defaults) - error(tuned)) /
error(defaults)``, where the error is the metric itself where lower is better (logloss, RMSE, MAE) and ``1 - score``
where higher is (accuracy, ROC AUC, R²). It is unitless, so datasets pool; it is negative where the configuration
selected on validation does worse on test than the defaults.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.base import METRIC_MODES
from tunelab.report import stats

COLUMNS = ["dataset", "family", "metric", "default_test", "test", "gain"]
POOLED = ["family", "gain", "ci_low", "ci_high", "datasets"]


def error(metric: str, value: np.ndarray) -> np.ndarray:
    return value if METRIC_MODES[metric] == "min" else 1.0 - value


def per_dataset(cells: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and family (splits averaged): the defaults' and the selected configuration's test score, and
    the gain. Cells without the defaults' score (``search.default_first: false``, or a study before it was kept)
    are left out."""
    have = cells.dropna(subset=["default_test", "test"])
    if have.empty:
        return pd.DataFrame(columns=COLUMNS)
    g = have.groupby(["dataset", "family"], sort=False).agg(
        metric=("metric", "first"), default_test=("default_test", "mean"), test=("test", "mean")
    )
    out = g.reset_index()
    before = np.array([error(m, v) for m, v in zip(out["metric"], out["default_test"])], dtype=float)
    after = np.array([error(m, v) for m, v in zip(out["metric"], out["test"])], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gain"] = np.where(before > 0, (before - after) / before, np.nan)
    return out[COLUMNS]


def pooled(gains: pd.DataFrame) -> pd.DataFrame:
    """Per family: the mean gain over datasets, its 95 % interval with datasets resampled, and datasets counted;
    most gained first."""
    if gains.empty:
        return pd.DataFrame(columns=POOLED)
    out = stats.pooled(gains.pivot(index="family", columns="dataset", values="gain"), "gain")
    return out.sort_values("gain", ascending=False).reset_index(drop=True)
