"""Trial runs against a real sqlite store (no Ray): how a resumed driver takes over the runs a killed one left."""

from types import SimpleNamespace

from tunelab.run.book import CELL, NUMBER
from tunelab.run.console import Progress
from tunelab.run.plan import plan_study
from tunelab.run.trial_runs import TrialRuns
from tunelab.study import load_study
from tunelab.tracking import ROLE, ROLE_RETIRED_TRIAL, ROLE_TRIAL, TRIAL_ID, TRIAL_NUMBER, Tracker

STUDY = """
name: s
datasets: [iris]
models: [random_forest]
search: {{searcher: random, num_samples: 4}}
tracking: {{uri: "sqlite:///{tmp}/m.db", register_models: false}}
"""


def test_a_trial_tune_had_not_saved_goes_on_in_the_run_that_logged_nothing_or_the_same_config(tmp_path):
    """The killed driver had created runs for trials Tune had not saved yet. Tune proposes them again, under new
    trial ids, as the same numbers of the cell: a run with the same configuration, or one that logged nothing
    (MLflow's client creates a run a moment before it logs into it), goes on; one with another is retired."""
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(tmp=tmp_path))
    plan = plan_study(load_study(path), path)
    (cell,) = plan.cells
    tracker = Tracker(plan.study.tracking.resolved_uri())
    tracker.open("s")
    client, config = tracker.client, dict(cell.space.defaults)
    tracker.adopt(cell.key, client.create_run(tracker.experiment_id).info.run_id)  # the cell's run
    left = {}
    for number, params in ((1, {}), (2, config), (3, {**config, "n_estimators": -1})):
        run = client.create_run(
            tracker.experiment_id, tags={ROLE: ROLE_TRIAL, TRIAL_ID: f"old{number}", TRIAL_NUMBER: str(number)}
        )
        for k, v in params.items():
            client.log_param(run.info.run_id, k, str(v))
        left[number] = run.info.run_id

    trial_runs = TrialRuns(tracker, {cell.key: cell}, "s", False, Progress(plan, enabled=False))
    trial_runs.adopt(cell.key, [client.get_run(run_id) for run_id in left.values()])
    for number in (1, 2, 3):
        trial_runs.start(SimpleNamespace(trial_id=f"new{number}", config={**config, CELL: cell.key, NUMBER: number}))
    assert tracker.close(timeout_s=30)

    for number in (1, 2):
        run = client.get_run(left[number])
        assert run.data.tags[TRIAL_ID] == f"new{number}" and run.data.tags[ROLE] == ROLE_TRIAL
        assert run.data.params == {k: str(v) for k, v in config.items()} and run.info.status == "RUNNING"
    retired = client.get_run(left[3])
    assert retired.data.tags[ROLE] == ROLE_RETIRED_TRIAL and retired.info.status == "KILLED"
    (new3,) = client.search_runs([tracker.experiment_id], f"tags.`{TRIAL_ID}` = 'new3'")
    assert new3.info.run_id != left[3]
