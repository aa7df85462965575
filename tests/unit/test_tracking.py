"""The tracker against a real sqlite MLflow store (no Ray)."""

import sqlite3
import time

import pytest

from tunelab.tracking import LINGER_S, Tracker
from tunelab.tracking.client import ClientSink
from tunelab.tracking.sql import SqlSink


def test_sqlite_store_writes_ahead_and_batches_a_quick_trial(tmp_path):
    db = tmp_path / "m.db"
    tracker = Tracker(f"sqlite:///{db}")
    tracker.open("t")
    tracker.start_run("trial", "a trial", {"tunelab.role": "trial"}, params={"lr": 0.1})
    for step in (1, 2, 3):
        tracker.log_metrics("trial", {"val_logloss": 1.0 / step}, step=step)
    tracker.end_run("trial", "FINISHED", {"tunelab.status": "completed"})
    run_id = tracker.run_id("trial")
    time.sleep(2 * LINGER_S)
    assert tracker.close(timeout_s=30)

    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"} and run.data.tags["tunelab.status"] == "completed"
    history = tracker.client.get_metric_history(run_id, "val_logloss")
    assert sorted(m.step for m in history) == [1, 2, 3]


def _write_study_shaped_runs(tracker: Tracker) -> dict:
    """A cell run with two trials: tags overwritten, a metric logged twice, NaN and inf, a failure."""
    tracker.open("t")
    tracker.start_run("cell", "knn · iris", {"tunelab.role": "cell"}, params={"metric": "val_logloss"})
    for i, status in ((1, "FINISHED"), (2, "FAILED")):
        key = f"trial{i}"
        tracker.start_run(
            key,
            f"knn · iris · {i}",
            {"tunelab.role": "trial", "tunelab.status": "running"},
            parent="cell",
            params={"k": i, "weights": "distance"},
        )
        for step in (1, 2, 3):
            tracker.log_metrics(
                key,
                {"val_logloss": 1.0 / step + i, "val_accuracy": 0.5 + step / 10},
                step=step,
                timestamp_ms=1000 * step,
            )
        tracker.log_metrics(key, {"val_logloss": 1.0 / 3 + i}, step=3, timestamp_ms=3000)  # the same, again
        tracker.log_metrics(key, {"val_roc_auc": float("nan"), "val_r2": float("-inf")}, step=3, timestamp_ms=3000)
        tracker.end_run(key, status, {"tunelab.status": "completed" if status == "FINISHED" else "failed"})
    tracker.log_text("trial2", "Traceback ...", "error.txt")
    tracker.set_tags("cell", {"tunelab.best_trial": "trial1"})
    tracker.log_metrics("cell", {"best_val_logloss": 1.33}, step=0, timestamp_ms=5000)
    tracker.end_run("cell")
    ids = {k: tracker.run_id(k) for k in ("cell", "trial1", "trial2")}
    assert tracker.close(timeout_s=30)
    return ids


def _snapshot(client, run_id: str, ids: dict) -> dict:
    run = client.get_run(run_id)
    names = {v: k for k, v in ids.items()}
    tags = {k: names.get(v, v) for k, v in run.data.tags.items() if not k.startswith("mlflow.user")}
    return {
        "status": run.info.status,
        "name": run.info.run_name,
        "ended": run.info.end_time is not None,
        "stage": run.info.lifecycle_stage,
        "artifacts": run.info.artifact_uri.endswith(f"{run_id}/artifacts"),
        "params": run.data.params,
        "tags": tags,
        "latest": {k: repr(v) for k, v in run.data.metrics.items()},
        "history": {
            k: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics
        },
        "files": sorted(f.path for f in client.list_artifacts(run_id)),
    }


def test_batched_sql_writes_store_what_mlflows_own_calls_store(tmp_path):
    """The one-transaction writer and MLflow's client calls leave the same runs behind."""
    batched, reference = Tracker(f"sqlite:///{tmp_path}/a.db"), Tracker(f"sqlite:///{tmp_path}/b.db")
    assert isinstance(batched.sink, SqlSink)
    reference.sink = ClientSink(reference.client, reference.sink.call)  # create_run / log_batch / set_terminated
    ids_a, ids_b = _write_study_shaped_runs(batched), _write_study_shaped_runs(reference)
    for key in ("cell", "trial1", "trial2"):
        a, b = _snapshot(batched.client, ids_a[key], ids_a), _snapshot(reference.client, ids_b[key], ids_b)
        assert a == b, key
    trial = _snapshot(batched.client, ids_a["trial1"], ids_a)
    assert trial["history"]["val_logloss"] == [(1, 1000, "2.0"), (2, 2000, "1.5"), (3, 3000, repr(1 / 3 + 1))]
    assert trial["tags"]["tunelab.status"] == "completed" and trial["tags"]["mlflow.parentRunId"] == "cell"
    found = batched.client.search_runs(
        [batched.experiment_id],
        "tags.`tunelab.role` = 'trial' and metrics.val_logloss < 1.5 and attributes.status = 'FINISHED'",
    )
    assert [r.info.run_id for r in found] == [ids_a["trial1"]]


