"""Cells multiplexed in one Tune experiment keep what makes each a cell: its own ASHA rungs, concurrency cap
and default-first trial, a classification and a regression dataset side by side."""

from collections import defaultdict

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune

from tunelab import compat
from tunelab.run import plan_study, run_study
from tunelab.study import load_study

pytestmark = pytest.mark.integration

SAMPLES, STEPS = 6, 3


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cells")
    uri = f"sqlite:///{tmp}/m.db"
    path = tmp / "s.yaml"
    path.write_text(f"""
name: six-cells
datasets: [iris, diabetes]
models: [random_forest, extra_trees, knn]
search: {{searcher: optuna, scheduler: asha, num_samples: {SAMPLES}, max_concurrent_trials: 1, grace_period: 1,
          reduction_factor: 3}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp}/tune
spaces:
  random_forest: {{budget: {{steps: {STEPS}, per_step: 4}}}}
  extra_trees: {{budget: {{steps: {STEPS}, per_step: 4}}}}
""")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_study(plan_study(load_study(path), path), progress=False)
    finally:
        ray.shutdown()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("six-cells")
    trials = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'", max_results=1000)
    by_cell = defaultdict(list)
    for t in trials:
        by_cell[(t.data.tags["tunelab.model"], t.data.tags["tunelab.dataset"])].append(t)
    return {"results": results, "client": client, "by_cell": by_cell, "tmp": tmp}


def test_every_cell_ran_its_own_trials_in_one_experiment(study):
    assert len(study["results"]) == 6 and all(r.status == "FINISHED" for r in study["results"])
    assert {len(ts) for ts in study["by_cell"].values()} == {SAMPLES}
    trials = tune.ExperimentAnalysis(str(study["tmp"] / "tune" / "six-cells")).trials
    assert len(trials) == 6 * SAMPLES  # one experiment holds every cell's trials
    classification = {k for k, v in trials[0].config.items() if not k.startswith("__")}
    assert any({k for k in t.config if not k.startswith("__")} != classification for t in trials), (
        "every trial has the same keys: the cells did not search their own spaces"
    )


def test_each_cells_first_trial_is_its_familys_default(study):
    for cell, trials in study["by_cell"].items():
        first = [t for t in trials if t.data.tags["tunelab.trial_number"] == "1"]
        defaults = [t for t in trials if t.data.tags.get("tunelab.default_config") == "true"]
        assert first and defaults == first, cell


def test_no_cell_runs_more_trials_at_once_than_its_cap_while_cells_run_side_by_side(study):
    def most_at_once(runs) -> int:
        events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
        at_once = most = 0
        for _, step in events:  # an end sorts before a start at the same millisecond
            at_once += step
            most = max(most, at_once)
        return most

    assert all(most_at_once(trials) == 1 for trials in study["by_cell"].values())
    every = [t for trials in study["by_cell"].values() for t in trials]
    if compat.switched_off():  # Tune's own actor reuse may hand every trial to one worker (compat.actors_not_stolen)
        assert most_at_once(every) <= 2
    else:
        assert most_at_once(every) == 2


def test_asha_judges_each_trial_against_its_own_cell_only(study):
    """A trial stopped at a rung had a better score beside it in its own cell at that rung; every cell, the
    regression ones (val_rmse in the tens) beside the classification ones (val_logloss below 2), ran a trial to
    its full budget."""
    client, stopped = study["client"], 0
    for (family, dataset), trials in study["by_cell"].items():
        if family == "knn":
            continue  # one budget step: nothing to stop
        metric = "val_rmse" if dataset == "diabetes" else "val_logloss"
        history = {
            t.info.run_id: {m.step: m.value for m in client.get_metric_history(t.info.run_id, metric)} for t in trials
        }
        assert any(len(h) == STEPS for h in history.values()), (family, dataset)
        for run_id, h in history.items():
            if len(h) < STEPS:
                stopped += 1
                rung = max(h)
                assert any(o.get(rung, float("inf")) < h[rung] for r, o in history.items() if r != run_id), (
                    family,
                    dataset,
                    h,
                )
    assert stopped, "ASHA stopped no trial: the test shows nothing"
