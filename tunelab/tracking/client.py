"""MLflow's client as a sink: ``create_run``, then one ``log_batch`` per run (split at MLflow's limits) and
``set_terminated``. For every store; the only way into one behind an HTTP server."""

from __future__ import annotations

from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tunelab.tracking.retry import Retrying
from tunelab.tracking.sink import Refused, RunEnd, Sink

MAX_METRICS_PER_BATCH = 800  # MLflow log_batch: <= 1000 entities in all, <= 100 params, <= 100 tags
MAX_PARAMS_PER_BATCH = 100  # also the tag limit


class ClientSink(Sink):
    def __init__(self, client: MlflowClient, call: Retrying):
        super().__init__(call)
        self.client = client
        self.experiment_id = ""

    def use_experiment(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id

    def create_run(self, name: str, tags: dict[str, str], start_ms: int) -> tuple[str, list]:
        return self.call(self.client.create_run, self.experiment_id, start_ms, tags, name).info.run_id, []

    def write(self, items: list[tuple[str, Any]]) -> int:
        by_run: dict[str, dict[type, list]] = {}
        for run_id, e in items:
            by_run.setdefault(run_id, {Metric: [], Param: [], RunTag: [], RunEnd: []})[type(e)].append(e)
        missed, refused, n = 0, None, 0
        for run_id, kinds in by_run.items():  # a run the store refuses does not keep the others' writes out
            try:
                missed += self._write_run(run_id, kinds)
            except MlflowException as e:
                if self.call.abandoned:
                    raise
                refused, n = refused or e, n + sum(map(len, kinds.values()))
        if refused is not None:
            raise Refused(n, refused)
        return missed

    def _write_run(self, run_id: str, kinds: dict[type, list]) -> int:
        missed = self._log_batches(run_id, kinds[Metric], kinds[Param], kinds[RunTag])
        for end in kinds[RunEnd]:  # after the run's last batch
            if self.call.abandoned:
                missed += 1
            else:
                self.call(self.client.set_terminated, run_id, end.status, end.end_ms)
        return missed

    def _log_batches(self, run_id: str, metrics: list, params: list, tags: list) -> int:
        """``log_batch`` calls within MLflow's limits; how many entities were dropped."""
        while metrics or params or tags:
            if self.call.abandoned:
                return len(metrics) + len(params) + len(tags)
            self.call(
                self.client.log_batch,
                run_id,
                metrics[:MAX_METRICS_PER_BATCH],
                params[:MAX_PARAMS_PER_BATCH],
                tags[:MAX_PARAMS_PER_BATCH],
            )
            metrics, params, tags = (
                metrics[MAX_METRICS_PER_BATCH:],
                params[MAX_PARAMS_PER_BATCH:],
                tags[MAX_PARAMS_PER_BATCH:],
            )
        return 0
