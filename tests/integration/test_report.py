"""The study report, `tunelab best` and `tunelab replay` against one small study on real Ray and a sqlite store.

The report's numbers are checked against what the store holds, recomputed here independently.
"""

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

from tests.cli import tunelab_here, tunelab_ok
from tunelab.spaces import load_space

pytestmark = pytest.mark.integration

NAME = "rep"
FAMILIES = ["dummy", "knn", "logistic_regression", "xgboost"]
DATASETS = ["iris", "bc"]
SAMPLES = 3
XGB_STEPS = 4


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    bc = load_breast_cancer(as_frame=True).frame
    bc.to_csv(tmp / "bc.csv", index=False)
    uri = f"sqlite:///{tmp}/mlflow.db"
    path = tmp / "rep.yaml"
    path.write_text(f"""
name: {NAME}
seed: 0
datasets: [iris, {{name: bc, path: bc.csv, target: target, task: classification}}]
models: [{", ".join(FAMILIES)}]
search: {{searcher: optuna, scheduler: asha, num_samples: {SAMPLES}, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp}/tune
diagnostics: all                # every cell's figures (default: each dataset's champion only)
spaces: {{xgboost: {{budget: {{steps: {XGB_STEPS}, per_step: 5}}}}}}
""")
    out = tunelab_ok("run", path, cwd=tmp, timeout=900)
    return {"client": MlflowClient(uri), "uri": uri, "tmp": tmp, "stdout": out.stdout}


def _cli(study, *args):
    """``tunelab ARGS --uri STORE`` in this process."""
    return tunelab_here(*args, "--uri", study["uri"])


def _runs(client, role):
    exp = client.get_experiment_by_name(NAME)
    return client.search_runs([exp.experiment_id], f"tags.`tunelab.role` = '{role}'", max_results=1000)


