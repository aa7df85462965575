"""Every searcher × scheduler pair the study accepts runs a tiny cell on a real local Ray."""

import threading
import time

import mlflow
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.util.placement_group import placement_group, remove_placement_group

from tunelab.run import plan_study, run_study
from tunelab.search import SCHEDULERS, SEARCHERS
from tunelab.study import load_study

pytestmark = pytest.mark.integration

PAIRS = [(se, sc) for se in SEARCHERS for sc in SCHEDULERS if (se == "bohb") == (sc == "bohb")]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("searcher,scheduler", PAIRS)
def test_pair_runs_a_tiny_cell(tmp_path, searcher, scheduler):
    """With 3-fold validation: the fold mean is what every searcher and scheduler judges (and BOHB pauses and
    resumes a trial's fold models from its checkpoint)."""
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "s.yaml"
    path.write_text(f"""
name: pair-{searcher}-{scheduler}
datasets: [iris]
models: [random_forest]
split: {{folds: 3, test: 0.2}}
search: {{searcher: {searcher}, scheduler: {scheduler}, num_samples: 3, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
spaces: {{random_forest: {{budget: {{steps: 3, per_step: 2}}}}}}
""")
    plan = plan_study(load_study(path), path)
    (result,) = run_study(plan, progress=False)
    assert result.status == "FINISHED" and result.trials == 3 and result.failed == 0
    assert isinstance(result.best_config["config"]["max_depth"], int)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(plan.study.name)
    trials = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'")
    assert len(trials) == 3 and all(t.info.status == "FINISHED" for t in trials)
    assert all("val_logloss_std" in t.data.metrics for t in trials)


def test_trials_shorter_than_an_actor_start_run_on_every_slot(tmp_path):
    """These trials take a fifth of a second, a trial actor seconds to start. Once one actor runs before the other
    has started (here: a CPU held until the first trial is in the store), Tune's actor reuse alone gives each next
    trial to the running actor and removes the other as it comes up, again and again: every trial in one worker
    process (compat.actors_not_stolen)."""
    uri, n = f"sqlite:///{tmp_path}/m.db", 60
    path = tmp_path / "s.yaml"
    path.write_text(f"""
name: short-trials
datasets: [iris]
models: [random_forest]
search: {{searcher: random, scheduler: fifo, num_samples: {n}, max_concurrent_trials: 2, default_first: false}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
spaces: {{random_forest: {{budget: {{steps: 3, per_step: 10}}}}}}
""")
    plan = plan_study(load_study(path), path)
    held = placement_group([{"CPU": 1}])
    held.wait(timeout_seconds=30)

    def release_when_a_trial_runs() -> None:
        client, deadline = MlflowClient(uri), time.monotonic() + 120
        while time.monotonic() < deadline:
            exp = client.get_experiment_by_name("short-trials")
            if exp and client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'", max_results=1):
                break
            time.sleep(0.05)
        remove_placement_group(held)

    releaser = threading.Thread(target=release_when_a_trial_runs)
    releaser.start()
    (result,) = run_study(plan, progress=False)
    releaser.join()
    assert result.status == "FINISHED" and result.trials == n
    trials = tune.ExperimentAnalysis(f"{tmp_path}/tune/short-trials").trial_dataframes.values()
    workers = {int(df["pid"].iloc[-1]) for df in trials}
    assert len(workers) == 2, f"{n} trials in {len(workers)} worker process(es) on 2 CPUs"


def test_gpus_asked_of_a_cluster_without_any_is_an_error_before_writing(tmp_path):
    from tunelab.errors import StudyError

    path = tmp_path / "g.yaml"
    path.write_text(f"""
name: nogpu
datasets: [iris]
models: [dummy]
resources: {{gpus_per_trial: 0.25}}
tracking: {{uri: "sqlite:///{tmp_path}/m.db"}}
""")
    with pytest.raises(StudyError, match="resources.gpus_per_trial.*no GPUs"):
        run_study(plan_study(load_study(path), path), progress=False)
    assert MlflowClient(f"sqlite:///{tmp_path}/m.db").get_experiment_by_name("nogpu") is None


def test_failing_trials_are_retried_then_end_failed_with_their_error_and_other_cells_go_on(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "f.yaml"
    path.write_text(f"""
name: failing
datasets: [iris]
models: [knn, dummy]
search: {{searcher: random, scheduler: fifo, num_samples: 2, max_concurrent_trials: 2, max_failures: 1,
          default_first: false}}   # knn's default (5 neighbours) is outside the range below
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
spaces: {{knn: {{n_neighbors: {{randint: [500, 600]}}}}}}   # more neighbours than training rows
""")
    results = {r.cell.family: r for r in run_study(plan_study(load_study(path), path), progress=False)}
    assert results["knn"].status == "FAILED" and results["knn"].failed == 2
    assert results["dummy"].status == "FINISHED" and results["dummy"].failed == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("failing")
    runs = client.search_runs([exp.experiment_id], "tags.`tunelab.model` = 'knn'")
    trials = [r for r in runs if r.data.tags["tunelab.role"] == "trial"]
    assert len(trials) == 2 and all(t.info.status == "FAILED" for t in trials)
    assert all("n_neighbors" in t.data.tags["tunelab.error"] for t in trials)
    assert all(t.data.tags["tunelab.attempts"] == "2" for t in trials)  # max_failures: 1 → tried twice
    texts = [mlflow.artifacts.load_text(f"runs:/{t.info.run_id}/error.txt") for t in trials]
    assert all("n_neighbors" in text and 'File "' in text for text in texts), texts[0]
    assert [r.info.status for r in runs if r.data.tags["tunelab.role"] == "cell"] == ["FAILED"]
    (study_run,) = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'study'")
    assert study_run.info.status == "FAILED"


def test_many_trials_finishing_at_once_lose_nothing_in_sqlite(tmp_path):
    """Two cells of quick trials finishing together: every run and every metric reaches the store."""
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "c.yaml"
    path.write_text(f"""
name: crowd
datasets: [iris, wine]
models: [dummy]
search: {{searcher: random, scheduler: fifo, num_samples: 30, max_concurrent_trials: 4}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
""")
    results = run_study(plan_study(load_study(path), path), progress=False)
    assert [r.trials for r in results] == [30, 30]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("crowd")
    trials = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'", max_results=1000)
    assert len(trials) == 60 and {t.info.status for t in trials} == {"FINISHED"}
    assert all(set(t.data.metrics) == {"val_accuracy", "val_logloss", "val_roc_auc"} for t in trials)
