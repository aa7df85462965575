"""The whole predictor: every family's model, with the fitted preprocessing and the labels, takes raw rows.

Saved and loaded as ``tunelab predict`` and the logged MLflow model load it (no Ray, no store): its predictions on
raw rows in any column order equal the family's own on the encoded test split, and loading trusts only what
tunelab's code declares.
"""

import json

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer

from trainables import FAMILIES
from trainables.base import CLASSIFICATION, Context, predictions
from tunelab.datasets import load_dataset
from tunelab.predict import trusted_types
from tunelab.predictor import META, PREPROCESS, PROBA, Predictor, UntrustedModel, as_raw, save
from tunelab.spaces import load_space
from tunelab.study import DatasetSpec, Split


def _file(tmp_path, task: str):
    rng = np.random.default_rng(1)
    n = 240
    df = pd.DataFrame(
        {
            "income": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 10, n)),
            "purpose": rng.choice(["car", "house", "travel", None], n),
            "age": rng.integers(18, 70, n),
        }
    )
    signal = df["income"].fillna(50) / 10 + (df["purpose"] == "house") * 2
    df["y"] = np.where(signal > 5.5, "yes", "no") if task == CLASSIFICATION else signal + rng.normal(0, 0.1, n)
    path = tmp_path / f"{task}.csv"
    df.to_csv(path, index=False)
    return load_dataset(DatasetSpec(name=task, path=str(path), target="y"), Split(), 0, task), pd.read_csv(path)


def _trained(name: str, data):
    space = load_space(name, data.task, {"budget": {"steps": 1, "per_step": 2}})
    ctx = Context(task=data.task, n_classes=data.n_classes, steps=space.steps, per_step=space.per_step)
    family = FAMILIES[name](ctx)
    *_, model = family.fit(data.X_train, data.y_train, space.decode(space.default_point()))
    return family, family.loggable(model)


def _meta(data, family):
    return {
        "task": data.task,
        "target": data.target,
        "labels": data.labels,
        "columns": data.columns,
        "trusted_types": list(type(family).trusted_types),
    }


@pytest.mark.parametrize("task", [CLASSIFICATION, "regression"])
def test_every_family_predicts_raw_rows_as_it_did_encoded_ones(tmp_path, task):
    data, raw = _file(tmp_path, task)
    rows = raw.drop(columns="y").iloc[:40]
    shuffled = rows[list(reversed(rows.columns))].assign(unused=1)  # any column order, extra columns ignored
    for name, cls in FAMILIES.items():
        if task not in cls.tasks:
            continue
        family, model = _trained(name, data)
        save(tmp_path / name, type(family).flavor.name, model, data.preprocessor, _meta(data, family))
        loaded = Predictor.load(tmp_path / name, trusted_types())
        encoded = data.preprocessor.transform(as_raw(rows, data.columns)).astype(np.float32)
        expected = predictions(family, model, encoded)
        if task == CLASSIFICATION:
            proba = loaded.predict(shuffled, PROBA)
            assert list(proba.columns) == ["no", "yes"], name
            np.testing.assert_allclose(proba.to_numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=name)
            labels = loaded.predict(shuffled)
            assert set(labels) <= {"yes", "no"} and list(labels) == list(np.array(["no", "yes"])[expected.argmax(1)])
        else:
            np.testing.assert_allclose(loaded.predict(shuffled), expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_unseen_categories_and_missing_values_are_predicted(tmp_path):
    data, _ = _file(tmp_path, CLASSIFICATION)
    family, model = _trained("random_forest", data)
    save(tmp_path / "m", "sklearn", model, data.preprocessor, _meta(data, family))
    rows = pd.DataFrame({"income": [None, 40.0], "purpose": ["boat", None], "age": [30.5, None]})
    assert set(Predictor.load(tmp_path / "m", trusted_types()).predict(rows)) <= {"yes", "no"}


def test_numeric_labels_come_back_as_numbers(tmp_path):
    data = load_dataset(DatasetSpec(name="iris"), Split(), 0, "iris")
    family, model = _trained("logistic_regression", data)
    save(tmp_path / "m", "sklearn", model, data.preprocessor, _meta(data, family))
    X = pd.DataFrame(data.X_test[:5], columns=data.feature_names)
    assert set(Predictor.load(tmp_path / "m", trusted_types()).predict(X)) <= {0, 1, 2}


def test_a_model_asking_to_trust_more_than_tunelab_declares_is_refused(tmp_path):
    data, _ = _file(tmp_path, CLASSIFICATION)
    family, model = _trained("dummy", data)
    where = tmp_path / "m"
    save(where, "sklearn", model, data.preprocessor, _meta(data, family))
    evil = FunctionTransformer(eval)  # its skops file asks to trust builtins.eval
    skops.io.dump(evil, where / PREPROCESS)
    meta = json.loads((where / META).read_text())
    (where / META).write_text(json.dumps({**meta, "trusted_types": [*meta["trusted_types"], "builtins.eval"]}))
    with pytest.raises(UntrustedModel, match="builtins.eval"):
        Predictor.load(where, trusted_types())
