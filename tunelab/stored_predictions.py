"""Stored predictions: each cell run holds, under ``predictions/``, the validation and test predictions of its best
trials (``tracking.keep_predictions`` of them), as the trials made them (``trainables.trial.BestModels``).

- ``index.json``: per kept trial, best first: its number in the cell, Tune trial id, the step and the cell metric's
  value there;
- ``labels.npz``: ``y_val`` (with folds: every non-test row, out of fold, in the training rows' order) and ``y_test``;
- ``trial-<number>.npz``: ``val`` and ``test``: class probabilities (classification) or values (regression).

What ``tunelab rescore`` reads back: scores under any metric of the task, with no training.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from trainables.base import Data
from trainables.trial import unpack

DIR = "predictions"
INDEX, LABELS = "index.json", "labels.npz"


def trial_file(number: int) -> str:
    return f"trial-{number}.npz"


def files(kept: dict[str, tuple], numbers: dict[str, int], data: Data, sign: int) -> dict[str, bytes]:
    """The artifacts of one cell from what the keeper held (trial id -> (value, step, packed)); ``numbers``: trial
    id -> the trial's number in its cell; ``sign``: 1 where lower is better."""
    order = sorted((tid for tid in kept if tid in numbers), key=lambda tid: sign * kept[tid][0])
    if not order:
        return {}
    index = [{"number": numbers[t], "trial_id": t, "step": kept[t][1], "value": kept[t][0]} for t in order]
    out = {INDEX: json.dumps(index, indent=1).encode(), LABELS: _labels(data)}
    out |= {trial_file(numbers[t]): kept[t][2] for t in order}  # already compressed by the trial
    return out


def _labels(data: Data) -> bytes:
    buf = io.BytesIO()
    y_val = data.y_train if data.folds else data.y_val
    np.savez_compressed(buf, y_val=y_val, y_test=data.y_test)
    return buf.getvalue()


@dataclass
class CellPredictions:
    """What one cell run holds under ``predictions/``."""

    index: list[dict]
    y_val: np.ndarray
    y_test: np.ndarray
    trials: dict[int, tuple[np.ndarray, np.ndarray]]  # number -> (validation, test) predictions


def load(client: MlflowClient, cell: Run) -> CellPredictions | None:
    """A cell run's stored predictions; None where it holds none (``keep_predictions: 0``, an older run)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per cell otherwise
    run_id = cell.info.run_id
    names = {Path(f.path).name for f in client.list_artifacts(run_id, DIR)}
    if INDEX not in names:
        return None
    with tempfile.TemporaryDirectory(prefix="tunelab-predictions-") as tmp:
        local = Path(client.download_artifacts(run_id, DIR, tmp))
        index = json.loads((local / INDEX).read_text())
        with np.load(local / LABELS) as z:
            y_val, y_test = z["y_val"], z["y_test"]
        trials = {t["number"]: unpack((local / trial_file(t["number"])).read_bytes()) for t in index}
    return CellPredictions(index, y_val, y_test, trials)
