"""Faults, injected for real: a killed or interrupted driver, an unreachable tracking server.

Each test runs `tunelab` as a separate process (as users do), breaks something on purpose, and
asserts the end state of the MLflow store and of Tune's storage.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.servers import TrackingServer

pytestmark = pytest.mark.integration

SAMPLES = 14  # a study long enough for a fault to land mid-way
FEWER = 8  # where the fault does not need a long study
KILLED = 20  # the killed driver's study: long enough to be killed mid-way on a fast machine
STATE_PERIOD_S = 2  # Tune saves its experiment state this often in these tests (default: 10 s or more)
STEPS = 4
STUDY = """
name: {name}
datasets: [breast_cancer]
models: [dummy, random_forest]
search: {{searcher: random, scheduler: fifo, num_samples: {samples}, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}", register_models: {register}}}
storage_path: {tmp}/tune
spaces: {{random_forest: {{budget: {{steps: {steps}, per_step: {per_step}}}}}}}
"""
TUNELAB = [sys.executable, "-m", "tunelab.cli"]


def _write(tmp: Path, name: str, uri: str, samples: int = SAMPLES, register: bool = False, per_step: int = 40) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        STUDY.format(
            name=name, uri=uri, tmp=tmp, samples=samples, steps=STEPS, register=str(register).lower(), per_step=per_step
        )
    )
    return path


def _start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*TUNELAB, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TUNE_GLOBAL_CHECKPOINT_S": str(STATE_PERIOD_S), **(env or {})},
    )


def _wait_for_lines(proc: subprocess.Popen, needle: str, count: int, timeout: float = 300) -> list[str]:
    """Read the driver's output until ``count`` lines contain ``needle``."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if sum(needle in s for s in seen) >= count or time.time() > deadline:
            return seen
    raise AssertionError("the driver ended before the fault could be injected:\n" + "".join(seen[-40:]))


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _runs(uri: str, name: str, role: str) -> list:
    client = MlflowClient(uri)  # (as the environment's MLflow user, where the store asks for one)
    exp = client.get_experiment_by_name(name)
    if exp is None:  # the study has not written yet
        return []
    return client.search_runs([exp.experiment_id], f"tags.`tunelab.role` = '{role}'", max_results=1000)


def _assert_tune_storage_complete(storage: Path, samples: int = SAMPLES) -> None:
    """Tune's own record agrees: every trial of every cell finished, none twice."""
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(storage)).trials
    for cell in ("dummy.breast_cancer", "random_forest.breast_cancer"):
        of_cell = [t for t in trials if t.config["__cell"] == cell]
        assert len(of_cell) == samples and {t.status for t in of_cell} == {"TERMINATED"}, cell


def _assert_complete(uri: str, name: str, samples: int = SAMPLES) -> list:
    """Exactly one finished run per trial, none left RUNNING, every step of every full trial logged."""
    trials = _runs(uri, name, "trial")
    assert len(trials) == 2 * samples, f"{len(trials)} trial runs, expected {2 * samples}"
    keys = {(t.data.tags["tunelab.model"], t.data.tags["tunelab.trial_id"]) for t in trials}
    assert len(keys) == len(trials), "a trial has two runs"
    assert {t.info.status for t in trials} == {"FINISHED"}
    client = MlflowClient(uri)
    for t in trials:
        if t.data.tags["tunelab.model"] == "random_forest":
            steps = [m.step for m in client.get_metric_history(t.info.run_id, "val_logloss")]
            assert sorted(set(steps)) == list(range(1, STEPS + 1)), steps
    assert {c.info.status for c in _runs(uri, name, "cell")} == {"FINISHED"}
    assert [s.info.status for s in _runs(uri, name, "study")] == ["FINISHED"]
    return trials