def test_either_sink_counts_what_it_drops_once_the_store_is_given_up(tmp_path):
    """After close() stopped waiting for the store, what is left is counted as lost (for `tunelab sync`)."""
    for fast in (True, False):
        tracker = Tracker(f"sqlite:///{tmp_path}/{fast}.db")
        if not fast:
            tracker.sink = ClientSink(tracker.client, tracker.sink.call)
        tracker.open("t")
        tracker.start_run("trial", "a trial", {"tunelab.role": "trial"}, params={"lr": 0.1})
        tracker.flush()
        tracker.sink.call.abandoned = True
        tracker.log_metrics("trial", {"val_logloss": 0.5}, step=1)
        tracker.end_run("trial", "FINISHED", {"tunelab.status": "completed"})
        assert not tracker.close(timeout_s=30)
        assert tracker.lost.count == 3, fast  # the metric, the tag, the run's end
        assert tracker.client.get_run(tracker._runs["trial"]).info.status == "RUNNING"


def test_a_locked_database_on_the_sql_path_is_waited_out(monkeypatch):
    """sqlalchemy's OperationalError (a sqlite locked by another process, a PostgreSQL connection reset) is retried
    like an unreachable server, not dropped."""
    import sqlalchemy.exc

    from tunelab.tracking import retry

    monkeypatch.setattr(retry, "RETRY_FIRST_S", 0.01)
    attempts = []

    def write():
        attempts.append(1)
        if len(attempts) < 3:
            raise sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
        return "written"

    assert retry.Retrying("sqlite:///x.db")(write) == "written" and len(attempts) == 3
    assert not retry.transient(sqlalchemy.exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE")))
    no_table = sqlalchemy.exc.OperationalError("SELECT ...", {}, sqlite3.OperationalError("no such table: runs"))
    assert not retry.transient(no_table)  # waiting cures nothing there


def test_a_refusal_naming_a_run_whose_id_holds_503_is_not_taken_for_an_overloaded_server():
    """A 5xx status is transient; the same digits inside a run id are not (the write was retried to the deadline)."""
    from mlflow.exceptions import MlflowException

    from tunelab.tracking import retry

    deleted = MlflowException(
        "The run eaa50397a7a94d1aa3cf344c14d70086 must be in the 'active' state. Current state is deleted."
    )
    assert not retry.transient(deleted)
    for status in (502, 503, 504):
        assert retry.transient(
            MlflowException(f"API request to /api/2.0/mlflow/runs/log-batch failed with error code {status} != 200")
        )
    assert not retry.transient(MlflowException("failed with error code 500 != 200"))


def test_writes_the_store_refuses_are_counted_and_the_other_runs_land(tmp_path, capsys):
    """A refused write (here: a param logged again with another value) is counted and named, never dropped unseen;
    the writes of the other runs in its batch land, on either sink."""
    for fast in (True, False):
        tracker = Tracker(f"sqlite:///{tmp_path}/{fast}.db")
        if not fast:
            tracker.sink = ClientSink(tracker.client, tracker.sink.call)
        tracker.open("t")
        for key in ("a", "b"):
            tracker.start_run(key, key, {"tunelab.role": "trial"}, params={"lr": 0.1})
        tracker.flush()
        tracker.log_params("a", {"lr": "0.2"})
        tracker.log_metrics("b", {"val_logloss": 0.5}, step=1)
        tracker.end_run("b", "FINISHED")
        tracker.log_text("nobody", "a run never started", "x.txt")  # an op that fails on the writer thread
        assert not tracker.close(timeout_s=30)
        assert tracker.lost.count == 2, fast  # the refused param, the failed op
        assert "did not take a write" in capsys.readouterr().err
        b = tracker.client.get_run(tracker._runs["b"])
        assert b.info.status == "FINISHED" and b.data.metrics == {"val_logloss": 0.5}


def test_an_unreachable_store_is_retried_up_to_the_deadline_then_the_call_fails(monkeypatch):
    from requests.exceptions import ConnectionError

    from tunelab.tracking import retry

    monkeypatch.setattr(retry, "RETRY_FIRST_S", 0.05)
    attempts = []

    def down():
        attempts.append(time.monotonic())
        raise ConnectionError("Connection refused")

    started, retrying = time.monotonic(), retry.Retrying("http://127.0.0.1:1", deadline_s=0.5)
    with pytest.raises(ConnectionError):
        retrying(down)
    assert len(attempts) > 2 and 0.5 <= time.monotonic() - started < 3
    attempts.clear()
    with pytest.raises(ConnectionError):  # the store is still down: the next call is not held as long again
        retrying(down)
    assert len(attempts) == 1
    assert retrying(lambda: "back") == "back"
    with pytest.raises(ConnectionError):  # back, then down again: a new outage gets its own deadline
        retrying(down)
    assert len(attempts) > 2
