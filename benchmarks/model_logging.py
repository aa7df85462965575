"""Model logging: what a cell's end pays to log and register its best model as the whole predictor (the fitted
preprocessing, the estimator and the labels as one pyfunc model from code, ``tunelab.tracking.models.log_model``),
against logging the bare estimator with its family's own MLflow flavour (``mlflow.sklearn`` / ``mlflow.xgboost`` /
``mlflow.pytorch``), which is what tunelab did before and what takes encoded columns only. Both register a version
in the same sqlite store, on the same trained model, alternating, ``--repeats`` times; the medians are compared.

    python benchmarks/model_logging.py              # random_forest, xgboost, mlp; 5 repeats: about 1-2 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from trainables import FAMILIES
from trainables.base import Context
from tunelab.datasets import load_dataset
from tunelab.spaces import load_space
from tunelab.study import DatasetSpec, Split
from tunelab.tracking.models import log_model, requirements

FLAVOUR_MODULES = {"sklearn": "sklearn", "xgboost": "xgboost", "pytorch": "pytorch"}


def _loans(where: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame(
        {
            "income": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 15, n)),
            "purpose": rng.choice(["car", "house", "education", "travel", None], n),
            "age": rng.integers(18, 70, n),
            "region": rng.choice([f"r{i}" for i in range(40)], n),
        }
    )
    df["approved"] = np.where(df["income"].fillna(50) / 10 + (df["purpose"] == "house") * 2 > 5, "yes", "no")
    path = where / "loans.csv"
    df.to_csv(path, index=False)
    return path


def _trained(name: str, data):
    space = load_space(name, data.task, {"budget": {"steps": 1, "per_step": 20}})
    ctx = Context(task=data.task, n_classes=data.n_classes, steps=space.steps, per_step=space.per_step)
    family = FAMILIES[name](ctx)
    *_, model = family.fit(data.X_train, data.y_train, space.decode(space.default_point()))
    return family.loggable(model)


def _flavour(run_id: str, flavor, model, data, registered: str):
    """The estimator alone, with its family's MLflow flavour, on encoded columns."""
    module = getattr(mlflow, FLAVOUR_MODULES[flavor.name])
    example = pd.DataFrame(data.X_test[:5], columns=data.feature_names)
    kwargs = {"input_example": example}
    if flavor.name == "pytorch":
        kwargs = {"input_example": example.to_numpy(dtype="float32")}
    if flavor.name == "sklearn":
        kwargs["serialization_format"] = "skops"
        kwargs["skops_trusted_types"] = list(FAMILIES["random_forest"].trusted_types)
    with mlflow.start_run(run_id=run_id, nested=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.log_model(
            model,
            name="model",
            registered_model_name=registered,
            pip_requirements=requirements(flavor)[:4],
            **kwargs,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="random_forest,xgboost,mlp")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-logging-") as tmp:
        uri = f"sqlite:///{tmp}/m.db"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = client.create_experiment("logging", artifact_location=f"{tmp}/artifacts")
        spec = DatasetSpec(name="loans", path=str(_loans(Path(tmp))), target="approved")
        data = load_dataset(spec, Split(), 0, "loans")
        shape = data.X_train.shape
        print(f"loans: {len(data.columns)} raw columns -> {shape[1]} encoded, {shape[0]} training rows")
        print(f"{'family':<16}{'flavour s':>11}{'predictor s':>13}{'ratio':>8}")
        for name in args.families.split(","):
            cls = FAMILIES[name]
            model = _trained(name, data)
            sides = {"flavour": [], "predictor": []}
            for i in range(args.repeats + 1):  # the first of each side warms imports up, and is not counted
                for side in ("flavour", "predictor") if i % 2 else ("predictor", "flavour"):
                    run_id = client.create_run(exp).info.run_id
                    t0 = time.perf_counter()
                    if side == "flavour":
                        _flavour(run_id, cls.flavor, model, data, f"flavour-{name}")
                    else:
                        log_model(run_id, cls.flavor, model, data, f"predictor-{name}", cls.trusted_types)
                    if i:
                        sides[side].append(time.perf_counter() - t0)
            flavour, predictor = (statistics.median(sides[s]) for s in ("flavour", "predictor"))
            print(f"{name:<16}{flavour:>11.2f}{predictor:>13.2f}{predictor / flavour:>7.2f}x")


if __name__ == "__main__":
    main()
