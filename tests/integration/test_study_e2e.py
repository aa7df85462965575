"""A small study end to end on a real local Ray and a real sqlite MLflow store."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.cli import tunelab_ok

pytestmark = pytest.mark.integration

FAMILIES = ["xgboost", "random_forest", "mlp"]
DATASETS = ["breast_cancer", "diabetes"]
SAMPLES = 4


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{tmp}/mlflow.db"
    path = tmp / "e2e.yaml"
    path.write_text(f"""
name: e2e
seed: 0
datasets: [breast_cancer, diabetes]
models: [xgboost, random_forest, mlp]
search: {{searcher: optuna, scheduler: asha, num_samples: {SAMPLES}, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp}/tune
spaces:
  xgboost: {{budget: {{steps: 9, per_step: 5}}}}
  random_forest: {{budget: {{steps: 9, per_step: 3}}}}
  mlp: {{budget: {{steps: 9, per_step: 1}}}}
""")
    out = tunelab_ok("run", path, cwd=tmp, timeout=900)
    return MlflowClient(uri), uri, out.stdout


def _runs(client, role):
    exp = client.get_experiment_by_name("e2e")
    return client.search_runs([exp.experiment_id], f"tags.`tunelab.role` = '{role}'", max_results=1000)


def test_store_holds_exactly_the_expected_runs(study):
    client, _, _ = study
    (study_run,) = _runs(client, "study")
    cells, trials = _runs(client, "cell"), _runs(client, "trial")
    assert len(cells) == len(FAMILIES) * len(DATASETS)
    assert len(trials) == len(FAMILIES) * len(DATASETS) * SAMPLES
    cell_ids = {c.info.run_id for c in cells}
    assert all(c.data.tags["mlflow.parentRunId"] == study_run.info.run_id for c in cells)
    assert all(t.data.tags["mlflow.parentRunId"] in cell_ids for t in trials)
    assert {(c.data.tags["tunelab.model"], c.data.tags["tunelab.dataset"]) for c in cells} == {
        (f, d) for f in FAMILIES for d in DATASETS
    }
    assert all(r.info.status == "FINISHED" for r in [study_run, *cells, *trials])
    assert "dataset.breast_cancer.sha256" in study_run.data.tags and "git.commit" in study_run.data.tags


def test_trials_carry_params_and_stepwise_metrics(study):
    client, _, _ = study
    for t in _runs(client, "trial"):
        family = t.data.tags["tunelab.model"]
        assert t.info.run_name.startswith(f"{family} · {t.data.tags['tunelab.dataset']} · ")
        if family == "xgboost":
            assert {"max_depth", "learning_rate"} <= set(t.data.params)
        metric = "val_logloss" if t.data.tags["tunelab.dataset"] == "breast_cancer" else "val_rmse"
        history = client.get_metric_history(t.info.run_id, metric)
        steps = int(t.data.tags["tunelab.steps"])
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, steps + 1))


def test_asha_stopped_some_trials_early(study):
    client, _, _ = study
    trials = _runs(client, "trial")
    early = [t for t in trials if t.data.tags["tunelab.status"] == "early_stopped"]
    assert early, "ASHA stopped no trial early"
    assert all(int(t.data.tags["tunelab.steps"]) < 9 for t in early)
    assert any(t.data.tags["tunelab.status"] == "completed" for t in trials)


def test_cells_carry_validation_and_test_scores(study):
    client, _, out = study
    for c in _runs(client, "cell"):
        m = c.data.metrics
        if c.data.tags["tunelab.dataset"] == "breast_cancer":
            assert m["best_val_logloss"] < 0.5 and 0.8 < m["test_accuracy"] <= 1
        else:
            assert m["best_val_rmse"] > 0 and "test_r2" in m
        assert m["trials"] == SAMPLES
        # compute in the resources held (1 CPU, no GPU per trial here): what families with other resources compare on
        assert m["compute_seconds"] > 0 and m["cpu_seconds"] == m["compute_seconds"] and m["gpu_seconds"] == 0
    assert "breast_cancer (ranked by val_logloss" in out and "diabetes (ranked by val_rmse" in out


def test_best_model_is_the_one_its_trial_trained(study):
    """The registered model is the best trial's own, at the step of the cell's best score: nothing retrained."""
    client, _, _ = study
    trials = {t.data.tags["tunelab.trial_id"]: t for t in _runs(client, "trial")}
    for c in _runs(client, "cell"):
        tags, metric = c.data.tags, c.data.params["metric"]
        assert tags["tunelab.best_model"] == "trial"
        trial = trials[tags["tunelab.best_trial"]]
        history = {m.step: m.value for m in client.get_metric_history(trial.info.run_id, metric)}
        assert history[int(tags["tunelab.best_steps"])] == pytest.approx(c.data.metrics[f"best_{metric}"])
        every = [
            m.value
            for t in trials.values()
            if t.data.tags["tunelab.dataset"] == tags["tunelab.dataset"]
            and t.data.tags["tunelab.model"] == tags["tunelab.model"]
            for m in client.get_metric_history(t.info.run_id, metric)
        ]
        assert c.data.metrics[f"best_{metric}"] == pytest.approx(min(every) if metric != "val_r2" else max(every))


def test_registered_models_load_and_predict(study):
    client, uri, _ = study
    mlflow.set_tracking_uri(uri)
    for dataset, n_features in (("breast_cancer", 30), ("diabetes", 10)):
        name = f"e2e-{dataset}"
        aliases = set(client.get_registered_model(name).aliases)
        assert set(FAMILIES) | {"champion"} <= aliases
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(3, n_features)).astype("float32"))
        for alias in ("champion", *FAMILIES):
            model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
            schema = model.metadata.get_input_schema()
            if schema.is_tensor_spec():  # PyTorch (pt2) takes an array
                assert len(np.asarray(model.predict(X.to_numpy()))) == 3
            else:
                X.columns = schema.input_names()
                assert len(np.asarray(model.predict(X))) == 3
    champion = client.get_model_version_by_alias("e2e-breast_cancer", "champion")
    cells = {c.info.run_id: c for c in _runs(client, "cell") if c.data.tags["tunelab.dataset"] == "breast_cancer"}
    best = min(cells.values(), key=lambda c: c.data.metrics["best_val_logloss"])
    assert champion.run_id == best.info.run_id


def test_importance_pools_each_default_familys_hyperparameters_over_its_cells(study):
    """`tunelab importance` on the study of the three default families: every family, each over both its cells,
    its searched hyperparameters' shares summing to 1 (each cell's shares do)."""
    from tunelab.report import StudyRecord
    from tunelab.report.importance import family_importance

    _, uri, _ = study
    table = family_importance(StudyRecord.load(MlflowClient(uri), "e2e"))
    assert set(table["family"]) == set(FAMILIES)
    for family, rows in table.groupby("family"):
        assert rows["importance"].sum() == pytest.approx(1.0) and (rows["cells"] == len(DATASETS)).all(), family
    assert {"max_depth", "learning_rate"} <= set(table.loc[table["family"] == "xgboost", "param"])
    out = tunelab_ok("importance", "e2e", "--uri", uri)
    assert all(f"  {f} ({len(DATASETS)} cells)" in out.stdout for f in FAMILIES), out.stdout


def test_each_dataset_has_an_ensemble_registered_that_takes_raw_rows(study):
    """The ensemble across families (Caruana's selection over the cells' kept predictions): its own run under the
    study run, registered as a version of the dataset's model with alias ``ensemble``; on the test rows it scores
    what its run recorded (its members are refit: exactly so on the CPU, where MLP training repeats with the seed)."""
    from trainables.base import Context, score
    from tunelab.datasets import load_dataset
    from tunelab.study import DatasetSpec, Split

    client, uri, _ = study
    mlflow.set_tracking_uri(uri)
    ensembles = {r.data.tags["tunelab.dataset"]: r for r in _runs(client, "ensemble")}
    assert set(ensembles) == set(DATASETS)
    for dataset, metric, test_metric in (
        ("breast_cancer", "val_logloss", "test_logloss"),
        ("diabetes", "val_rmse", "test_rmse"),
    ):
        run = ensembles[dataset]
        assert run.info.status == "FINISHED" and run.data.params["members"] and f"best_{metric}" in run.data.metrics
        version = client.get_model_version_by_alias(f"e2e-{dataset}", "ensemble")
        assert version.run_id == run.info.run_id
        model = mlflow.pyfunc.load_model(f"models:/e2e-{dataset}@ensemble")
        data = load_dataset(DatasetSpec(name=dataset), Split(), 0, dataset)
        raw = data.example  # raw rows, as a user has them
        assert len(model.predict(raw)) == len(raw)
        outputs = model.unwrap_python_model().predictor.outputs(data.X_test)
        ctx = Context(task=data.task, n_classes=data.n_classes)
        assert score(ctx, data.y_test, outputs, "test")[test_metric] == pytest.approx(
            run.data.metrics[test_metric], rel=1e-3
        )
