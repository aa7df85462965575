"""Warm starts on a real local Ray and a sqlite store: a study starts each cell from the best configurations of an
earlier one, same dataset first, then the nearest by meta-features; a name not in the store stops it before work."""

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.cli import tunelab, tunelab_ok
from tunelab.run.warm_start import distance

pytestmark = pytest.mark.integration

TOP = 2


def _run(tmp_path, name, text, command="run"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return tunelab(command, path, cwd=tmp_path)


def _study(name, datasets, uri, tmp_path, search):
    return f"""
name: {name}
datasets: [{", ".join(datasets)}]
models: [knn]
search: {{num_samples: 3, max_concurrent_trials: 1, scheduler: fifo, {search}}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
"""


def _runs(client, name, role):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], f"tags.`tunelab.role` = '{role}'", max_results=100)


def test_cells_start_from_the_earlier_studys_best_configurations_nearest_dataset_first(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    earlier = _run(
        tmp_path,
        "earlier",
        _study("earlier", ["iris", "breast_cancer"], uri, tmp_path, "searcher: random, default_first: false"),
    )
    assert earlier.returncode == 0, earlier.stdout[-2000:] + earlier.stderr[-2000:]
    warm = f"searcher: optuna, default_first: false, warm_start: {{from: [earlier], top: {TOP}}}"
    later = _run(tmp_path, "later", _study("later", ["iris", "wine"], uri, tmp_path, warm))
    assert later.returncode == 0, later.stdout[-2000:] + later.stderr[-2000:]

    client = MlflowClient(uri)
    before = {c.data.tags["tunelab.dataset"]: c for c in _runs(client, "earlier", "cell")}
    best = {
        d: {k[5:]: yaml.safe_load(v) for k, v in c.data.tags.items() if k.startswith("best.")}
        for d, c in before.items()
    }
    meta = {
        d: {k[13:]: float(v) for k, v in c.data.tags.items() if k.startswith("tunelab.data.")}
        for d, c in before.items()
    }
    trials, first_of = _runs(client, "later", "trial"), {}
    for cell in _runs(client, "later", "cell"):
        dataset = cell.data.tags["tunelab.dataset"]
        here = {k[13:]: float(v) for k, v in cell.data.tags.items() if k.startswith("tunelab.data.")}
        nearest = sorted(best, key=lambda d: (d != dataset, distance(here, meta[d])))
        expected = []
        for d in nearest:
            if best[d] not in [c for _, c in expected]:
                expected.append((d, best[d]))
        expected = first_of[dataset] = expected[:TOP]
        assert cell.data.tags["tunelab.warm_start"] == ", ".join(f"earlier/{d}" for d, _ in expected)
        mine = sorted(
            (t for t in trials if t.data.tags["mlflow.parentRunId"] == cell.info.run_id),
            key=lambda t: int(t.data.tags["tunelab.trial_number"]),
        )
        for trial, (origin, config) in zip(mine, expected):  # the first trials: the recorded configurations
            assert {k: yaml.safe_load(trial.data.params[k]) for k in config} == config, cell.info.run_name
            assert trial.data.tags["tunelab.warm_start"] == f"earlier/{origin}"
        assert all("tunelab.warm_start" not in t.data.tags for t in mine[len(expected) :])  # then as usual
    assert first_of["wine"][0][0] == "iris"  # iris is nearer wine than breast_cancer (3 classes, fewer rows)

    # study against study: the one cell both ran, side by side, and what changed between the two runs
    out = tunelab_ok("compare", "earlier", "later", "--uri", uri, "--out", tmp_path / "c")
    cells = pd.read_csv(tmp_path / "c" / "cells.csv")
    assert list(zip(cells["dataset"], cells["family"])) == [("iris", "knn")]
    assert cells["test_a"].iloc[0] == pytest.approx(before["iris"].data.metrics["test_logloss"])
    changed = pd.read_csv(tmp_path / "c" / "changed.csv").set_index("setting")
    assert changed.loc["search: searcher"].tolist() == ["random", "optuna"]
    assert "search: num_samples" not in changed.index  # the same in both
    assert "1 shared cells" in out.stdout and (tmp_path / "c" / "compare.html").read_text().count("<tr>") > 3


def test_a_warm_start_from_a_study_not_in_the_store_is_refused_before_work(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = _run(tmp_path, "cold", _study("cold", ["iris"], uri, tmp_path, "warm_start: {from: [nowhere]}"), "validate")
    assert out.returncode == 2
    assert "search.warm_start.from" in out.stderr and "no run of a study named 'nowhere'" in out.stderr, out.stderr
