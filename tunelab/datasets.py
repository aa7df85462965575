"""Datasets: bundled scikit-learn sets, synthetic sets, CSV/Parquet files and OpenML datasets by id.

Each is loaded once, split (train/validation/test, seeded, stratified for classification),
encoded to numbers by a ``ColumnTransformer`` fitted on the training split only (the same fitted object goes
into every logged model), and hashed.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn import datasets as skd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import OneHotEncoder

from trainables.base import CLASSIFICATION, REGRESSION, Data
from tunelab.errors import StudyError, did_you_mean
from tunelab.predictor import CATEGORICAL, NUMERIC, as_raw
from tunelab.study import DatasetSpec, Split

#: at most this many one-hot columns per categorical column: the most frequent categories, the rest sharing one
MAX_CATEGORIES = 32
#: an integer target with at most this many distinct values is taken for class labels
MAX_INFERRED_CLASSES = 20
#: raw rows of the test split kept as the logged models' input example
EXAMPLE_ROWS = 5
SYNTHETIC_DEFAULTS = {"rows": 2000, "features": 20, "seed": 0}


def _bundled(loader: Callable, task: str) -> Callable[[DatasetSpec], tuple[pd.DataFrame, pd.Series, str]]:
    def load(spec: DatasetSpec):
        bunch = loader(as_frame=True)
        return bunch.data, bunch.target.rename("target"), task

    return load


def _synthetic(task: str) -> Callable[[DatasetSpec], tuple[pd.DataFrame, pd.Series, str]]:
    def load(spec: DatasetSpec):
        rows = spec.rows or SYNTHETIC_DEFAULTS["rows"]
        features = spec.features or SYNTHETIC_DEFAULTS["features"]
        seed = spec.seed if spec.seed is not None else SYNTHETIC_DEFAULTS["seed"]
        informative = max(1, features // 2)
        if task == CLASSIFICATION:
            X, y = skd.make_classification(
                rows, features, n_informative=informative, n_redundant=min(2, features - informative), random_state=seed
            )
        else:
            X, y = skd.make_regression(rows, features, n_informative=informative, noise=10.0, random_state=seed)
        cols = [f"x{i}" for i in range(features)]
        return pd.DataFrame(X, columns=cols), pd.Series(y, name="target"), task

    return load


BUILTIN: dict[str, Callable[[DatasetSpec], tuple[pd.DataFrame, pd.Series, str]]] = {
    "breast_cancer": _bundled(skd.load_breast_cancer, CLASSIFICATION),
    "wine": _bundled(skd.load_wine, CLASSIFICATION),
    "digits": _bundled(skd.load_digits, CLASSIFICATION),
    "iris": _bundled(skd.load_iris, CLASSIFICATION),
    "diabetes": _bundled(skd.load_diabetes, REGRESSION),
    "synthetic_classification": _synthetic(CLASSIFICATION),
    "synthetic_regression": _synthetic(REGRESSION),
}


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV file in UTF-8, else in Latin-1 (a spreadsheet's export; every byte is a Latin-1 character)."""
    try:
        return pd.read_csv(path)
    except UnicodeDecodeError:
        return pd.read_csv(path, encoding="latin-1")


FILE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


def _resolve(path: str, base_dir: Path) -> Path:
    """A relative path from the study file's directory when it is there, else from the working directory."""
    p = Path(path)
    return (base_dir / p) if not p.is_absolute() and (base_dir / p).exists() else p


def _read_file(spec: DatasetSpec, where: str, base_dir: Path) -> tuple[pd.DataFrame, pd.Series, str | None]:
    path = _resolve(spec.path, base_dir)
    if spec.target is None:
        raise StudyError(f"{where}.target", "a file dataset needs the name of its target column")
    if not path.exists():
        raise StudyError(f"{where}.path", f"file not found: {spec.path}")
    if path.is_dir():
        raise StudyError(f"{where}.path", f"{spec.path} is a directory, not a CSV or Parquet file")
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise StudyError(
            f"{where}.path", f"'{path.name}' is not a CSV or Parquet file (expected one of {', '.join(FILE_READERS)})"
        )
    if path.stat().st_size == 0:
        raise StudyError(f"{where}.path", f"file is empty: {spec.path}")
    try:
        df = reader(path)
    except Exception as e:  # the reader's own message says what is wrong with the bytes
        raise StudyError(f"{where}.path", f"cannot read {spec.path} as {path.suffix}: {e}") from None
    if df.empty:
        raise StudyError(f"{where}.path", f"file has no rows: {spec.path}")
    if spec.target not in df.columns:
        raise StudyError(
            f"{where}.target",
            f"no column '{spec.target}' in {spec.path} (columns: "
            f"{', '.join(map(str, df.columns[:12]))}){did_you_mean(spec.target, map(str, df.columns))}",
        )
    return df.drop(columns=[spec.target]), df[spec.target], spec.task