def _wait_until_mid_study(proc: subprocess.Popen, uri: str, name: str, timeout: float = 120) -> None:
    """Until a trial runs and another finished long enough ago for Tune to have saved its state since."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        runs = _runs(uri, name, "trial")
        saved_before = (time.time() - STATE_PERIOD_S - 1.5) * 1000
        if any(r.info.status == "RUNNING" for r in runs) and any(
            r.info.status == "FINISHED" and r.info.end_time < saved_before for r in runs
        ):
            return
        time.sleep(0.1)
    raise AssertionError("no moment with a trial running and another settled before the study ended")


def test_killed_driver_resumes_without_losing_or_repeating_trials(tmp_path):
    """Started with --set name=... --set search.num_samples=..., SIGKILLed mid-study, resumed by that name from
    another directory: every trial runs once, in one run, and no run is deleted."""
    uri = f"sqlite:///{tmp_path}/m.db"
    # more and longer trials than the other tests (random forests of 4 x 80 trees): on a quiet machine the study
    # ran out before one trial had settled long enough while another still ran
    path = _write(tmp_path, "file-name", uri, samples=FEWER, per_step=80)
    proc = _start(["run", str(path), "--set", "name=killed", "--set", f"search.num_samples={KILLED}"], tmp_path)
    _wait_for_lines(proc, "random_forest", 4)
    _wait_until_mid_study(proc, uri, "killed")
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    killed_at = time.time()
    before = {t.info.run_id: t for t in _runs(uri, "killed", "trial")}
    assert any(t.info.status == "RUNNING" for t in before.values()), "nothing was running at the kill"
    assert (tmp_path / "tune" / "killed").is_dir()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out = _finish(_start(["resume", "killed", "--uri", uri], elsewhere))
    assert code == 0, out[-3000:]
    trials = _assert_complete(uri, "killed", samples=KILLED)
    _assert_tune_storage_complete(tmp_path / "tune" / "killed", samples=KILLED)
    after = {t.info.run_id: t for t in trials}
    # No run of the killed driver was deleted. One is replaced only when Tune had not saved its trial and the
    # trial came again with another configuration: then it is kept, retired, saying why, and it had logged nothing.
    replaced = [MlflowClient(uri).get_run(run_id) for run_id in set(before) - set(after)]
    for r in replaced:
        why = f"{r.data.tags.get('tunelab.trial_number')}: {r.data.tags.get('tunelab.status')} {r.data.params}"
        assert r.info.lifecycle_stage == "active" and r.data.tags["tunelab.role"] == "retired_trial", why
        assert not r.data.metrics, why
        print("retired:", why)  # in the log: how often Tune's saved state and the store disagree
    # Trials that had finished before Tune last saved its state were not run again.
    settled = [
        r
        for r in before.values()
        if r.info.status == "FINISHED" and r.info.end_time / 1000 < killed_at - STATE_PERIOD_S - 0.5
    ]
    assert settled, "no trial had finished long enough before the kill"
    assert all(after[r.info.run_id].info.end_time == r.info.end_time for r in settled)


def test_sigterm_then_resume_from_another_directory_uses_the_study_as_it_ran(tmp_path):
    """Started with --set name=..., its Tune storage relative to where it started, stopped by SIGTERM (what `ray job
    stop` and Kubernetes send; tunelab turns it into Ctrl-C's SIGINT) at a checkpoint, cut-off runs marked KILLED:
    resumed by that name from elsewhere, it goes on from the storage it used; with that storage gone, it stops and
    deletes nothing."""
    uri = f"sqlite:///{tmp_path}/m.db"
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    path = _write(started, "orig", uri)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("storage_path")))
    proc = _start(["run", str(path), "--set", "name=moved"], started)
    _wait_for_lines(proc, "random_forest", 2)
    _wait_until_running(uri, "moved")
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc, timeout=120)
    assert code == 130 and "tunelab resume moved" in out, out[-3000:]
    trials = _runs(uri, "moved", "trial")
    before = {t.info.run_id for t in trials}
    assert "RUNNING" not in {t.info.status for t in trials}  # cut-off trials end KILLED, to be reopened
    assert sum(t.info.status == "FINISHED" for t in trials) < 2 * SAMPLES
    cells = {c.data.tags["tunelab.model"]: c.info.status for c in _runs(uri, "moved", "cell")}
    assert cells["random_forest"] == "KILLED"
    assert [s.info.status for s in _runs(uri, "moved", "study")] == ["KILLED"]
    storage = started / "tune_results" / "moved"
    assert storage.is_dir()

    storage.rename(tmp_path / "away")
    code, out = _finish(_start(["resume", "moved", "--uri", uri], elsewhere))
    assert code == 2 and f"{storage}, is not there" in out, out[-3000:]
    assert {t.info.run_id for t in _runs(uri, "moved", "trial")} == before  # nothing deleted

    (tmp_path / "away").rename(storage)
    code, out = _finish(_start(["resume", "moved", "--uri", uri], elsewhere))
    assert code == 0, out[-3000:]
    trials = _assert_complete(uri, "moved")
    assert before <= {t.info.run_id for t in trials}
    assert not (elsewhere / "tune_results").exists()
    _assert_tune_storage_complete(storage)


LOCK_S = 60


def test_a_store_locked_for_a_minute_mid_study_is_waited_out(tmp_path):
    """Another process holds the sqlite store's write lock for a minute while trials run: the writes wait (the store's
    deadline is ten minutes) and the study ends complete, with exit 0, having said so on the way."""
    import sqlite3

    uri = f"sqlite:///{tmp_path}/m.db"
    proc = _start(["run", str(_write(tmp_path, "locked", uri, FEWER))], tmp_path)
    _wait_until_running(uri, "locked")
    lock = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        time.sleep(LOCK_S)
        assert proc.poll() is None, "the study ended while its store was locked"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    code, out = _finish(proc)
    assert code == 0, out[-3000:]
    assert "unreachable (OperationalError)" in out and "reachable again" in out, out[-3000:]
    _assert_complete(uri, "locked", FEWER)


def test_lost_best_models_are_retrained(tmp_path):
    """The actor keeping each cell's best model is killed mid-study: the study finishes, its bests retrained."""
    uri = f"sqlite:///{tmp_path}/m.db"
    proc = _start(["run", str(_write(tmp_path, "keeperlost", uri, FEWER))], tmp_path)
    _wait_for_lines(proc, "random_forest", 2)
    killed = subprocess.run(["pkill", "-KILL", "-f", "ray::BestModels"])
    assert killed.returncode == 0, "no BestModels actor process to kill"
    code, out = _finish(proc)
    assert code == 0, out[-3000:]
    _assert_complete(uri, "keeperlost", FEWER)
    cells = {c.data.tags["tunelab.model"]: c.data.tags for c in _runs(uri, "keeperlost", "cell")}
    assert cells["random_forest"]["tunelab.best_model"] == "retrained"
    assert float(cells["random_forest"]["tunelab.best_steps"]) >= 1


