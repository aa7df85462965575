"""``tunelab predict``: a study's registered model on new raw rows from a CSV or Parquet file.

Loading trusts what tunelab's own code declares (its preprocessor's types and its families'), never what the
model's files list: a model that asks for more is refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables import FAMILIES
from tunelab.datasets import FILE_READERS
from tunelab.errors import StudyError
from tunelab.predictor import PREPROCESSOR_TYPES, PROBA, Predictor, UntrustedModel
from tunelab.tracking.schema import CHAMPION, registered_name


def trusted_types() -> set[str]:
    """The skops types tunelab trusts: its preprocessor's and those its model families declare."""
    return {*PREPROCESSOR_TYPES, *(t for cls in FAMILIES.values() for t in cls.trusted_types)}


def load_registered(client: MlflowClient, study: str, dataset: str, alias: str = CHAMPION) -> Predictor:
    """The predictor of ``<study>-<dataset>@<alias>``, loaded with tunelab's own trust."""
    name = registered_name(study, dataset)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        raise StudyError(
            "--family" if alias != CHAMPION else "dataset",
            f"no registered model {name}@{alias} in {client.tracking_uri} (see: tunelab best {study})",
        ) from None
    with tempfile.TemporaryDirectory(prefix="tunelab-predict-") as tmp:
        source = client.get_model_version_download_uri(name, version.version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=client.tracking_uri)
        try:
            return Predictor.load(Path(local) / "artifacts" / "predictor", trusted_types())
        except UntrustedModel as e:
            raise StudyError(f"{name}@{alias}", f"refused: {e}") from None
        except FileNotFoundError as e:
            raise StudyError(f"{name}@{alias}", f"not a model tunelab logged ({e.filename} is missing)") from None


def read_rows(path: Path) -> pd.DataFrame:
    where = str(path)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise StudyError(where, f"not a CSV or Parquet file (expected one of {', '.join(FILE_READERS)})")
    if not path.is_file():
        raise StudyError(where, "file not found" if not path.exists() else "not a file")
    try:
        return reader(path)
    except Exception as e:  # the reader's own message says what is wrong with the bytes
        raise StudyError(where, f"cannot read it as {path.suffix}: {type(e).__name__}: {e}") from None


def predict_rows(model: Predictor, X: pd.DataFrame, where: str) -> pd.DataFrame:
    """``X`` with the prediction (and, for classification, one ``proba_<label>`` column per label) added."""
    columns = model.meta["columns"]
    missing = [c for c in columns if c not in X.columns]
    extra = [c for c in X.columns if c not in columns and c != model.meta.get("target")]
    if missing or extra:
        what = f"missing column(s) {', '.join(map(repr, missing))}" if missing else ""
        what += ("; " if missing and extra else "") + (
            f"unknown column(s) {', '.join(map(repr, extra))}" if extra else ""
        )
        raise StudyError(where, f"{what} (the model takes: {', '.join(columns)})")
    out = X.copy()
    if not model.classify:
        out["prediction"] = model.predict(X)
        return out
    proba = model.predict(X, PROBA)  # the rows go through the model once: the label is the likeliest class
    out["prediction"] = model.label_of(proba)
    for label in proba.columns:
        out[f"proba_{label}"] = proba[label].to_numpy()
    return out
