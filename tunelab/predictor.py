"""A tuned model as one MLflow model: raw rows in, predictions in the dataset's own labels out.

This file is both a module of tunelab and the code of every model tunelab logs (MLflow "models from code"). It
imports nothing of tunelab, so ``mlflow models serve`` runs it wherever numpy, pandas, scikit-learn, skops and the
model's own library are installed.

A predictor directory (the model's ``predictor`` artifact) holds:

- ``meta.json``: the task, the labels, the raw columns and their kinds, the model's format, its trusted types;
- ``preprocess.skops``: the fitted ``ColumnTransformer`` (imputer, one-hot encoder), fitted on the training split;
- ``model.*``: the estimator, in its format's file (skops, XGBoost JSON, ``torch.export``); never a pickle;
- or, for an ensemble across families, ``member-<i>/model.*`` per member, and ``meta.json``'s ``members``: each
  one's format and weight; its outputs (probabilities or values) are their weighted mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import mlflow
import numpy as np
import pandas as pd

#: a raw column's kind: numbers stay numbers (missing -> the training median); the rest is one-hot encoded
NUMERIC, CATEGORICAL = "numeric", "categorical"
#: what a missing categorical value is encoded as: a category of its own
MISSING = "(missing)"
#: the types the preprocessor's skops file holds beyond those skops trusts by default
PREPROCESSOR_TYPES = ("numpy.dtype",)
META, PREPROCESS = "meta.json", "preprocess.skops"
#: ``predict(..., params={"output": ...})``: the label (default) or one probability column per label
LABEL, PROBA = "label", "proba"


class UntrustedModel(ValueError):
    """A model file that asks to trust types its loader does not."""


def as_raw(X: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """``columns`` of ``X``, in their order and as the preprocessor takes them: numbers as float64 (unreadable ones
    missing), every other value as its text (missing ones as ``MISSING``)."""
    absent = [c for c in columns if c not in X.columns]
    if absent:
        raise KeyError(f"missing column(s): {', '.join(map(repr, absent))}")
    out = {}
    for c, kind in columns.items():
        col = X[c]
        if kind == NUMERIC:
            out[c] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[c] = col.astype(object).where(col.notna(), MISSING).map(str).astype(object)
    return pd.DataFrame(out, index=X.index)


def _load_skops(path: Path, trusted: Optional[Iterable[str]]) -> Any:
    import skops.io

    asked = set(skops.io.get_untrusted_types(file=path))
    if trusted is not None and not asked <= set(trusted):
        raise UntrustedModel(
            f"{path.name} asks to trust {', '.join(sorted(asked - set(trusted)))}, which its loader does not trust"
        )
    return skops.io.load(path, trusted=sorted(asked))


class _Sklearn:
    file = "model.skops"

    def save(self, model: Any, path: Path, n_features: int) -> None:
        import skops.io

        skops.io.dump(model, path)

    def load(self, path: Path, trusted: Optional[Iterable[str]]) -> Any:
        return _load_skops(path, trusted)

    def outputs(self, model: Any, X: np.ndarray, classify: bool) -> np.ndarray:
        return np.asarray(model.predict_proba(X) if classify else model.predict(X))


class _XGBoost:
    file = "model.json"

    def save(self, model: Any, path: Path, n_features: int) -> None:
        model.save_model(str(path))

    def load(self, path: Path, trusted: Optional[Iterable[str]]) -> Any:
        import xgboost

        return xgboost.Booster(model_file=str(path))

    def outputs(self, model: Any, X: np.ndarray, classify: bool) -> np.ndarray:
        import xgboost

        p = model.predict(xgboost.DMatrix(X))
        return np.column_stack([1 - p, p]) if classify and p.ndim == 1 else p


class _PyTorch:
    file = "model.pt2"

    def save(self, model: Any, path: Path, n_features: int) -> None:
        import torch

        example = (torch.zeros(2, n_features),)
        program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, path)

    def load(self, path: Path, trusted: Optional[Iterable[str]]) -> Any:
        import torch

        return torch.export.load(path).module()

    def outputs(self, model: Any, X: np.ndarray, classify: bool) -> np.ndarray:
        import torch

        with torch.no_grad():
            return model(torch.as_tensor(X, dtype=torch.float32)).numpy()


#: a model's format, by the name of its family's flavour
FORMATS = {"sklearn": _Sklearn(), "xgboost": _XGBoost(), "pytorch": _PyTorch()}


@dataclass
class Predictor:
    """The loaded predictor: ``predict`` takes raw rows, in any column order, extra columns ignored, and returns an
    array (labels or values; MLflow's server answers it as a JSON list) or, for ``PROBA``, a frame."""

    meta: dict
    preprocess: Any
    models: list  # one estimator; an ensemble's members, in ``meta["members"]``'s order

    @classmethod
    def load(cls, where: Path, trusted: Optional[Iterable[str]] = None) -> "Predictor":
        """Load a predictor directory; ``trusted``: the skops types its loader trusts (None: those the model
        itself lists, as a served model's own code does)."""
        where = Path(where)
        meta = json.loads((where / META).read_text())
        if trusted is None:
            trusted = [*PREPROCESSOR_TYPES, *meta["trusted_types"]]
        models = [FORMATS[m["format"]].load(d / FORMATS[m["format"]].file, trusted) for m, d in _members(meta, where)]
        return cls(meta, _load_skops(where / PREPROCESS, trusted), models)

    @property
    def classify(self) -> bool:
        return self.meta["task"] == "classification"

    def outputs(self, Xe: np.ndarray) -> np.ndarray:
        """On encoded rows: class probabilities or values (an ensemble's: its members' weighted mean)."""
        members = [m for m, _ in _members(self.meta, Path("."))]
        return sum(
            m["weight"] * np.asarray(FORMATS[m["format"]].outputs(model, Xe, self.classify), dtype=np.float64)
            for m, model in zip(members, self.models)
        )

    def predict(self, X: pd.DataFrame, output: str = LABEL) -> Any:
        Xe = self.preprocess.transform(as_raw(X, self.meta["columns"])).astype(np.float32)
        out = self.outputs(Xe)
        if not self.classify:
            return np.asarray(out, dtype="float64").reshape(-1)
        if output == PROBA:
            return pd.DataFrame(out, columns=[str(v) for v in self.meta["labels"]], index=X.index)
        if output != LABEL:
            raise ValueError(f"output: expected '{LABEL}' or '{PROBA}', got {output!r}")
        return self.label_of(out)

    def label_of(self, proba: Any) -> np.ndarray:
        """Per row of class probabilities, the most likely label, as the file writes it."""
        return np.asarray(self.meta["labels"])[np.asarray(proba).argmax(axis=1)]


def _members(meta: dict, where: Path) -> list[tuple[dict, Path]]:
    """Each estimator's entry (format, weight) and directory: one at the top, or an ensemble's members."""
    if "members" in meta:
        return [(m, where / f"member-{i}") for i, m in enumerate(meta["members"])]
    return [({"format": meta["format"], "weight": 1.0}, where)]


def save(where: Path, flavor: str, model: Any, preprocess: Any, meta: dict) -> None:
    """Write a predictor directory: ``meta`` (task, labels, columns, trusted_types) and the two fitted objects."""
    save_ensemble(where, [(flavor, model, 1.0)], preprocess, meta)


def save_ensemble(where: Path, members: list[tuple[str, Any, float]], preprocess: Any, meta: dict) -> None:
    """A predictor directory of (format, estimator, weight) members (one: a plain predictor) sharing ``preprocess``."""
    import skops.io

    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    skops.io.dump(preprocess, where / PREPROCESS)
    n_features = len(preprocess.get_feature_names_out())
    if len(members) == 1:
        flavor, model, _ = members[0]
        FORMATS[flavor].save(model, where / FORMATS[flavor].file, n_features)
        (where / META).write_text(json.dumps({**meta, "format": flavor}, indent=1))
        return
    for i, (flavor, model, _) in enumerate(members):
        (where / f"member-{i}").mkdir()
        FORMATS[flavor].save(model, where / f"member-{i}" / FORMATS[flavor].file, n_features)
    entries = [{"format": flavor, "weight": weight} for flavor, _, weight in members]
    (where / META).write_text(json.dumps({**meta, "members": entries}, indent=1))


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """What MLflow loads: the predictor directory in the model's ``predictor`` artifact."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(Path(context.artifacts["predictor"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Optional[dict] = None) -> Any:
        return self.predictor.predict(model_input, (params or {}).get("output", LABEL))


if __name__ != "tunelab.predictor":  # run by MLflow as a model's code, under a module name of its own
    mlflow.models.set_model(PyfuncModel())
