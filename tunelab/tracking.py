"""MLflow tracking: study run > cell runs > trial runs, written by one thread in batches.

Every write of a study goes through a single writer thread, so results from many trials
finishing at once are never written concurrently (no ``database is locked`` on sqlite),
and metrics are coalesced into ``log_batch`` calls instead of one call per value.
"""

from __future__ import annotations

import threading
import time
import warnings
from importlib import metadata
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tunelab.errors import StudyError

MAX_METRICS_PER_BATCH = 800  # MLflow log_batch: <= 1000 entities in all, <= 100 params, <= 100 tags
MAX_PARAMS_PER_BATCH = 100  # also the tag limit
MAX_TAG_VALUE = 5000
ROLE, MODEL, DATASET, TRIAL_ID = "tunelab.role", "tunelab.model", "tunelab.dataset", "tunelab.trial_id"
STATUS, STUDY = "tunelab.status", "tunelab.study"
PARENT, RUN_NAME = "mlflow.parentRunId", "mlflow.runName"
FLAVORS: dict[str, Callable[[], Any]] = {
    "sklearn": lambda: mlflow.sklearn,
    "xgboost": lambda: mlflow.xgboost,
    "pytorch": lambda: mlflow.pytorch,
}
#: packages a flavour's model needs; stated, because MLflow's own inference imports the world (seconds per model)
FLAVOR_PACKAGES = {"sklearn": ("scikit-learn",), "xgboost": ("xgboost",), "pytorch": ("torch",)}


def _flavor_kwargs(flavor: str, model: Any, example: Any) -> dict:
    """Safe formats: skops for scikit-learn (our own types trusted), an exported graph (pt2) for PyTorch."""
    if flavor == "sklearn":
        import skops.io

        return {"input_example": example, "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model))}
    if flavor == "pytorch":  # pt2 traces forward() on an array, not a DataFrame
        return {"input_example": example.to_numpy(dtype="float32")}
    return {"input_example": example}


def _requirements(flavor: str) -> list[str]:
    pkgs = ("numpy", "pandas", *FLAVOR_PACKAGES[flavor])
    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in pkgs]


class Tracker:
    """The study's MLflow store. Methods queue work and return at once; ``flush`` waits for it."""

    def __init__(self, uri: str):
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        self.experiment_id = ""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise StudyError("tracking.uri", f"cannot reach the MLflow store at {uri}: {type(e).__name__}: {e}") from None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tunelab-mlflow")
        self._runs: dict[str, str] = {}  # key -> run id; touched only by the writer thread
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []  # (run key, Metric | Param | RunTag) awaiting a log_batch
        self._flush_queued = False

    def open(self, experiment: str) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

    # --- queued operations -------------------------------------------------------------
    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def start_run(self, key: str, name: str, tags: dict, parent: str | None = None,
                  params: dict | None = None) -> Future:
        def op() -> str:
            if key in self._runs:
                return self._runs[key]
            all_tags = {RUN_NAME: name, **tags}
            if parent is not None:
                all_tags[PARENT] = self._runs[parent]
            run = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
            self._runs[key] = run.info.run_id
            self._queue(key, [Param(k, str(v)) for k, v in (params or {}).items()])  # rides the first batch
            return run.info.run_id
        return self.submit(op)

    def log_metrics(self, key: str, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._queue(key, [Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def set_tags(self, key: str, tags: dict) -> None:
        self._queue(key, _tags(tags))

    def log_text(self, key: str, text: str, artifact_file: str) -> Future:
        return self.submit(lambda: self.client.log_text(self._runs[key], text, artifact_file))

    def end_run(self, key: str, status: str = "FINISHED", tags: dict | None = None) -> Future:
        self._queue(key, _tags(tags or {}))

        def op() -> None:
            self._flush()
            self.client.set_terminated(self._runs[key], status)
        return self.submit(op)

    def run_id(self, key: str) -> str:
        return self.submit(lambda: self._runs[key]).result()

    def log_model(self, key: str, flavor: str, model: Any, input_example: Any, registered_name: str | None) -> Future:
        """Log ``model`` with its MLflow flavour (signature inferred from the example) into run ``key``."""
        def op() -> Any:
            module = FLAVORS[flavor]()
            with mlflow.start_run(run_id=self._runs[key], nested=True), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # schema hints about integer outputs
                return module.log_model(model, name="model", registered_model_name=registered_name,
                                        pip_requirements=_requirements(flavor),
                                        **_flavor_kwargs(flavor, model, input_example))
        return self.submit(op)

    def flush(self) -> None:
        self.submit(self._flush).result()

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)

    # --- batching ----------------------------------------------------------------------
    def _queue(self, key: str, entities: list) -> None:
        """Hold entities for the next batch; queue one flush unless one is already waiting."""
        with self._lock:
            self._pending.extend((key, e) for e in entities)
            if self._flush_queued:
                return
            self._flush_queued = True
        self.submit(self._flush)

    def _flush(self) -> None:
        """Writer thread: one log_batch per run (split at MLflow's limits) for everything pending."""
        with self._lock:
            pending, self._pending, self._flush_queued = self._pending, [], False
        by_run: dict[str, dict[type, list]] = {}
        for key, e in pending:
            by_run.setdefault(self._runs[key], {Metric: [], Param: [], RunTag: []})[type(e)].append(e)
        for run_id, kinds in by_run.items():
            metrics, params, tags = kinds[Metric], kinds[Param], kinds[RunTag]
            while metrics or params or tags:
                self.client.log_batch(run_id, metrics=metrics[:MAX_METRICS_PER_BATCH],
                                      params=params[:MAX_PARAMS_PER_BATCH], tags=tags[:MAX_PARAMS_PER_BATCH])
                metrics, params, tags = (metrics[MAX_METRICS_PER_BATCH:], params[MAX_PARAMS_PER_BATCH:],
                                         tags[MAX_PARAMS_PER_BATCH:])


def _tags(tags: dict) -> list:
    return [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
