"""A cell's MLflow run: opened with its first trial; closed after its last, with its best model,
its registration and its summary."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ray
import yaml

from trainables import FAMILIES
from trainables.base import on_test_split
from trainables.trial import unpack
from tunelab import stored_predictions
from tunelab.run.book import NUMBER, params_of
from tunelab.run.cell_work import BestSoFar, figures, kept_model, retrained_model
from tunelab.run.plan import Cell, Plan
from tunelab.run.warm_start import meta_features
from tunelab.search import CONTINUOUS_ONLY
from tunelab.tracking import (
    BEST_MODEL,
    BEST_PREFIX,
    BEST_STEPS,
    BEST_TRIAL,
    DATASET,
    ERROR,
    META_PREFIX,
    MODEL,
    ROLE,
    ROLE_CELL,
    SPLIT,
    STUDY,
    WARM_START,
    Tracker,
    dataset_input,
    registered_name,
)

log = logging.getLogger("tunelab")
STUDY_KEY = "study"  # the tracker's key of the study run
FINISHED, FAILED, INTERRUPTED = "FINISHED", "FAILED", "INTERRUPTED"
#: how long a cell's end waits for its best model to be logged and registered (the store may be away)
MODEL_LOG_DEADLINE_S = float(os.environ.get("TUNELAB_MODEL_LOG_DEADLINE_S", "900"))
#: the cell's Ray tasks, each defined once (a remote function made per call is exported to Ray again each time)
KEPT_MODEL, RETRAINED_MODEL, FIGURES = ray.remote(kept_model), ray.remote(retrained_model), ray.remote(figures)


def resource_seconds(cell: Cell, compute_s: float) -> dict[str, float]:
    """A cell's trial time in the resources it held: families with different resources compare on these."""
    return {
        "cpu_seconds": compute_s * cell.resources.cpus_per_trial,
        "gpu_seconds": compute_s * cell.resources.gpus_per_trial,
    }


@dataclass
class CellResult:
    cell: Cell
    status: str = FINISHED
    trials: int = 0
    early_stopped: int = 0
    failed: int = 0
    compute_s: float = 0.0
    best_val: Optional[float] = None
    test: dict = field(default_factory=dict)
    best_config: dict = field(default_factory=dict)
    model_version: Optional[str] = None
    error: str = ""


def count(cell: Cell, trials: list[tuple[dict, bool, dict]], encoded: bool) -> CellResult:
    """Trial counts, compute and the best trial from (last result, errored, config) per trial."""
    r = CellResult(cell)
    best_key = None
    for metrics, errored, config in trials:
        r.trials += 1
        r.compute_s += float(metrics.get("time_total_s", 0.0))
        if errored:
            r.failed += 1
            continue
        value, steps = metrics.get(cell.metric), int(metrics.get("step", 0))
        if steps < cell.space.steps:
            r.early_stopped += 1
        if value is None:
            continue
        if best_key is None or cell.sign * value < best_key:
            best_key, r.best_val = cell.sign * value, value
            r.best_config = {
                "config": cell.space.decode(params_of(config), encoded),
                "steps": steps,
                "trial_id": metrics.get("trial_id", ""),
            }
    return r


