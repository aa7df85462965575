"""The tracker against a real sqlite MLflow store (no Ray)."""

import sqlite3
import time

from tunelab.tracking import LINGER_S, Tracker


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
