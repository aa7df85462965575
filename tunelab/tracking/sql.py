"""Batched writes into an SQL-backed MLflow store (sqlite, PostgreSQL): many runs, one transaction.

MLflow's own client spends three store transactions per short trial (``create_run``, ``log_batch``,
``set_terminated``), each with its queries and ORM objects: ~16 ms of driver CPU per trial, taken
from Ray Tune's event loop. This writer puts everything one flush holds (new runs, params, tags,
metrics, latest metrics, run ends) into the store's own tables in one transaction with bulk
statements, with MLflow's semantics: a tag is overwritten, a metric logged twice (same key, step,
timestamp and value) is stored once, ``latest_metrics`` keeps the highest (step, timestamp, value).
Tables and columns are MLflow's own ORM definitions. Stores behind an HTTP server are not touched.

It refuses what MLflow's store refuses, with MLflow's exceptions and messages, and then writes nothing
of the batch: each entity goes through MLflow's own validators (names, lengths: an over-long value is
truncated where MLflow truncates it), and the store is read once per batch for each of: the runs'
lifecycle stages (missing or deleted runs; rows locked on PostgreSQL until commit), the params already
stored (a param's value never changes), the experiment's stage (only when the batch creates runs).

Being a reach into MLflow's internals, it is used only where ``tunelab.compat`` allows it (the
MLflow it was written for, ``TUNELAB_COMPAT`` not off) and the store's schema is the one it was
written for (``SCHEMA_REVISION``). MLflow opens only stores at its own head revision, so this holds
on the MLflow of ``compat.WRITTEN_FOR``; it is what still holds when that is bumped for another reach
and this writer's tables were not looked at again: the study then goes through the client.
``SqlSink`` is this writer behind the Tracker's sink interface (``tracking.sink``).
"""

from __future__ import annotations

import logging
import math
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import sqlalchemy as sa
from mlflow.entities import LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_metric, _validate_param, _validate_tag

from tunelab import compat
from tunelab.tracking.retry import Retrying
from tunelab.tracking.schema import USER
from tunelab.tracking.sink import NewRun, Refused, RunEnd, Sink, tag_entities

log = logging.getLogger("tunelab")

RUNS, TAGS, PARAMS = SqlRun.__table__, SqlTag.__table__, SqlParam.__table__
METRICS, LATEST, EXPERIMENTS = SqlMetric.__table__, SqlLatestMetric.__table__, SqlExperiment.__table__
MAX_FLOAT = 1.7976931348623157e308  # what MLflow stores for an infinite metric
#: the store schema (alembic revision) whose tables this writer knows: the head of MLflow 3.17.2's migrations
SCHEMA_REVISION = "dc11669786a5"


@dataclass
class _Batch:
    """One write's rows, validated, keyed as the store's primary keys (later entities win, as in MLflow)."""

    runs: dict[str, dict] = field(default_factory=dict)
    ends: list[dict] = field(default_factory=list)
    tags: dict[tuple[str, str], dict] = field(default_factory=dict)
    params: dict[tuple[str, str], dict] = field(default_factory=dict)
    metrics: dict[tuple, dict] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # runs written to besides being created


def _dialect_insert(dialect: str) -> Optional[Callable[[sa.Table], Any]]:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


def new_run_id() -> str:
    return uuid.uuid4().hex  # MLflow's own run ids