class CellRuns:
    """Opens and closes the study's cell runs.

    Args:
        plan: the study's plan.
        tracker: its store.
        refs: its datasets by key in the object store.
        keeper: the BestModels actor holding each cell's best model as its trial trained it.
        token: this session's prefix of cell keys in the keeper.
    """

    def __init__(self, plan: Plan, tracker: Tracker, refs: dict[str, Any], keeper: Any, token: str):
        self.plan, self.study, self.tracker, self.datasets, self.refs = plan, plan.study, tracker, plan.datasets, refs
        self.keeper, self.token = keeper, token
        self.encoded = plan.study.search.searcher in CONTINUOUS_ONLY
        self._best_of: dict[str, tuple[float, Cell, Any]] = {}  # dataset -> best value, its cell, its diagnostics
        self._open_in = Counter(c.dataset for c in plan.cells)  # dataset -> its cells not closed yet
        self._drawing: list[tuple[Cell, Any]] = []  # champions whose figures are being drawn
        #: per cell key, its kept trials: number -> (validation and test predictions, configuration, step)
        self.kept_trials: dict[str, dict[int, tuple]] = {}
        self._lock = threading.Lock()

    def kept_as(self, cell: Cell) -> str:
        return f"{self.token}/{cell.key}"

    def open(self, cell: Cell) -> None:
        s = self.study.search
        tags = {
            ROLE: ROLE_CELL,
            MODEL: cell.family,
            DATASET: cell.dataset_name,
            SPLIT: cell.split,
            STUDY: self.study.name,
        }
        params = {
            "searcher": s.searcher,
            "scheduler": s.scheduler,
            "num_samples": s.num_samples,
            "metric": cell.metric,
            "budget_steps": cell.space.steps,
            "budget_per_step": cell.space.per_step,
            "cpus_per_trial": cell.resources.cpus_per_trial,
            "gpus_per_trial": cell.resources.gpus_per_trial,
            "seed": cell.seed,
            "folds": self.study.split.folds or 1,
        }
        tags |= {META_PREFIX + k: f"{v:g}" for k, v in meta_features(self.datasets[cell.dataset]).items()}
        warm = self.plan.warm.get(cell.key, [])
        if warm:
            tags[WARM_START] = ", ".join(dict.fromkeys(s.origin for s in warm))
        self.tracker.start_run(cell.key, cell.label, tags, parent=STUDY_KEY, params=params)
        self.tracker.log_input(cell.key, dataset_input(self.datasets[cell.dataset]))
        self.tracker.log_text(
            cell.key,
            f"# {cell.family} for {cell.task}: {Path(cell.space.source).name} with the "
            f"study's overrides\n{cell.space.to_yaml()}",
            "searchspace.yaml",
        )
        if warm:
            starts = [{"from": s.origin, "distance": round(s.distance, 4), "config": s.config} for s in warm]
            self.tracker.log_text(
                cell.key,
                "# the configurations this cell's searcher tried first (search.warm_start), nearest dataset first\n"
                + yaml.safe_dump(starts, sort_keys=False),
                "warm_start.yaml",
            )

    def close(self, cell: Cell, trials: list[tuple[dict, bool, dict]]) -> CellResult:
        """The cell's summary, best model and registration, from (last result, errored, config) per trial.

        The best model, its test scores and diagnostics come from Ray tasks (``cell_work``): the kept model's
        scored beside the trials, a lost one retrained with the cell's resources; the driver only logs them.
        """
        result = count(cell, trials, self.encoded)
        if result.best_val is None:
            self.tracker.end_run(cell.key, FAILED, {ERROR: "every trial failed"})
            result.status = FAILED
            return result
        configs = {m.get("trial_id"): c for m, errored, c in trials if not errored}
        best = result.best_config
        so_far = BestSoFar(
            result.best_val,
            cell.sign,
            best["config"],
            best["steps"],
            best["trial_id"],
            frozenset(configs),
            cell.space.default_config(),
        )
        title = cell.label if self.study.diagnostics == "all" else None
        args = (FAMILIES[cell.family], self.refs[cell.dataset], self.plan.context(cell), cell.metric, so_far)
        # scoring a kept model asks for no CPU of Ray's: it runs beside the trials rather than after them all
        kept = KEPT_MODEL.options(num_cpus=0, num_returns=2)
        out_ref, diagnostics_ref = kept.remote(*args, self.keeper, self.kept_as(cell), title)
        out = ray.get(out_ref)
        if out is None:  # retrained where Ray finds the cell's resources (a GPU, a cluster node)
            retrain = RETRAINED_MODEL.options(
                num_cpus=cell.resources.cpus_per_trial, num_gpus=cell.resources.gpus_per_trial, num_returns=2
            )
            out_ref, diagnostics_ref = retrain.remote(*args, title)
            out = ray.get(out_ref)
        result.best_val, result.test = out["value"], out["test"]
        result.best_config = best = {
            "config": cell.space.decode(params_of(configs[out["trial_id"]]), self.encoded)
            if out["trial_id"] in configs
            else best["config"],
            "steps": out["steps"],
            "trial_id": out["trial_id"],
        }
        self._log_predictions(cell, trials)
        logged = self._log_best_model(cell, out["model"])
        self.tracker.log_files(cell.key, out["files"], "diagnostics")
        if self.study.diagnostics == "champions":
            self._keep_if_best(cell, result.best_val, diagnostics_ref)
        summary = {
            f"best_{cell.metric}": result.best_val,
            **out["test"],
            **out["defaults_test"],
            "trials": result.trials,
            "trials_early_stopped": result.early_stopped,
            "trials_failed": result.failed,
            "compute_seconds": result.compute_s,
            **resource_seconds(cell, result.compute_s),
        }
        self.tracker.log_metrics(cell.key, summary, step=0)
        best_tags = {BEST_TRIAL: best["trial_id"], BEST_STEPS: best["steps"], BEST_MODEL: out["source"]}
        self.tracker.set_tags(cell.key, {**best_tags, **{BEST_PREFIX + k: v for k, v in best["config"].items()}})
        if logged is not None:
            name = registered_name(self.study.name, cell.dataset)
            result.model_version = self._registered_version(cell, logged)
            if result.model_version is None:
                result.status, result.error = FAILED, "its best model was not logged (tunelab resume logs it)"
                self.tracker.end_run(cell.key, FAILED, {ERROR: result.error})
                return result
            self.tracker.call(self.tracker.client.set_registered_model_alias, name, cell.family, result.model_version)
            test_metric = on_test_split(cell.metric)
            self.tracker.call(
                self.tracker.client.update_model_version,
                name,
                result.model_version,
                f"{cell.label}: {cell.metric} {result.best_val:.4g}, {test_metric} {result.test[test_metric]:.4g}",
            )
        self.tracker.end_run(cell.key, FINISHED)
        return result

    def _keep_if_best(self, cell: Cell, value: float, diagnostics_ref: Any) -> None:
        """Hold (in the object store) the diagnostics of the best cell of each dataset so far, for its figures."""
        with self._lock:
            held = self._best_of.get(cell.dataset)
            if held is None or cell.sign * value < cell.sign * held[0]:
                self._best_of[cell.dataset] = (value, cell, diagnostics_ref)

    def closed(self, cell: Cell) -> None:
        """Once every cell of its dataset is closed, the dataset's champion has its figures drawn (a Ray task)."""
        with self._lock:
            self._open_in[cell.dataset] -= 1
            if self._open_in[cell.dataset] == 0 and cell.dataset in self._best_of:
                self._draw(cell.dataset)

    def _draw(self, dataset: str) -> None:
        _, champion, ref = self._best_of.pop(dataset)
        self._drawing.append((champion, FIGURES.remote(ref, champion.label)))

    def champion_figures(self) -> None:
        """Log the figures of each dataset's champion into its cell run (those not drawn yet are drawn now)."""
        with self._lock:
            for dataset in list(self._best_of):
                self._draw(dataset)
            drawing, self._drawing = self._drawing, []
        for champion, files in zip([c for c, _ in drawing], ray.get([ref for _, ref in drawing])):
            self.tracker.log_files(champion.key, files, "diagnostics")

    def _registered_version(self, cell: Cell, logged: Future) -> Optional[str]:
        """The version the cell's best model was registered as; None when the store did not take it in time."""
        try:
            return str(logged.result(timeout=MODEL_LOG_DEADLINE_S).registered_model_version)
        except Exception as e:  # counted by the tracker as it failed; a deadline passed is counted here
            if isinstance(e, TimeoutError):
                self.tracker.lost.add(
                    1, TimeoutError(f"{cell.label}: best model not logged in {MODEL_LOG_DEADLINE_S:.0f} s")
                )
            print(f"  cell {cell.label}: best model not logged ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
            return None

    def _log_predictions(self, cell: Cell, trials: list[tuple[dict, bool, dict]]) -> None:
        """The validation and test predictions of the cell's best trials, as the keeper held them (``predictions/``)."""
        if not self.study.tracking.keep_predictions:
            return
        try:
            kept = ray.get(self.keeper.take_predictions.remote(self.kept_as(cell)))
        except ray.exceptions.RayError as e:  # the keeper's process died: the cell's predictions with it
            log.warning("%s: the kept predictions are lost (%s)", cell.label, type(e).__name__)
            return
        numbers = {m.get("trial_id"): int(c[NUMBER]) for m, errored, c in trials if not errored}
        configs = {m.get("trial_id"): cell.space.decode(params_of(c), self.encoded) for m, errored, c in trials}
        self.kept_trials[cell.key] = {
            numbers[t]: (*unpack(packed), configs[t], step) for t, (_, step, packed) in kept.items() if t in numbers
        }
        files = stored_predictions.files(kept, numbers, self.datasets[cell.dataset], cell.sign)
        if files:
            self.tracker.log_files(cell.key, files, stored_predictions.DIR)

    def _log_best_model(self, cell: Cell, model: Any) -> Optional[Future]:
        """Queue the cell's best model for logging and registration (None: the study registers none)."""
        if not self.study.tracking.register_models:
            return None
        name = registered_name(self.study.name, cell.dataset)
        return self.tracker.log_model(cell.key, FAMILIES[cell.family], model, self.datasets[cell.dataset], name)
