"""The one writer of a study's MLflow runs: study run > cell runs > trial runs, written by one thread in batches.

Every write of a study goes through a single writer thread, so results from many trials
finishing at once are never written concurrently (no ``database is locked`` on sqlite),
and what is queued meanwhile goes to the sink as one batch instead of one call per value. A store
that goes away mid-study is retried with backoff while the trials keep running; what could
not be written by the end is left to ``tunelab sync``, which replays it from Tune's storage.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Container

import mlflow
from mlflow.entities import DatasetInput, Metric, Param, Run
from mlflow.tracking import MlflowClient

from trainables.base import Data, ModelFamily
from tunelab.errors import StudyError
from tunelab.tracking.client import ClientSink
from tunelab.tracking.models import log_members, log_model
from tunelab.tracking.retry import HTTP_RETRY_DEFAULTS, Lost, Retrying
from tunelab.tracking.schema import (
    EXPERIMENT_KIND,
    PARENT,
    RUN_NAME,
    TRAINING_RUNS,
    latest_study_run,
    run_filter,
    search_runs,
)
from tunelab.tracking.sink import Refused, RunEnd, Sink, now_ms, tag_entities
from tunelab.tracking.sql import SqlSink

#: a queued flush waits this long for more to batch: fewer store transactions per trial
LINGER_S = 0.05


class Pending:
    """Entities awaiting the next batch, by run key; the first one queued schedules ``flush`` LINGER_S later.

    The flush waits a moment, so that what follows (a trial's first metrics, its end) joins its batch;
    a timer waits, not the writer, which meanwhile goes on with what is queued.
    """

    def __init__(self, flush: Callable[[], None]):
        self._flush = flush
        self._lock = threading.Lock()
        self._items: list[tuple[str, Any]] = []
        self._flush_queued = False

    def add(self, key: str, entities: list, first: bool = False) -> None:
        """Hold entities for run ``key`` (``first``: ahead of the others); schedule a flush unless one waits."""
        with self._lock:
            if first:
                self._items[:0] = [(key, e) for e in entities]
            else:
                self._items.extend((key, e) for e in entities)
            if self._flush_queued:
                return
            self._flush_queued = True
        timer = threading.Timer(LINGER_S, self._flush)
        timer.daemon = True
        timer.start()

    def left(self) -> int:
        """How many entities are held (at the end: those of runs that were never created)."""
        with self._lock:
            return len(self._items)

    def take(self, runs: Container[str]) -> list[tuple[str, Any]]:
        """What is held for the keys in ``runs``; the rest (their start_run is still queued) rides a later batch."""
        with self._lock:
            items, self._flush_queued = self._items, False
            self._items = [(key, e) for key, e in items if key not in runs]
        return [(key, e) for key, e in items if key in runs]


class Tracker:
    """The study's MLflow store. Methods queue work and return at once; ``flush`` waits for it.

    Runs, params, tags, metrics and run ends go in batches to the sink: the SQL fast path where the
    store allows it (``SqlSink.for_client``), else MLflow's client. Artifacts, models and the model
    registry go through the client, after the batch they may depend on. Every write is observed: what the store
    does not take is counted in ``lost``.
    """

    def __init__(self, uri: str, run_tags: dict | None = None):
        self.uri = uri
        self.run_tags = run_tags or {}  # set on every run this tracker starts
        for k, v in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(k, v)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per run
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # none per model logged
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        self.experiment_id = ""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise StudyError(
                "tracking.uri", f"cannot reach the MLflow store at {uri}: {type(e).__name__}: {e}"
            ) from None
        self._call = Retrying(uri)
        self.sink: Sink = SqlSink.for_client(self.client, self._call) or ClientSink(self.client, self._call)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tunelab-mlflow")
        self._runs: dict[str, str] = {}  # key -> run id; touched only by the writer thread
        self._pending = Pending(self._submit_flush)
        self.lost = Lost(uri)

    def open(self, experiment: str) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        kind = {EXPERIMENT_KIND: TRAINING_RUNS}  # the UI opens it on its runs
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment, tags=kind)
        if exp is not None and EXPERIMENT_KIND not in exp.tags:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, TRAINING_RUNS)
        self.sink.use_experiment(self.experiment_id)

    # --- reading (resume, sync) ----------------------------------------------------------
    def search(self, filter_string: str, order_by: list[str] | None = None, max_results: int = 50000) -> list[Run]:
        """Runs of the experiment matching ``filter_string`` (MLflow search syntax), all pages."""
        return search_runs(self.client, [self.experiment_id], filter_string, order_by, max_results)

    def latest_study_run(self, study: str) -> Run | None:
        return latest_study_run(self.client, study, [self.experiment_id])

    def children(self, parent_run_id: str, role: str) -> list[Run]:
        return self.search(run_filter(role, parent=parent_run_id))

    def adopt(self, key: str, run_id: str, reopen: bool = False) -> Future:
        """Write to an existing run under ``key`` from now on; ``reopen`` marks it RUNNING again."""

        def op() -> None:
            if reopen:  # before the key is known: the flush ahead of this call must not end the run first
                self._client_call(self.client.update_run, run_id, "RUNNING")
            self._runs[key] = run_id

        return self._write(op)

    def has(self, key: str) -> bool:
        return self.submit(lambda: key in self._runs).result()

    def run_id(self, key: str) -> str:
        return self.submit(lambda: self._runs[key]).result()

    # --- queued operations -------------------------------------------------------------
    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def call(self, fn: Callable, *args: Any) -> Future:
        """Queue one client call, retried while the store is unreachable."""
        return self._write(self._client_call, fn, *args)

    def start_run(
        self, key: str, name: str, tags: dict, parent: str | None = None, params: dict | None = None
    ) -> Future:
        start_ms = now_ms()  # when asked, not when the writer gets to it

        def op() -> str:
            if key in self._runs:
                return self._runs[key]
            all_tags = {RUN_NAME: name, **self.run_tags, **tags}
            if parent is not None:
                all_tags[PARENT] = self._runs[parent]
            run_id, creation = self.sink.create_run(name, {k: str(v) for k, v in all_tags.items()}, start_ms)
            self._runs[key] = run_id
            self._pending.add(key, creation, first=True)  # before what was queued for it meanwhile
            self.log_params(key, params or {})  # rides the first batch
            return run_id

        return self._write(op)

    def log_metrics(self, key: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Queue metrics; the same (value, step, timestamp) logged twice is stored once (MLflow's key)."""
        ts = timestamp_ms if timestamp_ms is not None else now_ms()
        self._pending.add(key, [Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def log_params(self, key: str, params: dict[str, str]) -> None:
        self._pending.add(key, [Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, key: str, tags: dict) -> None:
        self._pending.add(key, tag_entities(tags))

    def end_run(self, key: str, status: str = "FINISHED", tags: dict | None = None) -> None:
        """Queue the run's end: it ends with the next batch, beside other runs' writes."""
        self._pending.add(key, [*tag_entities(tags or {}), RunEnd(status, now_ms())])

    def log_input(self, key: str, dataset: DatasetInput) -> Future:
        """Record in run ``key`` the dataset it used (the UI's Dataset column)."""
        return self._write(lambda: self._client_call(self.client.log_inputs, self._runs[key], [dataset]))

    def log_text(self, key: str, text: str, artifact_file: str) -> Future:
        return self._write(lambda: self._client_call(self.client.log_text, self._runs[key], text, artifact_file))

    def log_files(self, key: str, files: dict[str, bytes], artifact_dir: str) -> Future:
        """Log ``files`` (name -> content) into run ``key`` under ``artifact_dir``."""

        def op() -> None:
            with tempfile.TemporaryDirectory(prefix="tunelab-artifacts-") as d:
                for name, content in files.items():
                    Path(d, name).write_bytes(content)
                self._client_call(self.client.log_artifacts, self._runs[key], d, artifact_dir)

        return self._write(op)

    def log_model(
        self, key: str, family: type[ModelFamily], model: Any, data: Data, registered_name: str | None
    ) -> Future:
        """Log ``model``, a ``family`` model trained on ``data``, as the whole predictor into run ``key`` (and register
        it as ``registered_name``)."""

        def log() -> Any:
            return log_model(self._runs[key], family.flavor, model, data, registered_name, family.trusted_types)

        return self._write(self._client_call, log)

    def log_ensemble(
        self, key: str, members: list[tuple[type[ModelFamily], Any, float]], data: Data, registered_name: str | None
    ) -> Future:
        """Log (family, model, weight) members as one model, their weighted mean, into run ``key`` (and register it)."""

        def log() -> Any:
            flavored = [(family.flavor, model, weight) for family, model, weight in members]
            trusted = {t for family, _, _ in members for t in family.trusted_types}
            return log_members(self._runs[key], flavored, data, registered_name, trusted)

        return self._write(self._client_call, log)

    def flush(self) -> None:
        self.submit(self._flush).result()

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued; False when something was not written (``lost``): the store refused it, or stayed
        unreachable past its deadline or for ``timeout_s`` more at the end."""
        done = self.submit(self._flush)
        try:
            done.result(timeout=timeout_s)
        except TimeoutError:
            self._call.abandoned = True  # the writer stops retrying and counts what is left
        self._pool.shutdown(wait=True)
        self.lost.add(self._pending.left())  # entities of runs whose creation was lost
        return self.lost.count == 0

    # --- the writer thread -------------------------------------------------------------
    def _write(self, fn: Callable, *args: Any) -> Future:
        return self.submit(self._observed, fn, *args)

    def _observed(self, fn: Callable, *args: Any) -> Any:
        """A write: its failure is counted (and still raised to whoever waits on it)."""
        try:
            return fn(*args)
        except Exception as e:
            self.lost.add(1, e)
            raise

    def _client_call(self, fn: Callable, *args: Any) -> Any:
        """A client call, after the batch it may depend on (a run it names), retried while the store is unreachable."""
        self._flush()
        return self._call(fn, *args)

    def _submit_flush(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: close() flushed what was pending
            self.submit(self._flush)

    def _flush(self) -> None:
        """Everything pending for runs that exist, to the sink as one batch; what it does not take is counted."""
        items = self._pending.take(self._runs)
        if not items:
            return
        try:
            self.lost.add(self.sink.write([(self._runs[key], e) for key, e in items]))
        except Refused as e:
            self.lost.add(e.n, e.error)
        except Exception as e:
            self.lost.add(len(items), e)
