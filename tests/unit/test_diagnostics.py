"""Diagnostics of a best model, without Ray: what is computed, on raw feature names, and the figures drawn."""

import json
from pathlib import Path

from trainables import FAMILIES
from trainables.base import Context
from tunelab.datasets import load_dataset
from tunelab.diagnostics import figures, refit_with_diagnostics
from tunelab.study import DatasetSpec, Split

ROOT = Path(__file__).resolve().parent.parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def _data(spec):
    return load_dataset(spec, Split(), 0, "test", ROOT / "studies")


def test_classification_diagnostics_on_raw_feature_names():
    data = _data(DatasetSpec(name="loans", path="../data/loans.csv", target="defaulted", task="classification"))
    ctx = Context(task=data.task, n_classes=data.n_classes, steps=3, per_step=2)
    out = refit_with_diagnostics(
        FAMILIES["xgboost"], data, {"max_depth": 3}, ctx, 3, "val_logloss", in_ray_worker=False
    )
    d = out["diagnostics"]
    assert d["importance"]["features"] == ["income", "amount", "years_employed", "term", "purpose", "grade"]
    assert len(d["curve"]) == 3 and len(d["proba"]) == len(data.y_test)
    files = figures(d, "xgboost · loans")
    assert {
        "confusion_matrix.png",
        "roc.png",
        "precision_recall.png",
        "permutation_importance.png",
        "learning_curve.png",
    } <= set(files)
    assert all(v.startswith(PNG) for k, v in files.items() if k.endswith(".png"))
    assert json.loads(files["importance.json"])["features"][0] == "income"


def test_regression_diagnostics():
    data = _data(DatasetSpec(name="diabetes"))
    ctx = Context(task=data.task, n_classes=0)
    out = refit_with_diagnostics(FAMILIES["knn"], data, {"n_neighbors": 5}, ctx, 1, "val_rmse", in_ray_worker=False)
    files = figures(out["diagnostics"], "knn · diabetes")
    assert {"predicted_vs_actual.png", "residuals.png", "permutation_importance.png"} <= set(files)
    assert "learning_curve.png" not in files  # one budget step: no curve to draw
    imp = out["diagnostics"]["importance"]
    assert imp["features"] == data.feature_names and max(imp["mean"]) > 0  # some feature matters
