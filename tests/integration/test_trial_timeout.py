"""search.trial_timeout_s: a trial that reports nothing for that long is stopped and its run ends FAILED, saying why;
the study goes on and ends (on a real local Ray, a real sqlite store)."""

import pytest
import ray
from mlflow.tracking import MlflowClient

from tunelab.run import plan_study, run_study
from tunelab.study import load_study

pytestmark = pytest.mark.integration


def test_a_trial_that_reports_nothing_in_time_is_stopped_as_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "s.yaml"
    # a random forest step of 30000 trees takes most of a minute; the dummy's steps take milliseconds
    path.write_text(f"""
name: hung
datasets: [breast_cancer]
models: [dummy, random_forest]
search: {{searcher: random, scheduler: fifo, num_samples: 2, max_concurrent_trials: 2, trial_timeout_s: 3}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
spaces: {{random_forest: {{budget: {{steps: 2, per_step: 30000}}}}}}
""")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_study(plan_study(load_study(path), path), progress=False)
    finally:
        ray.shutdown()
    status = {r.cell.family: (r.status, r.failed) for r in results}
    assert status == {"dummy": ("FINISHED", 0), "random_forest": ("FAILED", 2)}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("hung")
    trials = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'")
    by_family = {}
    for t in trials:
        by_family.setdefault(t.data.tags["tunelab.model"], []).append(t)
    assert {t.info.status for t in by_family["dummy"]} == {"FINISHED"}
    assert len(by_family["random_forest"]) == 2
    for t in by_family["random_forest"]:
        assert t.info.status == "FAILED"
        assert t.data.tags["tunelab.error"] == "reported nothing for 3 s (search.trial_timeout_s): stopped"