def schema_revision(engine: sa.Engine) -> Optional[str]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _sqlite_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """A sqlite store's connections: write-ahead log, fsync at checkpoints rather than at every commit.

    A trial's writes cost about half as much, and the MLflow UI reads while a study writes. A power
    cut may lose the last moments of logging, never the store: `tunelab sync` rewrites them from Tune.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SqlBatchWriter:
    """Writes (run id, entity) pairs into the store's tables; ``for_client`` says whether it can."""

    def __init__(self, store: SqlAlchemyStore, insert: Callable[[sa.Table], Any]):
        self.engine, self._insert = store.engine, insert
        self.experiment_id = ""
        self.artifact_root = ""

    @classmethod
    def for_client(cls, client: Any) -> Optional["SqlBatchWriter"]:
        """The writer for ``client``'s store, or None: write through the client."""
        store = compat.mlflow_sql_store(client)
        insert = _dialect_insert(store.engine.dialect.name) if store is not None else None
        if insert is None:
            return None
        revision = schema_revision(store.engine)
        if revision != SCHEMA_REVISION:
            log.warning(
                "tunelab: the MLflow store's schema is at revision %s, not the %s that the SQL batch writer "
                "was written for; using the public path (slower)",
                revision,
                SCHEMA_REVISION,
            )
            return None
        if store.engine.dialect.name == "sqlite":  # this store's engine only, not every engine of the process
            sa.event.listen(store.engine, "connect", _sqlite_wal)
            store.engine.dispose()  # connections opened before the listener reconnect with it
        return cls(store, insert)

    def use_experiment(self, experiment_id: str, artifact_location: str) -> None:
        self.experiment_id, self.artifact_root = experiment_id, artifact_location

    def write(self, items: list[tuple[str, Any]]) -> None:
        """One transaction for everything in ``items``; all of it lands or none of it does.

        Raises MlflowException where MLflow would refuse an entity (then nothing is written).
        """
        batch = self._collect(items)
        with self.engine.begin() as conn:
            params = self._check(conn, batch)
            if batch.runs:
                conn.execute(RUNS.insert(), list(batch.runs.values()))
            if batch.tags:  # set_tag overwrites: drop what is there, then insert
                conn.execute(
                    TAGS.delete().where(TAGS.c.run_uuid == sa.bindparam("r"), TAGS.c.key == sa.bindparam("k")),
                    [{"r": r, "k": k} for r, k in batch.tags],
                )
                conn.execute(TAGS.insert(), list(batch.tags.values()))
            if params:  # a concurrent insert of the same key fails the batch rather than go unnoticed
                conn.execute(PARAMS.insert(), params)
            if batch.metrics:
                conn.execute(self._insert(METRICS).on_conflict_do_nothing(), list(batch.metrics.values()))
                self._update_latest(conn, batch.metrics.values())
            if batch.ends:
                conn.execute(
                    RUNS.update()
                    .where(RUNS.c.run_uuid == sa.bindparam("r"))
                    .values(status=sa.bindparam("status"), end_time=sa.bindparam("end_time")),
                    batch.ends,
                )

    def _collect(self, items: list[tuple[str, Any]]) -> _Batch:
        """The rows of ``items``, each entity checked by MLflow's own validators (as its store does)."""
        b = _Batch()
        for run_id, e in items:
            if isinstance(e, NewRun):
                b.runs[run_id] = self._run_row(run_id, e)
                b.tags.setdefault((run_id, MLFLOW_RUN_NAME), _tag_row(run_id, MLFLOW_RUN_NAME, e.name))  # create_run's
                continue
            b.touched.add(run_id)
            if isinstance(e, RunEnd):
                b.ends.append({"r": run_id, "status": e.status, "end_time": e.end_ms})
            elif isinstance(e, RunTag):
                tag = _validate_tag(e.key, e.value)
                b.tags[(run_id, tag.key)] = _tag_row(run_id, tag.key, tag.value)
            elif isinstance(e, Param):
                _add_param(b.params, run_id, _validate_param(e.key, e.value))
            elif isinstance(e, Metric):
                _validate_metric(e.key, e.value, e.timestamp, e.step)
                is_nan, value = _sanitize(e.value)
                row = {
                    "run_uuid": run_id,
                    "key": e.key,
                    "value": value,
                    "timestamp": e.timestamp,
                    "step": e.step,
                    "is_nan": is_nan,
                }
                b.metrics[(run_id, e.key, e.timestamp, e.step, value, is_nan)] = row
            else:
                raise TypeError(f"not an entity the SQL batch writer writes: {e!r}")
        return b

    def _check(self, conn: Any, b: _Batch) -> list[dict]:
        """Refuse the batch where the store's state makes MLflow refuse it; the param rows still to insert."""
        if b.runs:
            self._check_experiment(conn)
        _check_runs(conn, b.touched - b.runs.keys())
        return _new_params(conn, b.params, b.runs.keys())

    def _check_experiment(self, conn: Any) -> None:
        stage = conn.execute(
            sa.select(EXPERIMENTS.c.lifecycle_stage).where(EXPERIMENTS.c.experiment_id == int(self.experiment_id))
        ).scalar()
        if stage is None:
            raise MlflowException(f"No Experiment with id={self.experiment_id} exists", RESOURCE_DOES_NOT_EXIST)
        if stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The experiment {self.experiment_id} must be in the 'active' state. Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )

    def _run_row(self, run_id: str, e: NewRun) -> dict:
        return {
            "run_uuid": run_id,
            "name": e.name,
            "source_type": "UNKNOWN",
            "source_name": "",
            "entry_point_name": "",
            "user_id": e.user,
            "status": "RUNNING",
            "start_time": e.start_ms,
            "end_time": None,
            "deleted_time": None,
            "source_version": "",
            "lifecycle_stage": "active",
            "artifact_uri": append_to_uri_path(self.artifact_root, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME),
            "experiment_id": int(self.experiment_id),
        }

    def _update_latest(self, conn: Any, rows: Any) -> None:
        """Per (run, key) the newest of this batch, upserted where it is newer than the stored one."""
        newest: dict[tuple[str, str], dict] = {}
        for row in rows:
            k = (row["run_uuid"], row["key"])
            if k not in newest or _order(row) > _order(newest[k]):
                newest[k] = row
        stmt = self._insert(LATEST)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LATEST.c.key, LATEST.c.run_uuid],
            set_={c: stmt.excluded[c] for c in ("value", "timestamp", "step", "is_nan")},
            where=sa.tuple_(stmt.excluded.step, stmt.excluded.timestamp, stmt.excluded.value)
            > sa.tuple_(LATEST.c.step, LATEST.c.timestamp, LATEST.c.value),
        )
        conn.execute(stmt, list(newest.values()))


