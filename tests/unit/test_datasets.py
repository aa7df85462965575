"""Datasets: files as people have them, seeded stratified splits, hashes, and bad files."""

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tunelab.datasets import BUILTIN, load_dataset
from tunelab.errors import StudyError
from tunelab.study import DatasetSpec, Split


def _csv(tmp_path, df, name="d.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _text(path, text):
    path.write_text(text)
    return path


def _dir(path):
    path.mkdir()
    return path


def _nested_parquet(path):
    _messy().assign(num=[[1.0, 2.0]] * 60).to_parquet(path)
    return path


def _messy(rows=60):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "num": np.where(rng.random(rows) < 0.2, np.nan, rng.normal(size=rows)),
            "colour": rng.choice(["red", "green", None], rows),
            "label": rng.choice(["yes", "no"], rows),
        }
    )


def test_csv_with_strings_missing_values_and_string_target(tmp_path):
    path = _csv(tmp_path, _messy())
    d = load_dataset(DatasetSpec(name="m", path=str(path), target="label"), Split(), 0, "w")
    assert d.task == "classification" and d.classes == ["no", "yes"]
    assert "colour=red" in d.feature_names and "colour=(missing)" in d.feature_names
    assert not np.isnan(d.X_train).any() and len(d.y_train) + len(d.y_val) + len(d.y_test) == 60


def test_one_hot_names_are_names_xgboost_takes(tmp_path):
    df = _messy()
    df["colour"] = df["colour"].replace({"red": "x[<1]"})
    d = load_dataset(DatasetSpec(name="m", path=str(_csv(tmp_path, df)), target="label"), Split(), 0, "w")
    assert "colour=x((1)" in d.feature_names
    xgb.DMatrix(d.X_train, feature_names=d.feature_names)  # raises on [, ] or <


def test_split_is_seeded_and_stratified():
    spec = DatasetSpec(name="breast_cancer")
    a, b = load_dataset(spec, Split(), 0, "w"), load_dataset(spec, Split(), 0, "w")
    c = load_dataset(spec, Split(), 1, "w")
    assert np.array_equal(a.y_val, b.y_val) and not np.array_equal(a.X_val, c.X_val)
    assert abs(a.y_val.mean() - a.y_train.mean()) < 0.02
    assert a.content_hash == c.content_hash  # the hash is of the data, not of the split


def test_every_builtin_loads():
    for name in BUILTIN:
        d = load_dataset(DatasetSpec(name=name, rows=200), Split(), 0, "w")
        assert d.X_train.shape[1] == len(d.feature_names) > 0


def test_parquet_and_regression_inference(tmp_path):
    df = pd.DataFrame({"a": np.arange(40.0), "y": np.linspace(0, 1, 40) ** 2})
    path = tmp_path / "r.parquet"
    df.to_parquet(path)
    assert load_dataset(DatasetSpec(name="r", path=str(path), target="y"), Split(), 0, "w").task == "regression"


@pytest.mark.parametrize(
    "make, field, says",
    [
        (lambda p: p / "nope.csv", "path", "file not found"),
        (lambda p: _text(p / "e.csv", ""), "path", "empty"),
        (lambda p: _text(p / "x.json", "{}"), "path", "not a CSV or Parquet"),
        (lambda p: _csv(p, _messy().assign(label="yes")), "target", "single class"),
        (lambda p: _csv(p, _messy().assign(label=[None] + ["no", "yes"] * 29 + ["no"])), "target", "missing values"),
        (lambda p: _csv(p, _messy().rename(columns={"label": "lable"})), "target", "did you mean 'lable'"),
        (lambda p: _dir(p / "d.csv"), "path", "is a directory"),
        (lambda p: _csv(p, _messy().assign(num=[np.inf] + [1.0] * 59)), "path", "column 'num' holds 1 infinite"),
        (lambda p: _nested_parquet(p / "n.parquet"), "path", "column 'num' holds nested values"),
    ],
)
def test_bad_files(tmp_path, make, field, says):
    path = make(tmp_path)
    with pytest.raises(StudyError) as e:
        load_dataset(DatasetSpec(name="m", path=str(path), target="label"), Split(), 0, "datasets[0]")
    assert f"datasets[0].{field}" in str(e.value) and says in str(e.value), str(e.value)


def test_a_latin1_csv_is_read_as_latin1(tmp_path):
    """A spreadsheet's export in Latin-1 (not UTF-8) simply works; its categories keep their accents."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(_messy().assign(colour=["café", "thé"] * 30).to_csv(index=False).encode("latin-1"))
    data = load_dataset(DatasetSpec(name="m", path=str(path), target="label"), Split(), 0, "datasets[0]")
    assert {"colour=café", "colour=thé"} <= set(data.feature_names)


def test_folds_cover_every_non_test_row_once_stratified_and_seeded():
    spec = DatasetSpec(name="breast_cancer")
    d = load_dataset(spec, Split(folds=5, test=0.2), 0, "w")
    holdout = load_dataset(spec, Split(test=0.2), 0, "w")
    assert len(d.y_val) == 0 and len(d.folds) == 5
    assert np.array_equal(d.y_test, holdout.y_test)  # the test rows are those of a holdout study
    rows = np.sort(np.concatenate(d.folds))
    assert np.array_equal(rows, np.arange(len(d.y_train)))  # each non-test row validates exactly once
    for X, y, X_val, y_val in d.validation_splits():
        assert len(y) + len(y_val) == len(d.y_train) and len(X) == len(y) and len(X_val) == len(y_val)
        assert abs(y_val.mean() - d.y_train.mean()) < 0.03  # stratified
    again, other = load_dataset(spec, Split(folds=5), 0, "w"), load_dataset(spec, Split(folds=5), 1, "w")
    assert all(np.array_equal(a, b) for a, b in zip(d.folds, again.folds))
    assert not np.array_equal(d.folds[0], other.folds[0])


def test_folds_beside_val_or_more_than_a_class_holds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="val .* and folds .* exclude each other"):
        Split(val=0.2, folds=5)
    df = pd.DataFrame({"x": range(40), "y": ["a"] * 36 + ["b"] * 4})
    with pytest.raises(StudyError, match=r"w: split folds=5, test=0.2 of 40 rows: .*members"):
        load_dataset(DatasetSpec(name="f", path=str(_csv(tmp_path, df)), target="y"), Split(folds=5), 0, "w")
