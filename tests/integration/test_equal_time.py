"""The equal-time protocol (``search.time_budget_s``): every cell gets the same wall-clock budget instead of the
same number of trials; on a real local Ray and a sqlite store."""

import pytest
from mlflow.tracking import MlflowClient

from tests.cli import tunelab_ok

pytestmark = pytest.mark.integration

BUDGET_S, SAMPLES = 6.0, 500
#: a trial suggested just before the budget ran out starts its run a little later
START_SLACK_S = 3.0


def test_each_cell_starts_trials_for_its_time_budget_then_stops(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = tmp_path / "equal_time.yaml"
    path.write_text(f"""
name: equal_time
datasets: [iris]
models: [dummy, knn]
search:
  {{searcher: random, scheduler: fifo, num_samples: {SAMPLES}, max_concurrent_trials: 1, time_budget_s: {BUDGET_S}}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp_path}/tune
""")
    tunelab_ok("run", path, cwd=tmp_path)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("equal_time").experiment_id], max_results=2000)
    (study,) = [r for r in runs if r.data.tags["tunelab.role"] == "study"]
    assert study.data.params["time_budget_s"] == str(BUDGET_S)
    cells = [r for r in runs if r.data.tags["tunelab.role"] == "cell"]
    assert len(cells) == 2
    for cell in cells:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell.info.run_id]
        starts = sorted(t.info.start_time / 1000 for t in trials)
        assert cell.info.status == "FINISHED" and 2 <= len(trials) < SAMPLES, (cell.info.run_name, len(trials))
        assert cell.data.metrics["trials"] == len(trials)
        assert starts[-1] - starts[0] <= BUDGET_S + START_SLACK_S, cell.info.run_name  # none started after it
    report = (tmp_path / "reports" / "equal_time" / "report.html").read_text()
    assert f"equal time: {BUDGET_S} s of wall-clock per cell" in report
