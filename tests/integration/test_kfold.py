"""k-fold validation end to end: 2 families × 2 datasets, 5 folds, the split repeated twice, Optuna + ASHA, on a real
local Ray and a sqlite store; then its report (one block per dataset, what tuning bought) and a replayed trial."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.cli import tunelab_here, tunelab_ok

pytestmark = pytest.mark.integration

NAME, FOLDS, SAMPLES, STEPS = "kfold", 5, 3, 3
FAMILIES, DATASETS = ["xgboost", "logistic_regression"], ["iris", "wine"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfold")
    uri = f"sqlite:///{tmp}/mlflow.db"
    path = tmp / "kfold.yaml"
    path.write_text(f"""
name: {NAME}
datasets: [{", ".join(DATASETS)}]
models: [{", ".join(FAMILIES)}]
split: {{folds: {FOLDS}, test: 0.2}}
splits: 2
search: {{searcher: optuna, scheduler: asha, num_samples: {SAMPLES}, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp}/tune
spaces: {{xgboost: {{budget: {{steps: {STEPS}, per_step: 4}}}}}}
""")
    tunelab_ok("run", path, cwd=tmp, timeout=900)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id], max_results=1000)
    by_role = {role: [r for r in runs if r.data.tags.get("tunelab.role") == role] for role in ("cell", "trial")}
    return {"client": client, "uri": uri, "tmp": tmp, **by_role}


def _cli(study, *args):
    out = tunelab_here(*args, "--uri", study["uri"])
    return out.returncode, out.stdout + out.stderr


def test_trials_report_the_fold_mean_and_its_spread_at_every_step(study):
    assert len(study["trial"]) == len(FAMILIES) * len(DATASETS) * 2 * SAMPLES
    for t in study["trial"]:
        steps = int(t.data.tags["tunelab.steps"])
        for metric in ("val_logloss", "val_logloss_std", "val_accuracy_std"):
            history = study["client"].get_metric_history(t.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, steps + 1)), (t.info.run_name, metric)
        assert t.data.metrics["val_logloss_std"] >= 0


def test_cells_hold_the_refit_test_score_and_the_defaults(study):
    cells = study["cell"]
    assert len(cells) == len(FAMILIES) * len(DATASETS) * 2
    for c in cells:
        assert c.info.status == "FINISHED" and c.data.params["folds"] == str(FOLDS)
        assert c.data.tags["tunelab.best_model"] == "retrained"  # refit on every non-test row, not a fold's model
        assert 0 <= c.data.metrics["test_accuracy"] <= 1 and c.data.metrics["test_logloss"] > 0
        assert c.data.metrics["default_test_logloss"] > 0
        best = min(
            study["client"].get_metric_history(t.info.run_id, "val_logloss")[-1].value for t in _trials_of(study, c)
        )
        assert c.data.metrics["best_val_logloss"] == pytest.approx(best)  # the fold mean the selection used


def _trials_of(study, cell):
    return [t for t in study["trial"] if t.data.tags["mlflow.parentRunId"] == cell.info.run_id]


def test_report_ranks_one_block_per_dataset_and_says_what_tuning_bought(study):
    out = study["tmp"] / "report"
    code, text = _cli(study, "report", NAME, "--out", str(out))
    assert code == 0, text
    page = (out / "report.html").read_text()
    assert len(pd.read_csv(out / "scores_by_split.csv").groupby(["dataset", "split"])) == 4
    assert f"over {len(DATASETS)} datasets" in page and "over 4 datasets" not in page  # splits are not datasets
    gains = pd.read_csv(out / "tuning_gain.csv")
    assert sorted(zip(gains["dataset"], gains["family"])) == sorted((d, f) for d in DATASETS for f in FAMILIES)
    assert set(pd.read_csv(out / "tunability.csv")["family"]) == set(FAMILIES)
    assert "What tuning bought" in page and (out / "tuning_gain.png").stat().st_size > 5000


def test_replay_retrains_every_fold_and_agrees(study):
    trial = next(t for t in study["trial"] if t.data.tags["tunelab.model"] == "xgboost")
    code, text = _cli(study, "replay", trial.info.run_id)
    assert code == 0 and "replay agrees with the recorded trial exactly" in text, text
