"""One driver per study: a second one is refused before it does any work, by a lock the OS releases on exit."""

import os

from mlflow.tracking import MlflowClient

from tests.cli import tunelab
from tunelab.run.driver_lock import LOCK_FILE, driver_lock

STUDY = """
name: locked
datasets: [iris]
models: [dummy]
search: {{num_samples: 2}}
tracking: {{uri: "sqlite:///{tmp}/m.db", register_models: false}}
storage_path: {tmp}/tune
"""


def test_a_second_driver_of_a_running_study_exits_2_before_any_work(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.format(tmp=tmp_path))
    with driver_lock(str(tmp_path / "tune" / "locked"), "locked"):  # this process plays the first driver
        done = tunelab("run", str(path), cwd=tmp_path, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 2 and f"is being run by another driver (pid {os.getpid()}" in out, out[-3000:]
    assert "Traceback" not in out
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    assert client.get_experiment_by_name("locked") is None  # nothing written
    assert [p.name for p in (tmp_path / "tune" / "locked").iterdir()] == [LOCK_FILE]
