"""OpenML datasets by id from the cache (a copy of OpenML dataset 61 ships in data/openml); no network."""

import json

import pytest

from tunelab.datasets import load_dataset
from tunelab.errors import StudyError
from tunelab.study import DatasetSpec, Split, load_study


def test_shipped_copy_loads_with_openmls_name_and_default_target():
    data = load_dataset(DatasetSpec(openml=61), Split(), 0, "datasets[0]")
    assert data.name == "openml_61" and data.task == "classification"
    assert data.classes == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]
    assert data.feature_names == ["sepallength", "sepalwidth", "petallength", "petalwidth"]
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 150


def test_a_study_names_openml_datasets_by_id(write_study):
    study = load_study(write_study("name: s\ndatasets: [{openml: 61}, {name: flowers, openml: 61}]\nmodels: [knn]\n"))
    assert [d.name for d in study.datasets] == ["openml_61", "flowers"]
    with pytest.raises(StudyError, match=r"datasets\[0\].*give one of path, openml, openml_suite, not path and openml"):
        load_study(write_study("name: s\ndatasets: [{openml: 61, path: x.csv}]\nmodels: [knn]\n"))


def test_cache_drops_ignored_and_row_id_columns(tmp_path, monkeypatch):
    folder = tmp_path / "9001"
    folder.mkdir()
    (folder / "description.json").write_text(
        json.dumps(
            {
                "data_set_description": {
                    "id": "9001",
                    "name": "tiny",
                    "default_target_attribute": "y",
                    "row_id_attribute": "id",
                    "ignore_attribute": ["noise"],
                }
            }
        )
    )
    rows = "\n".join(f"{i},{i % 7}.5,{i * 3 % 11},{'a' if i % 2 else 'b'}" for i in range(30))
    (folder / "dataset.arff").write_text(
        "@RELATION tiny\n@ATTRIBUTE id INTEGER\n@ATTRIBUTE x REAL\n"
        "@ATTRIBUTE noise REAL\n@ATTRIBUTE y {a,b}\n@DATA\n" + rows + "\n"
    )
    monkeypatch.setenv("TUNELAB_OPENML_CACHE", str(tmp_path))
    data = load_dataset(DatasetSpec(openml=9001), Split(), 0, "datasets[0]")
    assert data.feature_names == ["x"] and data.classes == ["a", "b"]


def test_a_dataset_in_no_cache_and_openml_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_OPENML_API", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setattr("tunelab.openml.USER_CACHE", tmp_path / "user")
    with pytest.raises(StudyError, match=r"datasets\[0\]: OpenML dataset 44089 is in no cache .* could not be reached"):
        load_dataset(DatasetSpec(openml=44089), Split(), 0, "datasets[0]")


def test_a_suite_stands_for_its_datasets(write_study, tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "7001.json").write_text(json.dumps({"study": {"id": "7001", "data": {"data_id": ["61"]}}}))
    monkeypatch.setenv("TUNELAB_OPENML_CACHE", str(tmp_path))
    study = load_study(write_study("name: s\ndatasets: [wine, {openml_suite: 7001}]\nmodels: [knn]\n"))
    assert [d.name for d in study.datasets] == ["wine", "openml_61"] and study.datasets[1].openml == 61
    monkeypatch.setenv("TUNELAB_OPENML_API", "http://127.0.0.1:9")
    monkeypatch.setattr("tunelab.openml.USER_CACHE", tmp_path / "user")
    with pytest.raises(StudyError, match=r"study.yaml: datasets: OpenML suite 99 is in no cache"):
        load_study(write_study("name: s\ndatasets: [{openml_suite: 99}]\nmodels: [knn]\n"))