@pytest.fixture(scope="module")
def report(study):
    out = study["tmp"] / "report-out"
    res = _cli(study, "report", NAME, "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return out, res.stdout


def _store_scores(client) -> pd.DataFrame:
    """Per cell, straight from the store: the test logloss of the selected configuration and the counts."""
    rows = []
    for c in _runs(client, "cell"):
        m = c.data.metrics
        rows.append(
            {
                "dataset": c.data.tags["tunelab.dataset"],
                "family": c.data.tags["tunelab.model"],
                "best_val": m["best_val_logloss"],
                "test": m["test_logloss"],
                "trials": m["trials"],
                "early_stopped": m["trials_early_stopped"],
                "failed": m["trials_failed"],
                "compute_s": m["compute_seconds"],
            }
        )
    return pd.DataFrame(rows)


def test_leaderboard_matches_the_store(study, report):
    out, _ = report
    board = pd.read_csv(out / "leaderboard.csv")
    store = _store_scores(study["client"])
    lb = board[board["family"] != "ensemble"]
    assert len(lb) == len(store) == len(FAMILIES) * len(DATASETS)
    assert sorted(board.loc[board["family"] == "ensemble", "dataset"]) == sorted(DATASETS)  # one per dataset
    merged = lb.merge(store, on=["dataset", "family"], suffixes=("", "_store"))
    assert len(merged) == len(store)
    for col in ("best_val", "test", "trials", "early_stopped", "failed", "compute_s"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_store"], rtol=1e-12, err_msg=col)
    for _, g in board.groupby("dataset", sort=False):  # best validation score first
        assert list(g["best_val"]) == sorted(g["best_val"])


def test_normalised_scores_and_ranks_match_the_store(study, report):
    out, _ = report
    store = _store_scores(study["client"])
    expected_norm, expected_rank = {}, {}
    for dataset, g in store.groupby("dataset"):
        worst, best = g["test"].max(), g["test"].min()  # logloss: lower is better
        for fam, t in zip(g["family"], g["test"]):
            expected_norm[(dataset, fam)] = (worst - t) / (worst - best)
            expected_rank[(dataset, fam)] = 1 + (g["test"] < t).sum() + ((g["test"] == t).sum() - 1) / 2
    norm = pd.read_csv(out / "normalised.csv", index_col="family")
    for (dataset, fam), v in expected_norm.items():
        assert norm.loc[fam, dataset] == pytest.approx(v, abs=1e-12)
    families = pd.read_csv(out / "families.csv").set_index("family")
    for fam in FAMILIES:
        assert families.loc[fam, "mean_rank"] == pytest.approx(np.mean([expected_rank[(d, fam)] for d in DATASETS]))
        assert families.loc[fam, "mean_normalised"] == pytest.approx(
            np.mean([expected_norm[(d, fam)] for d in DATASETS])
        )
    assert families.loc["dummy", "mean_normalised"] == 0.0  # the chance baseline is the worst everywhere


def test_asha_savings_count_the_steps_trials_ran(study, report):
    out, _ = report
    asha = pd.read_csv(out / "asha.csv").set_index(["dataset", "family"])
    trials = _runs(study["client"], "trial")
    for d in DATASETS:
        ran = sum(
            int(t.data.tags["tunelab.steps"])
            for t in trials
            if t.data.tags["tunelab.dataset"] == d and t.data.tags["tunelab.model"] == "xgboost"
        )
        assert asha.loc[(d, "xgboost"), "steps_run"] == ran
        assert asha.loc[(d, "xgboost"), "steps_full"] == SAMPLES * XGB_STEPS
        assert asha.loc[(d, "knn"), "steps_run"] == asha.loc[(d, "knn"), "steps_full"] == SAMPLES
    total = asha.loc[("all", "all")]
    assert total["saved_fraction"] == pytest.approx(1 - total["steps_run"] / total["steps_full"])


def test_anytime_curves_only_improve(report):
    out, _ = report
    curves = pd.read_csv(out / "anytime.csv")
    assert set(curves["family"]) == set(FAMILIES) and set(curves["dataset"]) == set(DATASETS)
    for _, g in curves.groupby(["dataset", "family"]):
        v = g.sort_values("compute_s")["best_val_so_far"].dropna().to_numpy()
        assert len(v) and np.all(np.diff(v) <= 1e-12)  # logloss: best so far never rises


def test_html_and_pngs_are_written_and_logged_to_the_study_run(study, report):
    out, stdout = report
    page = (out / "report.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {
        "normalised.png",
        "critical_difference.png",
        "anytime_iris.png",
        "anytime_bc.png",
        "learning_bc.png",
    } <= set(pngs)
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert page.count("data:image/png;base64,") >= len(pngs) and 'src="http' not in page  # self-contained
    assert "equal trials: 3 per cell" in page and "git commit" in page
    (study_run,) = _runs(study["client"], "study")
    logged = {f.path for f in study["client"].list_artifacts(study_run.info.run_id, "report")}
    assert {"report/report.html", "report/leaderboard.csv", "report/normalised.png"} <= logged
    assert "mean rank" in stdout and "95 % interval" in stdout
    families, pairwise = pd.read_csv(out / "families.csv"), pd.read_csv(out / "pairwise.csv", index_col=0)
    assert (families["ci_low"] <= families["mean_normalised"]).all()
    assert (families["mean_normalised"] <= families["ci_high"]).all()
    assert sorted(pairwise.index) == sorted(pairwise.columns) == sorted(families["family"])


def test_run_prints_the_short_report(study):
    assert "across 2 datasets" in study["stdout"] and "budget steps run:" in study["stdout"]
    assert (study["tmp"] / "reports" / NAME / "report.html").exists()


def test_each_cell_tries_the_family_default_first(study):
    for t in _runs(study["client"], "trial"):
        family, number = t.data.tags["tunelab.model"], int(t.data.tags["tunelab.trial_number"])
        is_default = t.data.tags.get("tunelab.default_config") == "true"
        if number == 1:
            assert is_default, (family, t.data.params)
            defaults = load_space(family, "classification").defaults
            assert {k: str(v) for k, v in defaults.items()} == {k: t.data.params[k] for k in defaults}


def test_best_prints_each_cell_and_a_loadable_model_uri(study):
    res = _cli(study, "best", NAME, "--dataset", "bc")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("model:  mlflow.pyfunc.load_model(") == len(FAMILIES)
    assert f'"models:/{NAME}-bc@xgboost"' in res.stdout
    mlflow.set_tracking_uri(study["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}-bc@xgboost")
    X = load_breast_cancer(as_frame=True).data.iloc[:4].astype("float32")
    assert len(model.predict(X)) == 4
    bad = _cli(study, "best", NAME, "--dataset", "nope")
    assert bad.returncode == 2 and "--dataset" in bad.stderr


def _trial(client, family, dataset):
    return next(
        t
        for t in _runs(client, "trial")
        if t.data.tags["tunelab.model"] == family
        and t.data.tags["tunelab.dataset"] == dataset
        and t.data.tags["tunelab.status"] != "failed"
    )


def test_replay_reproduces_a_trial_exactly(study):
    for family in ("xgboost", "knn"):
        run = _trial(study["client"], family, "bc")
        res = _cli(study, "replay", run.info.run_id)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "replay agrees with the recorded trial exactly" in res.stdout
        steps = int(run.data.tags["tunelab.steps"])
        assert res.stdout.count("val_logloss") == steps  # every step compared


def test_replay_refuses_a_changed_dataset(study):
    csv = study["tmp"] / "bc.csv"
    original = csv.read_bytes()
    df = pd.read_csv(csv)
    df.loc[0, "mean radius"] += 1.0
    df.to_csv(csv, index=False)
    try:
        res = _cli(study, "replay", _trial(study["client"], "knn", "bc").info.run_id)
    finally:
        csv.write_bytes(original)
    assert res.returncode == 2
    assert "dataset 'bc'" in res.stderr and "the data changed since the trial ran" in res.stderr
    not_a_trial = _cli(study, "replay", _runs(study["client"], "cell")[0].info.run_id)
    assert not_a_trial.returncode == 2 and "not a trial run" in not_a_trial.stderr


def test_each_cell_run_holds_its_best_models_diagnostics(study, report):
    client = study["client"]
    for c in _runs(client, "cell"):
        files = {f.path.split("/")[-1] for f in client.list_artifacts(c.info.run_id, "diagnostics")}
        assert {
            "confusion_matrix.png",
            "roc.png",
            "precision_recall.png",
            "permutation_importance.png",
            "importance.json",
        } <= files, c.info.run_name
        if c.data.tags["tunelab.model"] == "xgboost":
            assert "learning_curve.png" in files
        if c.data.tags["tunelab.dataset"] == "bc":
            local = client.download_artifacts(c.info.run_id, "diagnostics/importance.json", str(study["tmp"]))
            assert "mean radius" in json.loads(open(local).read())["features"]  # the raw column names
    out, _ = report
    page = (out / "report.html").read_text()
    assert "Diagnostics of each family" in page and (out / "diagnostics_bc__xgboost__roc.png").exists()


def test_rescore_rebuilds_the_report_under_another_metric_from_the_store_alone(study):
    """``tunelab rescore`` in an interpreter of its own: the report under val_accuracy comes from the cells' stored
    predictions, which reproduce what the trials logged; afterwards Ray was never started and no family's module
    (nor XGBoost or torch) was imported there: nothing was trained."""
    out = study["tmp"] / "rescored"
    args = ["rescore", NAME, "--metric", "val_accuracy", "--out", str(out), "--uri", study["uri"]]
    probe = (
        "import json, sys\n"
        "from tunelab.cli import main\n"
        f"code = main({args!r})\n"
        "import ray\n"
        "from trainables import FAMILIES\n"
        "heavy = [m for m in sys.modules if m in {f'trainables.{f}' for f in FAMILIES} or m.split('.')[0] in "
        "('xgboost', 'torch')]\n"
        "print(json.dumps({'code': code, 'ray': ray.is_initialized(), 'imported': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen == {"code": 0, "ray": False, "imported": []}, seen
    board = pd.read_csv(out / "leaderboard.csv")
    leaderboard = board[board["family"] != "ensemble"]
    assert set(board["metric"]) == {"val_accuracy"} and len(leaderboard) == len(FAMILIES) * len(DATASETS)
    assert (board["family"] == "ensemble").sum() == len(DATASETS)  # selected under val_accuracy too
    client = study["client"]
    trials = {t.data.tags["tunelab.trial_id"]: t for t in _runs(client, "trial")}
    for c in _runs(client, "cell"):
        local = client.download_artifacts(c.info.run_id, "predictions/index.json", str(study["tmp"]))
        index = json.loads(open(local).read())
        assert 1 <= len(index) <= SAMPLES and [t["value"] for t in index] == sorted(t["value"] for t in index)
        accuracy = []  # of each kept trial at its kept step, as the trial logged it
        for kept in index:
            run_id = trials[kept["trial_id"]].info.run_id
            logloss = {m.step: m.value for m in client.get_metric_history(run_id, "val_logloss")}
            assert logloss[kept["step"]] == pytest.approx(kept["value"], rel=1e-5)
            accuracy.append({m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}[kept["step"]])
        row = leaderboard[(leaderboard["dataset"] == c.data.tags["tunelab.dataset"])]
        row = row[row["family"] == c.data.tags["tunelab.model"]].iloc[0]
        assert row["best_val"] == pytest.approx(max(accuracy), rel=1e-5) and 0 <= row["test"] <= 1
    assert "rescored under val_accuracy" in (out / "report.html").read_text()
