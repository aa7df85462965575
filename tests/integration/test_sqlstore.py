"""The SQL batch writer against real stores that MLflow made: sqlite, and PostgreSQL (one server for the module).

Every case runs on both, each on a fresh copy of a store whose schema MLflow created (its migrations take
seconds; a copy takes a fraction of one). The client's own writes, in the same store, are the reference.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.tracking import MlflowClient

from scripts.cluster import HOST, PG_USER, _as_pg_user, _pg_bin, free_port
from tunelab.tracking.sql import MAX_FLOAT, SCHEMA_REVISION, NewRun, RunEnd, SqlBatchWriter, new_run_id, schema_revision

pytestmark = pytest.mark.integration

DB_ROLE = "mlflow"
START_MS, END_MS = 1_700_000_000_000, 1_700_000_060_000
_copies = itertools.count()


@dataclass
class Postgres:
    admin: "psycopg2.extensions.connection"  # the superuser, over the socket in the data directory
    url: str  # the MLflow role over TCP on loopback, without a database

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} OWNER {DB_ROLE}" + (f" TEMPLATE {template}" if template else ""))
        return f"{self.url}/{name}"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of this module's own, listening on 127.0.0.1 only (run as PG_USER when we are root)."""
    root = Path(tempfile.mkdtemp(prefix="tunelab-pg-"))
    root.chmod(0o711)  # PostgreSQL's user must reach its data directory inside
    data, port, password = root / "pg", free_port(), secrets.token_hex(16)
    pg_ctl, admin = _pg_bin("pg_ctl"), None
    try:
        data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(data, PG_USER, PG_USER)
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            _as_pg_user(
                [
                    pg_ctl,
                    "-D",
                    str(data),
                    "-l",
                    str(data / "server.log"),
                    "-w",
                    "-o",
                    f"-k {data} -p {port} -h {HOST} -c fsync=off",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        admin = psycopg2.connect(host=str(data), port=port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD %s", (password,))
        yield Postgres(admin, f"postgresql+psycopg2://{DB_ROLE}:{password}@{HOST}:{port}")
    finally:
        if admin is not None:
            admin.close()
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_pg_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(root, ignore_errors=True)


def _made_by_mlflow(uri: str) -> None:
    client = MlflowClient(uri)
    client.search_experiments(max_results=1)  # the store: MLflow creates its schema
    client._tracking_client.store.engine.dispose()  # no connection left: it is copied next


@pytest.fixture(scope="module")
def templates(request, tmp_path_factory):
    """backend -> a function that returns the URI of a fresh copy of a store that MLflow made."""
    root = tmp_path_factory.mktemp("stores")
    made: dict = {}

    def sqlite_copy() -> str:
        if "sqlite" not in made:
            made["sqlite"] = root / "template.db"
            _made_by_mlflow(f"sqlite:///{made['sqlite']}")
        path = root / f"store{next(_copies)}.db"
        with sqlite3.connect(made["sqlite"]) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"

    def postgres_copy() -> str:
        pg: Postgres = request.getfixturevalue("postgres")
        if "postgresql" not in made:
            made["postgresql"] = pg.create("template_store")
            _made_by_mlflow(made["postgresql"])
        return pg.create(f"store{next(_copies)}", template="template_store")

    return {"sqlite": sqlite_copy, "postgresql": postgres_copy}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request, templates, monkeypatch) -> str:
    monkeypatch.delenv("TUNELAB_COMPAT", raising=False)  # CI's run with it off: the writer itself is tested here
    return templates[request.param]()


@dataclass
class Store:
    client: MlflowClient
    writer: SqlBatchWriter
    experiment_id: str

    def run(self, name: str = "run", **kinds) -> str:
        """A run created by the writer, with ``params``/``tags`` (dicts) and ``metrics`` (list)."""
        run_id = new_run_id()
        self.writer.write([(run_id, e) for e in _entities(name, **kinds)])
        return run_id

    def state(self) -> list[dict]:
        """Everything the experiment holds, deleted runs included."""
        runs = self.client.search_runs([self.experiment_id], run_view_type=ViewType.ALL, order_by=["run_id"])
        return [_snapshot(self.client, r.info.run_id) for r in runs]


@pytest.fixture
def store(store_uri, tmp_path) -> Store:
    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    writer = SqlBatchWriter.for_client(client)
    assert writer is not None
    writer.use_experiment(experiment_id, client.get_experiment(experiment_id).artifact_location)
    return Store(client, writer, experiment_id)


def _entities(name: str, params: dict | None = None, tags: dict | None = None, metrics: list | None = None) -> list:
    return [
        NewRun(name, "alice", START_MS),
        *(Param(k, v) for k, v in (params or {}).items()),
        *(RunTag(k, v) for k, v in (tags or {}).items()),
        *(metrics or []),
    ]


def _snapshot(client: MlflowClient, run_id: str, names: dict | None = None) -> dict:
    """A run as MLflow's client reads it; ``names``: run id -> name, for run ids in tag values."""
    run, names = client.get_run(run_id), names or {}
    info = run.info
    return {
        "name": info.run_name,
        "status": info.status,
        "start": info.start_time,
        "end": info.end_time,
        "user": info.user_id,
        "stage": info.lifecycle_stage,
        "experiment": info.experiment_id,
        "artifacts": info.artifact_uri.replace(run_id, "<run id>"),
        "params": run.data.params,
        "tags": {k: names.get(v, v) for k, v in run.data.tags.items()},
        "latest": {m.key: (m.step, m.timestamp, repr(m.value)) for m in run.data._metric_objs},  # with step, time
        "history": {
            k: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics
        },
    }


def _client_refusal(call) -> MlflowException:
    with pytest.raises(MlflowException) as refused:
        call()
    return refused.value


# --- when it is used ------------------------------------------------------------------------------
def test_the_writer_is_used_on_the_schema_it_was_written_for(store_uri):
    client = MlflowClient(store_uri)
    writer = SqlBatchWriter.for_client(client)
    assert writer is not None
    assert SCHEMA_REVISION == _get_latest_schema_revision() == schema_revision(writer.engine)


def test_not_used_when_compat_is_switched_off(store_uri, monkeypatch):
    monkeypatch.setenv("TUNELAB_COMPAT", "off")
    assert SqlBatchWriter.for_client(MlflowClient(store_uri)) is None


def test_not_used_on_another_schema_revision(store_uri, caplog):
    client = MlflowClient(store_uri)
    client.search_experiments(max_results=1)  # MLflow opens the store (it checks its own revision then)
    with client._tracking_client.store.engine.begin() as conn:  # the store is this test's own copy
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'a0b1c2d3e4f5'"))
    with caplog.at_level(logging.WARNING, logger="tunelab"):
        assert SqlBatchWriter.for_client(client) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "tunelab"]
    assert len(warnings) == 1 and "a0b1c2d3e4f5" in warnings[0] and SCHEMA_REVISION in warnings[0]


# --- what it writes -------------------------------------------------------------------------------
PARENT_PARAMS, CHILD_PARAMS = {"metric": "val_loss"}, {"lr": "0.1", "depth": "3"}
FIRST_METRICS = [
    Metric("loss", 0.9, 1000, 1),
    Metric("loss", 0.5, 3000, 3),
    Metric("loss", 0.7, 2000, 2),
    Metric("loss", 0.5, 3000, 3),  # again: stored once
    Metric("score", 2.0, 4000, 2),
    Metric("score", 1.0, 5000, 2),  # same step: the later one is latest
    Metric("acc", float("nan"), 1000, 1),
    Metric("r2", float("-inf"), 1000, 1),
    Metric("big", float("inf"), 1000, 1),
]
SECOND_METRICS = [
    Metric("loss", 0.1, 6000, 2),  # an earlier step, logged later: not the latest
    Metric("score", 3.0, 5000, 2),  # same step and time, larger value: the latest
    Metric("acc", 0.8, 2000, 2),
    Metric("r2", 0.3, 900, 0),
]


def _client_runs(client: MlflowClient, experiment_id: str) -> dict:
    """The reference: the same runs written by MLflow's client, call by call."""

    def create(name: str, tags: dict) -> str:
        return client.create_run(experiment_id, START_MS, {"mlflow.user": "alice", **tags}, name).info.run_id

    parent = create("parent", {"tunelab.role": "cell"})
    child = create("child", {"tunelab.role": "trial", "mlflow.parentRunId": parent, "tunelab.status": "running"})
    client.log_batch(parent, params=[Param(k, v) for k, v in PARENT_PARAMS.items()])
    client.log_batch(child, metrics=FIRST_METRICS, params=[Param(k, v) for k, v in CHILD_PARAMS.items()])
    client.log_batch(
        child,
        metrics=SECOND_METRICS,
        params=[Param("lr", "0.1")],  # the same value again
        tags=[RunTag("tunelab.status", "completed")],
    )
    client.set_terminated(child, "FINISHED", END_MS)
    client.set_terminated(parent, "FAILED", END_MS)
    return {parent: "parent", child: "child"}


def _writer_runs(store: Store) -> dict:
    parent, child = new_run_id(), new_run_id()
    store.writer.write(
        [
            (parent, NewRun("parent", "alice", START_MS)),
            (parent, RunTag("mlflow.user", "alice")),
            (parent, RunTag("tunelab.role", "cell")),
            *((parent, Param(k, v)) for k, v in PARENT_PARAMS.items()),
            (child, NewRun("child", "alice", START_MS)),
            (child, RunTag("mlflow.user", "alice")),
            *(
                (child, RunTag(k, v))
                for k, v in {"tunelab.role": "trial", "mlflow.parentRunId": parent, "tunelab.status": "running"}.items()
            ),
            *((child, Param(k, v)) for k, v in CHILD_PARAMS.items()),
            *((child, m) for m in FIRST_METRICS),
        ]
    )
    store.writer.write(
        [
            *((child, m) for m in SECOND_METRICS),
            (child, Param("lr", "0.1")),
            (child, RunTag("tunelab.status", "completed")),
            (child, RunEnd("FINISHED", END_MS)),
            (parent, RunEnd("FAILED", END_MS)),
        ]
    )
    return {parent: "parent", child: "child"}


def test_a_batch_reads_back_as_mlflows_own_writes(store):
    ours, theirs = _writer_runs(store), _client_runs(store.client, store.experiment_id)
    mine = {name: _snapshot(store.client, run_id, ours) for run_id, name in ours.items()}
    reference = {name: _snapshot(store.client, run_id, theirs) for run_id, name in theirs.items()}
    assert mine == reference
    child = mine["child"]
    assert child["latest"] == {
        "loss": (3, 3000, "0.5"),
        "score": (2, 5000, "3.0"),
        "acc": (2, 2000, "0.8"),
        "r2": (1, 1000, repr(-MAX_FLOAT)),
        "big": (1, 1000, repr(MAX_FLOAT)),
    }
    assert child["history"]["loss"] == [(1, 1000, "0.9"), (2, 2000, "0.7"), (2, 6000, "0.1"), (3, 3000, "0.5")]
    assert child["tags"]["mlflow.parentRunId"] == "parent" and child["tags"]["mlflow.runName"] == "child"
    assert (child["status"], child["end"], mine["parent"]["status"]) == ("FINISHED", END_MS, "FAILED")


# --- what it refuses, writing nothing of the batch ------------------------------------------------
def test_a_param_relogged_with_another_value_is_refused_and_nothing_of_the_batch_lands(store):
    run_id = store.run(params={"lr": "0.1"}, tags={"t": "a"}, metrics=[Metric("loss", 1.0, 1000, 1)])
    before = store.state()
    batch = [
        (new_run_id(), NewRun("other", "alice", START_MS)),
        (run_id, RunTag("t", "b")),
        (run_id, Metric("loss", 0.5, 2000, 2)),
        (run_id, Param("lr", "0.1")),
        (run_id, Param("lr", "0.2")),
        (run_id, RunEnd("FINISHED", END_MS)),
    ]
    with pytest.raises(MlflowException, match="Changing param values is not allowed") as refused:
        store.writer.write(batch)
    client = _client_refusal(lambda: store.client.log_batch(run_id, params=[Param("lr", "0.2")]))
    assert refused.value.error_code == client.error_code == "INVALID_PARAMETER_VALUE"
    assert "'old_value': '0.1', 'new_value': '0.2'" in str(refused.value) and run_id in str(refused.value)
    assert store.state() == before

    fresh = new_run_id()  # two values in one batch, for a run of the batch
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        store.writer.write(
            [(fresh, NewRun("x", "alice", START_MS)), (fresh, Param("a", "1")), (fresh, Param("a", "2"))]
        )
    assert store.state() == before

    store.writer.write([(run_id, Param("lr", "0.1")), (run_id, RunTag("t", "c"))])  # the same value: as MLflow
    assert store.client.get_run(run_id).data.tags["t"] == "c"


@pytest.mark.parametrize(
    "entity",
    [RunTag("t", "b"), Param("p", "1"), Metric("loss", 0.5, 2000, 2), RunEnd("FINISHED", END_MS)],
    ids=lambda e: type(e).__name__,
)
def test_writes_to_a_deleted_run_are_refused(store, entity):
    deleted, active = store.run("deleted"), store.run("active")
    store.client.delete_run(deleted)
    before = store.state()
    with pytest.raises(MlflowException, match="must be in the 'active' state") as refused:
        store.writer.write(
            [(new_run_id(), NewRun("other", "alice", START_MS)), (active, RunTag("t", "a")), (deleted, entity)]
        )
    client = _client_refusal(lambda: store.client.log_batch(deleted, tags=[RunTag("t", "b")]))
    assert (str(refused.value), refused.value.error_code) == (str(client), client.error_code)
    assert store.state() == before

    missing = new_run_id()
    with pytest.raises(MlflowException, match=f"Run with id={missing} not found") as refused:
        store.writer.write([(active, RunTag("t", "a")), (missing, entity)])
    client = _client_refusal(lambda: store.client.log_batch(missing, tags=[RunTag("t", "b")]))
    assert (str(refused.value), refused.value.error_code) == (str(client), client.error_code)
    assert store.state() == before


LONG_KEY = "k" * 251  # MLflow: MAX_ENTITY_KEY_LENGTH = 250


@pytest.mark.parametrize(
    "entity",
    [Param(LONG_KEY, "1"), RunTag(LONG_KEY, "1"), Metric(LONG_KEY, 1.0, 1000, 1)],
    ids=lambda e: type(e).__name__,
)
def test_an_over_long_key_is_refused_like_the_client_refuses_it(store, entity):
    run_id = store.run()
    before = store.state()
    with pytest.raises(MlflowException, match="exceeds the maximum length of 250 characters") as refused:
        store.writer.write(
            [(new_run_id(), NewRun("other", "alice", START_MS)), (run_id, RunTag("t", "a")), (run_id, entity)]
        )
    kind = {Param: "params", RunTag: "tags", Metric: "metrics"}[type(entity)]
    client = _client_refusal(lambda: store.client.log_batch(run_id, **{kind: [entity]}))
    assert "exceeds the maximum length of 250 characters" in str(client)
    assert refused.value.error_code == client.error_code == "INVALID_PARAMETER_VALUE"
    assert store.state() == before


def test_over_long_values_are_truncated_or_refused_as_the_client_does(store, monkeypatch):
    """MLflow truncates param values to 6000 characters, tag values to 8000 (with a warning), unless
    MLFLOW_TRUNCATE_LONG_VALUES is false: then it refuses them."""
    long_param, long_tag = "p" * 6001, "t" * 8001
    ours = store.run("ours", params={"p": long_param}, tags={"t": long_tag})
    theirs = store.client.create_run(store.experiment_id, START_MS, {"mlflow.user": "alice"}, "theirs").info.run_id
    store.client.log_batch(theirs, params=[Param("p", long_param)], tags=[RunTag("t", long_tag)])
    mine, reference = store.client.get_run(ours).data, store.client.get_run(theirs).data
    assert mine.params == reference.params == {"p": long_param[:6000]}
    assert mine.tags["t"] == reference.tags["t"] == long_tag[:8000]

    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    before = store.state()
    for entity, kind in ((Param("q", long_param), "params"), (RunTag("u", long_tag), "tags")):
        with pytest.raises(MlflowException, match="exceeds the maximum length") as refused:
            store.writer.write([(new_run_id(), NewRun("other", "alice", START_MS)), (ours, entity)])
        client = _client_refusal(lambda: store.client.log_batch(theirs, **{kind: [entity]}))
        assert refused.value.error_code == client.error_code == "INVALID_PARAMETER_VALUE"
    assert store.state() == before


def test_a_tracker_keeps_the_other_runs_writes_when_one_run_is_refused(store_uri, capsys):
    """A run deleted mid-study (in the UI, say) costs its own writes only, not those batched beside them."""
    from tunelab.tracking import Tracker
    from tunelab.tracking.sql import SqlSink

    tracker = Tracker(store_uri)
    tracker.open("t")
    assert isinstance(tracker.sink, SqlSink)
    for key in ("kept", "deleted"):
        tracker.start_run(key, key, {})
    tracker.flush()
    kept, deleted = tracker.run_id("kept"), tracker.run_id("deleted")
    tracker.client.delete_run(deleted)
    for key in ("kept", "deleted"):
        tracker.log_metrics(key, {"loss": 0.5}, step=1)
    tracker.flush()
    assert not tracker.close(timeout_s=30)  # what the store refused is counted, not dropped unseen
    assert tracker.lost.count == 1  # the deleted run's metric
    err = capsys.readouterr().err
    assert f"tunelab: MLflow refused the writes to run {deleted}" in err and "did not take a write" in err
    assert tracker.client.get_run(kept).data.metrics == {"loss": 0.5}
    assert tracker.client.get_run(deleted).data.metrics == {}
