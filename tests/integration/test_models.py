"""Registered models take raw rows: a study on CSV files with string categories and missing values, then its
models used the way MLflow users use models, with MLflow's own tools (a real `mlflow models serve`), and with
`tunelab predict`.
"""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.cli import tunelab, tunelab_ok
from tests.servers import ModelServer
from tunelab.cli import main

pytestmark = pytest.mark.integration

NAME = "raw"
FAMILIES = ["xgboost", "random_forest", "mlp"]
#: rows a model never saw: an unseen category, missing values, columns in another order
NEW_ROWS = [
    {"region": "mars", "income": 41.0, "purpose": "car", "age": 30},
    {"age": 52, "purpose": None, "income": None, "region": "west"},
    {"purpose": "house", "region": None, "age": None, "income": 75.5},
]


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "income": rng.normal(50, 15, n).round(1),
            "purpose": rng.choice(["car", "house", "education", "travel"], n),
            "age": rng.integers(18, 70, n),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    df.loc[rng.choice(n, n // 10, replace=False), "income"] = np.nan
    df.loc[rng.choice(n, n // 10, replace=False), "region"] = None
    return df


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    loans = _frame(300, 0)
    score = loans["income"].fillna(50) / 10 + (loans["purpose"] == "house") * 2 - (loans["region"] == "west") * 1.5
    loans.assign(approved=np.where(score > 5, "yes", "no")).to_csv(tmp / "loans.csv", index=False)
    prices = _frame(300, 1)
    prices.assign(price=prices["income"].fillna(50) * 3 + (prices["purpose"] == "car") * 20).to_csv(
        tmp / "prices.csv", index=False
    )
    uri = f"sqlite:///{tmp}/mlflow.db"
    (tmp / "raw.yaml").write_text(f"""
name: {NAME}
datasets:
  - {{name: loans, path: loans.csv, target: approved}}
  - {{name: prices, path: prices.csv, target: price}}
models: [{", ".join(FAMILIES)}]
search: {{searcher: random, scheduler: fifo, num_samples: 2}}
spaces: {{xgboost: {{budget: {{steps: 2}}}}, random_forest: {{budget: {{steps: 2}}}}, mlp: {{budget: {{steps: 2}}}}}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp}/tune
""")
    tunelab_ok("run", "raw.yaml", "--quiet", cwd=tmp, timeout=900)
    return {"tmp": tmp, "uri": uri}


def test_the_served_champion_answers_raw_rows_in_the_datasets_labels(study):
    with ModelServer(study["tmp"], f"models:/{NAME}-loans@champion", study["uri"]) as server:
        status, answer = server.invoke({"dataframe_records": NEW_ROWS})
        assert status == 200, answer
        assert len(answer["predictions"]) == 3 and set(answer["predictions"]) <= {"yes", "no"}
        status, answer = server.invoke({"dataframe_records": NEW_ROWS, "params": {"output": "proba"}})
        assert status == 200, answer
        proba = pd.DataFrame(answer["predictions"])
        assert list(proba.columns) == ["no", "yes"] and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        status, answer = server.invoke({"dataframe_records": [{"income": 1.0, "purpose": "car"}]})
        assert status == 400 and "age" in answer["message"]  # a missing column is named


def test_pyfunc_predicts_raw_rows_for_regression_and_for_the_mlp(study):
    mlflow.set_tracking_uri(study["uri"])
    rows = pd.DataFrame(NEW_ROWS)
    values = mlflow.pyfunc.load_model(f"models:/{NAME}-prices@champion").predict(rows)
    assert len(values) == 3 and np.isfinite(np.asarray(values, dtype=float)).all()
    labels = mlflow.pyfunc.load_model(f"models:/{NAME}-loans@mlp").predict(rows)
    assert set(labels) <= {"yes", "no"}
    raw_file = pd.read_csv(study["tmp"] / "loans.csv").drop(columns="approved").head(20)
    assert len(mlflow.pyfunc.load_model(f"models:/{NAME}-loans@xgboost").predict(raw_file)) == 20


def test_each_model_says_what_it_takes_and_shows_raw_rows(study):
    client = MlflowClient(study["uri"])
    version = client.get_model_version_by_alias(f"{NAME}-loans", "champion")
    info = mlflow.models.get_model_info(client.get_model_version_download_uri(f"{NAME}-loans", version.version))
    assert info.signature.inputs.input_names() == ["income", "purpose", "age", "region"]
    assert info.flavors.keys() == {"python_function"}


def _predict(study, *args):
    return tunelab("predict", NAME, *args, "--uri", study["uri"], cwd=study["tmp"], timeout=300)


def test_tunelab_predict_scores_a_file_and_names_what_is_wrong_with_a_bad_one(study):
    tmp = study["tmp"]
    pd.read_csv(tmp / "loans.csv").head(12).to_parquet(tmp / "new.parquet")  # the target left in: ignored
    ok = _predict(study, "loans", "new.parquet", "--family", "random_forest", "--out", "scored.csv")
    assert ok.returncode == 0, ok.stderr
    scored = pd.read_csv(tmp / "scored.csv")
    assert len(scored) == 12 and set(scored["prediction"]) <= {"yes", "no"}
    assert np.allclose(scored["proba_no"] + scored["proba_yes"], 1.0)

    pd.DataFrame(NEW_ROWS).drop(columns="age").assign(colour="red").to_csv(tmp / "bad.csv", index=False)
    bad = _predict(study, "loans", "bad.csv")
    assert bad.returncode == 2 and "bad.csv: missing column(s) 'age'; unknown column(s) 'colour'" in bad.stderr
    assert "Traceback" not in bad.stderr
    (tmp / "broken.parquet").write_bytes(b"not parquet")
    broken = _predict(study, "loans", "broken.parquet")
    assert broken.returncode == 2 and "broken.parquet: cannot read it as .parquet" in broken.stderr
    assert main(["predict", NAME, "nope", str(tmp / "new.parquet"), "--uri", study["uri"]]) == 2  # no such dataset


def test_cell_runs_record_their_dataset_in_mlflows_terms(study):
    client = MlflowClient(study["uri"])
    exp = client.get_experiment_by_name(NAME)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens it on its runs
    runs = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'cell'")
    (study_run,) = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'study'")
    assert len(runs) == len(FAMILIES) * 2
    for cell in runs:
        dataset = cell.data.tags["tunelab.dataset"]
        (used,) = cell.inputs.dataset_inputs
        assert used.dataset.name == dataset and used.dataset.source_type == "local"
        assert used.dataset.digest == study_run.data.tags[f"dataset.{dataset}.sha256"][:36]
        assert json.loads(used.dataset.source)["uri"] == str(study["tmp"] / f"{dataset}.csv")