def test_resume_with_nothing_to_resume_is_a_clear_error(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    path = _write(tmp_path, "fresh", uri, FEWER)
    code, out = _finish(_start(["run", str(path), "--resume"], tmp_path), timeout=120)
    assert code == 2 and "nothing to resume" in out, out


@pytest.fixture
def server(tmp_path):
    srv = TrackingServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_tracking_server_down_mid_study_then_back(tmp_path, server):
    path = _write(tmp_path, "outage", server.uri, FEWER)
    proc = _start(["run", str(path)], tmp_path)
    _wait_for_lines(proc, "random_forest", 2)
    server.stop()
    time.sleep(5)  # trials go on while the store is away
    server.start()
    code, out = _finish(proc)
    assert code == 0, out[-3000:]
    assert "unreachable" in out and "reachable again" in out
    _assert_complete(server.uri, "outage", FEWER)


#: a store away this long fails the writes that wait on it (exit 3 at the end; `tunelab sync` completes the store)
OUTAGE_ENV = {
    "TUNELAB_STORE_DEADLINE_S": "5",
    "TUNELAB_MODEL_LOG_DEADLINE_S": "60",
    "TUNELAB_FINAL_FLUSH_TIMEOUT_S": "3",
}


def test_store_away_at_the_cells_ends_is_exit_3_then_sync_completes_it(tmp_path, server):
    """Down from mid-study to the end, with best models to log and register: nothing hangs, the study ends with
    exit 3 naming `tunelab sync`, which completes the store once it is back."""
    path = _write(tmp_path, "synced", server.uri, FEWER, register=True)
    proc = _start(["run", str(path)], tmp_path, env=OUTAGE_ENV)
    _wait_for_lines(proc, "random_forest", 2)
    _wait_until_running(server.uri, "synced")
    server.stop()
    code, out = _finish(proc, timeout=400)
    assert code == 3 and "tunelab sync synced" in out, out[-3000:]
    assert "best model not logged" in out, out[-3000:]
    server.start()
    assert len(_runs(server.uri, "synced", "trial")) < 2 * FEWER or any(
        t.info.status == "RUNNING" for t in _runs(server.uri, "synced", "trial")
    )

    code, out = _finish(_start(["sync", "synced", "--uri", server.uri], tmp_path), timeout=300)
    assert code == 0, out[-3000:]
    trials = _runs(server.uri, "synced", "trial")
    assert len(trials) == 2 * FEWER and {t.info.status for t in trials} == {"FINISHED"}
    assert len({t.data.tags["tunelab.trial_id"] for t in trials}) == len(trials)


def _wait_until(condition, what: str, timeout: float = 180) -> None:
    """Until ``condition()`` holds in the store: a fault is injected on an observed event, not after a sleep."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"never observed: {what}")


def _wait_until_running(uri: str, name: str) -> None:
    _wait_until(lambda: any(r.info.status == "RUNNING" for r in _runs(uri, name, "trial")), "a trial run RUNNING")


def test_credentials_revoked_mid_study_end_with_exit_3_not_a_hang(tmp_path, monkeypatch):
    """A study logging as a user without admin rights (MLflow's basic auth), whose password is changed mid-study:
    every write after that is refused (401), counted, and the study, its best models to register, ends with exit 3
    instead of hanging. Up to then that user wrote the study's runs into an experiment it created."""
    server = TrackingServer(tmp_path, auth=True)
    server.start()
    try:
        server.admin("POST", "/api/2.0/mlflow/users/create", {"username": "jobs", "password": "first-password"})
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "jobs")  # this test reads the store as that user
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "first-password")
        path = _write(tmp_path, "revoked", server.uri, FEWER, register=True)
        proc = _start(["run", str(path)], tmp_path, env=OUTAGE_ENV)
        _wait_until_running(server.uri, "revoked")
        server.admin(
            "PATCH", "/api/2.0/mlflow/users/update-password", {"username": "jobs", "password": "second-password"}
        )
        code, out = _finish(proc, timeout=400)
        assert code == 3 and "tunelab sync revoked" in out, out[-3000:]
        assert "401" in out and "did not take" in out, out[-3000:]
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "second-password")
        experiment = MlflowClient(server.uri).get_experiment_by_name("revoked").experiment_id
        granted = server.admin("GET", "/api/3.0/mlflow/users/permissions/list?username=jobs", None)
        assert granted["is_admin"] is False
        assert (experiment, "MANAGE") in {(p["resource_pattern"], p["permission"]) for p in granted["permissions"]}
        trials = _runs(server.uri, "revoked", "trial")
        assert trials and (any(t.info.status == "RUNNING" for t in trials) or len(trials) < 2 * FEWER)
    finally:
        server.stop()