def _check_runs(conn: Any, run_ids: set[str]) -> None:
    """MLflow writes only to active runs; the rows stay locked until commit (PostgreSQL: no delete slips in)."""
    if not run_ids:
        return
    stages = dict(
        conn.execute(
            sa.select(RUNS.c.run_uuid, RUNS.c.lifecycle_stage)
            .where(RUNS.c.run_uuid.in_(sorted(run_ids)))
            .with_for_update()
        ).all()
    )
    for run_id in sorted(run_ids):
        if run_id not in stages:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        if stages[run_id] != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stages[run_id]}.",
                INVALID_PARAMETER_VALUE,
            )


def _new_params(conn: Any, params: dict[tuple[str, str], dict], new_runs: Iterable[str]) -> list[dict]:
    """The params not stored yet; one stored with another value refuses the batch (MLflow: params never change)."""
    run_ids = {r for r, _ in params} - set(new_runs)
    if not run_ids:
        return list(params.values())
    stored = {
        (r, k): v
        for r, k, v in conn.execute(
            sa.select(PARAMS.c.run_uuid, PARAMS.c.key, PARAMS.c.value).where(
                PARAMS.c.run_uuid.in_(sorted(run_ids)), PARAMS.c.key.in_(sorted({k for _, k in params}))
            )
        )
    }
    changed: dict[str, list[dict]] = {}
    for (run_id, key), row in params.items():
        if (run_id, key) in stored and stored[(run_id, key)] != row["value"]:
            changed.setdefault(run_id, []).append(
                {"key": key, "old_value": stored[(run_id, key)], "new_value": row["value"]}
            )
    if changed:
        run_id = min(changed)
        raise _param_changed(run_id, changed[run_id])
    return [row for k, row in params.items() if k not in stored]


def _add_param(params: dict[tuple[str, str], dict], run_id: str, p: Param) -> None:
    """The same param twice in one batch is one row; with two values it is refused."""
    row = params.setdefault((run_id, p.key), {"run_uuid": run_id, "key": p.key, "value": p.value})
    if row["value"] != p.value:
        raise _param_changed(run_id, [{"key": p.key, "old_value": row["value"], "new_value": p.value}])


def _param_changed(run_id: str, changed: list[dict]) -> MlflowException:
    return MlflowException(
        f"Changing param values is not allowed. Params were already logged='{changed}' for run ID='{run_id}'.",
        INVALID_PARAMETER_VALUE,
    )  # MLflow's log_batch's words


def _tag_row(run_id: str, key: str, value: str) -> dict:
    return {"run_uuid": run_id, "key": key, "value": value}


def _order(row: dict) -> tuple:
    return row["step"], row["timestamp"], row["value"]


def _sanitize(value: float) -> tuple[bool, float]:
    """MLflow's storage of NaN (0 with a flag) and infinities (the largest float)."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_FLOAT if value > 0 else -MAX_FLOAT
    return False, value


class SqlSink(Sink):
    """The SQL fast path as a sink: a batch in one transaction, runs created and ended in it."""

    def __init__(self, writer: SqlBatchWriter, client: Any, call: Retrying):
        super().__init__(call)
        self.writer, self.client = writer, client

    @classmethod
    def for_client(cls, client: Any, call: Retrying) -> Optional["SqlSink"]:
        """The fast path into ``client``'s store, or None (see ``SqlBatchWriter.for_client``)."""
        writer = SqlBatchWriter.for_client(client)
        return None if writer is None else cls(writer, client, call)

    def use_experiment(self, experiment_id: str) -> None:
        self.writer.use_experiment(experiment_id, self.client.get_experiment(experiment_id).artifact_location)

    def create_run(self, name: str, tags: dict[str, str], start_ms: int) -> tuple[str, list]:
        """A run id of our own; the run is created by the next batch, with its params and tags."""
        return new_run_id(), [NewRun(name, tags.get(USER, "unknown"), start_ms), *tag_entities(tags)]

    def write(self, items: list[tuple[str, Any]]) -> int:
        """The batch in one transaction; refused (a run deleted meanwhile, a param changed), once more run by run,
        so that the other runs' writes land; then ``Refused`` names the first refusal and counts what it held."""
        if self.call.abandoned:
            return len(items)
        try:
            self.call(self.writer.write, items)
            return 0
        except MlflowException:
            if self.call.abandoned:
                raise
        by_run: dict[str, list] = {}
        for run_id, e in items:
            by_run.setdefault(run_id, []).append((run_id, e))
        refused, n = None, 0
        for run_id, run_items in by_run.items():
            try:
                self.call(self.writer.write, run_items)
            except MlflowException as e:
                print(f"tunelab: MLflow refused the writes to run {run_id}: {e}", file=sys.stderr, flush=True)
                refused, n = refused or e, n + len(run_items)
        if refused is not None:
            raise Refused(n, refused)
        return 0
