"""MLflow tracking: study run > cell runs > trial runs, written by one thread in batches.

Every write of a study goes through a single writer thread, so results from many trials
finishing at once are never written concurrently (no ``database is locked`` on sqlite),
and metrics are coalesced into ``log_batch`` calls instead of one call per value. A store
that goes away mid-study is retried with backoff while the trials keep running; what could
not be written by the end is left to ``tunelab sync``, which replays it from Tune's storage.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import mlflow
import requests
import sqlalchemy
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.flavors import Flavor
from tunelab.errors import StudyError
from tunelab.tracking import schema
from tunelab.tracking.schema import PARENT, RUN_NAME, USER
from tunelab.tracking.sql import NewRun, RunEnd, SqlBatchWriter, new_run_id

MAX_METRICS_PER_BATCH = 800  # MLflow log_batch: <= 1000 entities in all, <= 100 params, <= 100 tags
MAX_PARAMS_PER_BATCH = 100  # also the tag limit
MAX_TAG_VALUE = 5000


#: a queued flush waits this long for more to batch: fewer store transactions per trial
LINGER_S = 0.05
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # our backoff between attempts at an unreachable store
#: MLflow's own per-request retries, shortened so that our backoff (which keeps the study going) takes over
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
TRANSIENT_MARKERS = ("Max retries exceeded", "Connection refused", "database is locked", "Connection aborted",
                     "Read timed out", "TEMPORARILY_UNAVAILABLE", "502", "503", "504")


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_wal(dbapi_connection, connection_record) -> None:
    """sqlite stores: write-ahead log, fsync at checkpoints rather than at every commit.

    A trial's writes cost about half as much, and the MLflow UI reads while a study writes. A power
    cut may lose the last moments of logging, never the store: `tunelab sync` rewrites them from Tune.
    """
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def import_flavors_early(flavors: Iterable[Flavor]) -> threading.Thread:
    """Import what logging these flavours' models needs in a background thread, while Ray starts,
    rather than in the writer thread when the first cell ends, beside cells that still run."""
    def load() -> None:
        for name in (m for f in sorted(flavors, key=str) for m in (f.module, *f.imports)):
            with contextlib.suppress(Exception):  # a failure shows where the module is really used
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # every log_model checks its requirements against this map (0.7-3 s)
            from mlflow.utils.requirements_utils import _init_modules_to_packages_map

            _init_modules_to_packages_map()

    thread = threading.Thread(target=load, name="tunelab-imports", daemon=True)
    thread.start()
    return thread


def _transient(e: BaseException) -> bool:
    """An error that waiting may cure: the store unreachable, overloaded or locked."""
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    return isinstance(e, MlflowException) and any(m in str(e) for m in TRANSIENT_MARKERS)


def _requirements(flavor: Flavor) -> list[str]:
    pkgs = ("numpy", "pandas", *flavor.packages)
    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in pkgs]


class Tracker:
    """The study's MLflow store. Methods queue work and return at once; ``flush`` waits for it."""

    def __init__(self, uri: str, run_tags: dict | None = None):
        self.uri = uri
        self.run_tags = run_tags or {}  # set on every run this tracker starts
        for k, v in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(k, v)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per run
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        self.experiment_id = ""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise StudyError("tracking.uri", f"cannot reach the MLflow store at {uri}: {type(e).__name__}: {e}") from None
        self._sql = SqlBatchWriter.for_client(self.client)  # None: an HTTP store, written call by call
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tunelab-mlflow")
        self._runs: dict[str, str] = {}  # key -> run id; touched only by the writer thread
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []  # (run key, Metric | Param | RunTag) awaiting a log_batch
        self._flush_queued = False
        self._abandoned = False  # set when close() gave up on an unreachable store
        self.missed = 0  # writes abandoned; `tunelab sync` recovers them

    def open(self, experiment: str) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        if self._sql is not None:
            self._sql.use_experiment(self.experiment_id, self.client.get_experiment(self.experiment_id).artifact_location)

    # --- reading (resume, sync) ----------------------------------------------------------
    def search(self, filter_string: str, order_by: list[str] | None = None, max_results: int = 50000) -> list[Run]:
        """Runs of the experiment matching ``filter_string`` (MLflow search syntax), all pages."""
        return schema.search_runs(self.client, [self.experiment_id], filter_string, order_by, max_results)

    def latest_study_run(self, study: str) -> Run | None:
        return schema.latest_study_run(self.client, study, [self.experiment_id])

    def children(self, parent_run_id: str, role: str) -> list[Run]:
        return self.search(schema.run_filter(role, parent=parent_run_id))

    def adopt(self, key: str, run_id: str, reopen: bool = False) -> Future:
        """Write to an existing run under ``key`` from now on; ``reopen`` marks it RUNNING again."""
        def op() -> None:
            self._runs[key] = run_id
            if reopen:
                self._client_call(self.client.update_run, run_id, "RUNNING")
        return self.submit(op)

    def has(self, key: str) -> bool:
        return self.submit(lambda: key in self._runs).result()

    # --- queued operations -------------------------------------------------------------
    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def call(self, fn: Callable, *args: Any) -> Future:
        """Queue one store call, retried while the store is unreachable."""
        return self.submit(self._client_call, fn, *args)

    def start_run(self, key: str, name: str, tags: dict, parent: str | None = None,
                  params: dict | None = None) -> Future:
        def op() -> str:
            if key in self._runs:
                return self._runs[key]
            all_tags = {RUN_NAME: name, **self.run_tags, **tags}
            if parent is not None:
                all_tags[PARENT] = self._runs[parent]
            str_tags = {k: str(v) for k, v in all_tags.items()}
            if self._sql is not None:  # the run is created by the next batch, with its params and tags
                run_id = self._runs[key] = new_run_id()
                self._queue(key, [NewRun(name, str_tags.get(USER, "unknown"), int(time.time() * 1000)),
                                  *_tags(str_tags)], first=True)  # before what was queued for it meanwhile
            else:
                run_id = self._runs[key] = self._call(self.client.create_run, self.experiment_id, None, str_tags,
                                                      name).info.run_id
            self._queue(key, [Param(k, str(v)) for k, v in (params or {}).items()])  # rides the first batch
            return run_id
        return self.submit(op)

    def log_metrics(self, key: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Queue metrics; the same (value, step, timestamp) logged twice is stored once (MLflow's key)."""
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        self._queue(key, [Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def set_tags(self, key: str, tags: dict) -> None:
        self._queue(key, _tags(tags))

    def log_text(self, key: str, text: str, artifact_file: str) -> Future:
        return self.submit(lambda: self._client_call(self.client.log_text, self._runs[key], text, artifact_file))

    def log_files(self, key: str, files: dict[str, bytes], artifact_dir: str) -> Future:
        """Log ``files`` (name -> content) into run ``key`` under ``artifact_dir``."""
        def op() -> None:
            with tempfile.TemporaryDirectory(prefix="tunelab-artifacts-") as d:
                for name, content in files.items():
                    Path(d, name).write_bytes(content)
                self._client_call(self.client.log_artifacts, self._runs[key], d, artifact_dir)
        return self.submit(op)

    def end_run(self, key: str, status: str = "FINISHED", tags: dict | None = None) -> None:
        if self._sql is not None:  # ends with the next batch, beside other trials' writes
            self._queue(key, [*_tags(tags or {}), RunEnd(status, int(time.time() * 1000))])
            return
        self._queue(key, _tags(tags or {}))

        def op() -> None:
            self._flush()
            self._call(self.client.set_terminated, self._runs[key], status)
        self.submit(op)

    def run_id(self, key: str) -> str:
        return self.submit(lambda: self._runs[key]).result()

    def log_model(self, key: str, flavor: Flavor, model: Any, input_example: Any,
                  registered_name: str | None) -> Future:
        """Log ``model`` with its MLflow flavour (signature inferred from the example) into run ``key``."""
        def log() -> Any:
            module = flavor.mlflow_module()
            with mlflow.start_run(run_id=self._runs[key], nested=True), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # schema hints about integer outputs
                return module.log_model(model, name="model", registered_model_name=registered_name,
                                        pip_requirements=_requirements(flavor),
                                        **flavor.log_kwargs(model, input_example))
        return self.submit(self._client_call, log)

    def flush(self) -> None:
        self.submit(self._flush).result()

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued; False when the store stayed unreachable for ``timeout_s``."""
        done = self.submit(self._flush)
        try:
            done.result(timeout=timeout_s)
        except TimeoutError:
            self._abandoned = True  # the writer stops retrying and drops what is left
        self._pool.shutdown(wait=True)
        return not self._abandoned

    # --- retrying ----------------------------------------------------------------------
    def _client_call(self, fn: Callable, *args: Any) -> Any:
        """Writer thread: an MLflow client call, after the batch it may depend on (a run it names)."""
        self._flush()
        return self._call(fn, *args)

    def _call(self, fn: Callable, *args: Any) -> Any:
        """Writer thread: ``fn(*args)``, retried with backoff while the store is unreachable."""
        delay, warned = RETRY_FIRST_S, False
        while True:
            try:
                result = fn(*args)
            except Exception as e:
                if self._abandoned or not _transient(e):
                    raise
                if not warned:
                    print(f"tunelab: MLflow store {self.uri} unreachable ({type(e).__name__}); retrying with backoff,"
                          " trials keep running", file=sys.stderr, flush=True)
                    warned = True
                time.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            if warned:
                print(f"tunelab: MLflow store {self.uri} reachable again", file=sys.stderr, flush=True)
            return result

    # --- batching ----------------------------------------------------------------------
    def _queue(self, key: str, entities: list, first: bool = False) -> None:
        """Hold entities for the next batch (``first``: ahead of the others); queue one flush unless one waits."""
        with self._lock:
            if first:
                self._pending[:0] = [(key, e) for e in entities]
            else:
                self._pending.extend((key, e) for e in entities)
            if self._flush_queued:
                return
            self._flush_queued = True
        # the flush waits a moment, so that what follows (a trial's first metrics, its end) joins its batch;
        # a timer waits, not the writer, which meanwhile goes on with what is queued
        timer = threading.Timer(LINGER_S, self._submit_flush)
        timer.daemon = True
        timer.start()

    def _submit_flush(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: close() flushed what was pending
            self.submit(self._flush)

    def _flush(self) -> None:
        """Writer thread: one log_batch per run (split at MLflow's limits) for everything pending."""
        with self._lock:
            pending, self._pending, self._flush_queued = self._pending, [], False
        waiting = [(key, e) for key, e in pending if key not in self._runs]  # its start_run is still queued
        if waiting:
            with self._lock:
                self._pending[:0] = waiting
            pending = [(key, e) for key, e in pending if key in self._runs]
        if self._sql is not None:
            if self._abandoned:
                self.missed += len(pending)
            elif pending:
                self._write_sql([(self._runs[key], e) for key, e in pending])
            return
        by_run: dict[str, dict[type, list]] = {}
        for key, e in pending:
            by_run.setdefault(self._runs[key], {Metric: [], Param: [], RunTag: []})[type(e)].append(e)
        for run_id, kinds in by_run.items():
            metrics, params, tags = kinds[Metric], kinds[Param], kinds[RunTag]
            while metrics or params or tags:
                if self._abandoned:
                    self.missed += len(metrics) + len(params) + len(tags)
                    break
                self._call(self.client.log_batch, run_id, metrics[:MAX_METRICS_PER_BATCH],
                           params[:MAX_PARAMS_PER_BATCH], tags[:MAX_PARAMS_PER_BATCH])
                metrics, params, tags = (metrics[MAX_METRICS_PER_BATCH:], params[MAX_PARAMS_PER_BATCH:],
                                         tags[MAX_PARAMS_PER_BATCH:])

    def _write_sql(self, items: list[tuple[str, Any]]) -> None:
        """Writer thread: the batch in one transaction; refused (a run deleted meanwhile, a param changed), once
        more run by run, so that the other runs' writes land. The first refusal is raised then, as log_batch's is."""
        try:
            self._call(self._sql.write, items)
            return
        except MlflowException:
            if self._abandoned:
                raise
        by_run: dict[str, list] = {}
        for run_id, e in items:
            by_run.setdefault(run_id, []).append((run_id, e))
        refused = None
        for run_id, run_items in by_run.items():
            try:
                self._call(self._sql.write, run_items)
            except MlflowException as e:
                print(f"tunelab: MLflow refused the writes to run {run_id}: {e}", file=sys.stderr, flush=True)
                refused = refused or e
        if refused is not None:
            raise refused


def _tags(tags: dict) -> list:
    return [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