def _check_values(df: pd.DataFrame, where: str) -> None:
    """One value per cell, and numbers finite (a missing number is fine: it is imputed)."""
    for c in df.columns:
        col = df[c]
        if col.dtype == object:
            nested = col.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))
            if nested.any():
                raise StudyError(
                    f"{where}.path",
                    f"column '{c}' holds nested values (e.g. {col[nested].iloc[0]!r}); expected one value per cell: "
                    "flatten it into columns first",
                )
        elif pd.api.types.is_float_dtype(col) and np.isinf(col.to_numpy()).any():
            n = int(np.isinf(col.to_numpy()).sum())
            raise StudyError(
                f"{where}.path",
                f"column '{c}' holds {n} infinite values; expected finite numbers (or empty cells for missing ones)",
            )


def infer_task(y: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return CLASSIFICATION
    values = y.dropna()
    if np.all(np.mod(values, 1) == 0) and values.nunique() <= MAX_INFERRED_CLASSES:
        return CLASSIFICATION
    return REGRESSION


def content_hash(X: pd.DataFrame, y: pd.Series) -> str:
    h = hashlib.sha256()
    h.update(",".join(map(str, X.columns)).encode())
    h.update(pd.util.hash_pandas_object(X, index=False).values.tobytes())
    h.update(pd.util.hash_pandas_object(y, index=False).values.tobytes())
    return h.hexdigest()


#: XGBoost refuses feature names holding [, ] or <: one-hot columns read "city=(missing)"
_NAME_SAFE = str.maketrans("[]<>", "()()")


def _column_name(column: str, value: str) -> str:
    return f"{column}={value}".translate(_NAME_SAFE)


def column_kinds(X: pd.DataFrame) -> dict[str, str]:
    """Each raw column's kind: numbers (booleans aside) stay numbers, the rest is one-hot encoded."""
    return {
        c: NUMERIC if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]) else CATEGORICAL
        for c in X.columns
    }


def fit_preprocessor(X: pd.DataFrame, columns: dict[str, str]) -> ColumnTransformer:
    """Missing numbers -> the training median; categories -> one-hot, the ``MAX_CATEGORIES`` most frequent kept,
    the rest (and any never seen in training) sharing one column. Fitted on ``X``, the training split."""
    numeric = [c for c, k in columns.items() if k == NUMERIC]
    categorical = [c for c, k in columns.items() if k == CATEGORICAL]
    onehot = OneHotEncoder(max_categories=MAX_CATEGORIES, handle_unknown="infrequent_if_exist", sparse_output=False)
    return ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric),
            ("categorical", onehot, categorical),
        ]
    ).fit(as_raw(X, columns))


def encoded_columns(pre: ColumnTransformer) -> tuple[list[str], list[str]]:
    """Per encoded column (in the transform's order): its name, and the raw column it came from."""
    names, raw = [], []
    for kind, step, cols in pre.transformers_:
        if kind == "numeric":
            names += list(cols)
            raw += list(cols)
        elif kind == "categorical" and cols:
            for c, cats, rare in zip(cols, step.categories_, step.infrequent_categories_):
                kept = [v for v in cats if rare is None or v not in set(rare)] + ([] if rare is None else ["(other)"])
                names += [_column_name(c, v) for v in kept]
                raw += [c] * len(kept)
    return names, raw


def load_dataset(spec: DatasetSpec, split: Split, seed: int, where: str, base_dir: Path = Path(".")) -> Data:
    """Load, check, split, encode and hash one dataset; every problem is a StudyError naming ``where``."""
    if spec.path is not None:
        X, y, task = _read_file(spec, where, base_dir)
        source = ("local", str(_resolve(spec.path, base_dir).resolve()))
    elif spec.openml is not None:
        from tunelab import openml

        X, y, _ = openml.load(spec.openml, spec.target, where)
        task = spec.task
        source = ("openml", f"https://www.openml.org/d/{spec.openml}")
    elif spec.name in BUILTIN:
        X, y, task = BUILTIN[spec.name](spec)
        task = spec.task or task
        source = ("code", f"tunelab.datasets:{spec.name}")
    else:
        raise StudyError(
            f"{where}",
            f"unknown dataset '{spec.name}' (expected one of {', '.join(BUILTIN)}, "
            f"or give a path and target){did_you_mean(spec.name, BUILTIN)}",
        )
    X.columns = [str(c) for c in X.columns]
    if X.shape[1] == 0:
        raise StudyError(f"{where}", "the dataset has no feature columns besides the target")
    _check_values(pd.concat([X, y.rename(f"{y.name} (the target)")], axis=1), where)
    if y.isna().any():
        raise StudyError(
            f"{where}.target",
            f"target '{y.name}' has {int(y.isna().sum())} missing values "
            "(expected none: drop or fill those rows first)",
        )
    task = task or infer_task(y)
    digest = content_hash(X, y)
    stratify = None
    classes: list[str] = []
    labels: list = []
    if task == CLASSIFICATION:
        counts = y.astype("string").value_counts()
        if len(counts) < 2:
            raise StudyError(
                f"{where}.target",
                f"target '{y.name}' has a single class ({counts.index[0]!r}); classification needs at least two",
            )
        if counts.min() < 3:
            raise StudyError(
                f"{where}.target",
                f"class {counts.idxmin()!r} of '{y.name}' has {counts.min()} rows; "
                "each class needs at least 3 to appear in train, validation and test",
            )
        classes = sorted(counts.index, key=_natural)
        labels = _label_values(y, classes)
        y = y.astype("string").map({c: i for i, c in enumerate(classes)}).astype("int64")
        stratify = y
    else:
        if not pd.api.types.is_numeric_dtype(y):
            raise StudyError(f"{where}.task", f"regression needs a numeric target; '{y.name}' holds {y.dtype} values")
        y = y.astype("float64")
    if len(y) < 10:
        raise StudyError(f"{where}", f"{len(y)} rows are too few to split into train, validation and test")
    train, val, test, folds = _split_rows(y, stratify, split, seed, where)
    columns = column_kinds(X)
    pre = fit_preprocessor(X.iloc[train], columns)
    Xe = pre.transform(as_raw(X, columns)).astype(np.float32)
    names, raw = encoded_columns(pre)
    ya = y.to_numpy()
    return Data(
        name=spec.name,
        task=task,
        feature_names=names,
        X_train=Xe[train],
        y_train=ya[train],
        X_val=Xe[val],
        y_val=ya[val],
        X_test=Xe[test],
        y_test=ya[test],
        classes=classes,
        content_hash=digest,
        raw_features=raw,
        target=str(y.name),
        source=source,
        columns=columns,
        labels=labels,
        preprocessor=pre,
        example=X.iloc[test[:EXAMPLE_ROWS]].reset_index(drop=True),
        folds=folds,
    )


def _split_rows(
    y: pd.Series, stratify: pd.Series | None, split: Split, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Row indices of train, validation and test, and with ``split.folds`` the folds: then train holds every row
    beside test, validation none, and each fold the positions in train that validate it."""
    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=split.test, random_state=seed, stratify=stratify)
        strat_rest = stratify.iloc[rest] if stratify is not None else None
        if split.folds:
            kfold = (StratifiedKFold if strat_rest is not None else KFold)(split.folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a class with fewer rows than folds would miss some folds' validation
                folds = [val for _, val in kfold.split(rest, strat_rest)]
            return rest, rest[:0], test, folds
        val_share = split.val / (1 - split.test)
        train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=strat_rest)
    except (ValueError, UserWarning) as e:  # a split too small to hold every class once
        how = f"folds={split.folds}" if split.folds else f"val={split.val}"
        raise StudyError(f"{where}", f"split {how}, test={split.test} of {len(y)} rows: {e}") from None
    return train, val, test, []


def _label_values(y: pd.Series, classes: list[str]) -> list:
    """Per class (in ``classes``' order), the label as the file holds it: ``"yes"``, ``3``, ``True``."""
    first = y.groupby(y.astype("string")).first()
    return [v.item() if isinstance(v, np.generic) else v for v in (first[c] for c in classes)]


def _natural(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)
