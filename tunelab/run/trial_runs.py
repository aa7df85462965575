"""Trials as MLflow runs: one run per trial, nested under its cell's run; params, a metric per step, status."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Container, Optional

from ray.tune.experiment import Trial

from trainables.base import TASK_METRICS, spread_of
from tunelab.provenance import NodeHardware
from tunelab.run.book import CELL, NUMBER, params_of
from tunelab.run.console import Progress
from tunelab.run.plan import Cell
from tunelab.tracking import (
    ATTEMPTS,
    COMPUTE_S,
    CUDA_VISIBLE_DEVICES,
    DATASET,
    DEFAULT_CONFIG,
    DEVICE,
    ERROR,
    MODEL,
    NODE_HARDWARE_PREFIX,
    NODE_ID,
    ROLE,
    ROLE_RETIRED_TRIAL,
    ROLE_TRIAL,
    SPLIT,
    STATUS,
    STEPS,
    STUDY,
    TRIAL_ID,
    TRIAL_NUMBER,
    WARM_START,
    Tracker,
    trial_run_name,
)

TUNE_DONE = (Trial.TERMINATED, Trial.ERROR)
LAST_KEYS = ("step", "device", "cuda_visible_devices", "time_total_s", "node_id")  # what a trial's end needs


class TrialRuns:
    """The MLflow side of every trial of a study, in this driver session.

    Args:
        tracker: the study's store.
        cells: the study's cells by key.
        study: the study's name.
        encoded: whether trial configs are encoded (a continuous-only searcher).
        progress: the console's progress lines.
    """

    def __init__(
        self,
        tracker: Tracker,
        cells: dict[str, Cell],
        study: str,
        encoded: bool,
        progress: Progress,
        warm: Optional[dict[str, list]] = None,
    ):
        self.tracker, self.cells, self.study, self.encoded, self.progress = tracker, cells, study, encoded, progress
        self.warm = warm or {}  # per cell key, its warm start (``run.warm_start.Start``)
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.killed: set[str] = set()
        self.trials_of: dict[str, list[Trial]] = {k: [] for k in cells}
        self.last: dict[str, dict] = {}
        self.earlier: dict[str, str] = {}  # trial id -> run id, from a run of this study that was cut off
        self.earlier_numbered: dict[tuple[str, int], Any] = {}  # (cell key, trial number) -> that earlier run
        self.opened: set[str] = set()  # trial ids with a run in this session
        self.stopped_failed: set[str] = set()  # trial ids the study stopped as failed (Tune: TERMINATED)
        self.nodes = NodeHardware()

    def adopt(self, key: str, trial_runs: list) -> None:
        """Take over the trial runs of cell ``key`` that an interrupted run of this study left in the store."""
        cell = self.cells[key]
        for run in trial_runs:
            tid = run.data.tags[TRIAL_ID]
            self.earlier[tid] = run.info.run_id
            self.earlier_numbered[(key, int(run.data.tags.get(TRIAL_NUMBER, 0)))] = run
            if run.info.status in ("FINISHED", "FAILED"):
                self.ended.add(tid)
                self.progress.trial_done(
                    cell, run.data.metrics.get(cell.metric), run.data.tags.get(STATUS, "completed"), quiet=True
                )

    def known(self, trial: Trial) -> None:
        """Index a trial under its cell (each once)."""
        if trial.trial_id not in self.started:
            self.started.add(trial.trial_id)
            self.trials_of[trial.config[CELL]].append(trial)

    def start(self, trial: Trial) -> None:
        tid, cell = trial.trial_id, self.cells[trial.config[CELL]]
        self.known(trial)
        if tid in self.opened:  # resumed after a pause (hyperband)
            return
        n = trial.config[NUMBER]
        params = cell.space.decode(params_of(trial.config), self.encoded)
        if tid not in self.earlier:
            self._match_unsaved(cell, n, tid, params)
        if tid in self.earlier:  # cut off earlier: its run goes on
            self.tracker.adopt(tid, self.earlier.pop(tid), reopen=True)
            self.opened.add(tid)
            self.ended.discard(tid)
            return
        tags = {
            ROLE: ROLE_TRIAL,
            MODEL: cell.family,
            DATASET: cell.dataset_name,
            SPLIT: cell.split,
            STUDY: self.study,
            TRIAL_ID: tid,
            TRIAL_NUMBER: n,
        }
        if cell.space.defaults and all(params.get(k) == v for k, v in cell.space.defaults.items()):
            tags[DEFAULT_CONFIG] = "true"
        for start in self.warm.get(cell.key, []):
            if all(params.get(k) == v for k, v in cell.space.point(start.config).items()):
                tags[WARM_START] = start.origin
                break
        self.opened.add(tid)
        self.tracker.start_run(tid, trial_run_name(cell.label, n), tags, parent=cell.key, params=params)

    def _match_unsaved(self, cell: Cell, n: int, tid: str, params: dict) -> None:
        """A trial the killed driver had started after Tune last saved the experiment comes again, under a new
        trial id, as the same number of its cell: it goes on in the same run where its configuration is the same
        (a seeded searcher restored to the same state proposes it again) or where nothing of it was logged;
        otherwise that run is retired."""
        run = self.earlier_numbered.pop((cell.key, n), None)
        if run is None or run.data.tags[TRIAL_ID] not in self.earlier:
            return
        old_tid = run.data.tags[TRIAL_ID]
        del self.earlier[old_tid]
        self.ended.discard(old_tid)
        logged = {k: str(v) for k, v in params.items()}
        if run.data.params == logged or not (run.data.params or run.data.metrics):
            # the same configuration; or a run whose first batch (params, metrics) never landed: MLflow's client
            # creates the run a moment before it logs anything into it
            self.earlier[tid] = run.info.run_id
            self.tracker.set_tags(tid, {TRIAL_ID: tid})
            if not run.data.params:
                self.tracker.log_params(tid, logged)
        else:
            self.retire(run.info.run_id, f"its number came again as trial {tid} with other params: {logged}")

    def retire(self, run_id: str, why: str = "") -> None:
        """A run of a trial that Tune's saved experiment does not know, and will not run again."""
        self.tracker.adopt(run_id, run_id)
        status = "not in the resumed experiment" + (f"; {why}" if why else "")
        self.tracker.set_tags(run_id, {ROLE: ROLE_RETIRED_TRIAL, STATUS: status})
        self.tracker.end_run(run_id, "KILLED")

    def retire_unmatched(self, known: set[str]) -> None:
        """Retire every earlier run whose trial Tune does not know (``known``: the trial ids of the experiment)."""
        for tid, run_id in list(self.earlier.items()):
            if tid not in known:
                del self.earlier[tid]
                self.retire(run_id)

    def result(self, trial: Trial, result: dict) -> None:
        cell = self.cells[trial.config[CELL]]
        names = [name for m in TASK_METRICS[cell.task] for name in (m, spread_of(m))]  # with folds: their spread too
        metrics = {k: result[k] for k in names if k in result}
        self.tracker.log_metrics(
            trial.trial_id,
            metrics,
            step=int(result.get("step", result["training_iteration"])),
            timestamp_ms=int(1000 * result.get("timestamp", 0)) or None,
        )
        self.last[trial.trial_id] = {k: result[k] for k in (*LAST_KEYS, cell.metric) if k in result}

    def complete(self, trial: Trial) -> bool:
        """End the trial's run; False when it had ended already."""
        tid, cell = trial.trial_id, self.cells[trial.config[CELL]]
        if tid in self.ended or tid in self.killed:
            return False
        self._end(tid, cell)
        last = self.last.pop(tid, {})
        steps = int(last.get("step", 0))
        outcome = "early_stopped" if steps < cell.space.steps else "completed"
        self.tracker.end_run(
            tid,
            "FINISHED",
            {
                STATUS: outcome,
                STEPS: steps,
                ATTEMPTS: trial.num_failures + 1,
                COMPUTE_S: round(float(last.get("time_total_s", 0.0)), 4),
                DEVICE: last.get("device", ""),
                CUDA_VISIBLE_DEVICES: last.get("cuda_visible_devices", ""),
                NODE_ID: last.get("node_id", ""),
                **{NODE_HARDWARE_PREFIX + k: v for k, v in self.nodes.of(last.get("node_id", "")).items()},
            },
        )
        self.progress.trial_done(cell, last.get(cell.metric), outcome)
        return True

    def error(self, trial: Trial, why: Optional[str] = None) -> bool:
        """End the trial's run FAILED, with Tune's error or ``why`` (the study stopped it); False when it had ended."""
        tid, cell = trial.trial_id, self.cells[trial.config[CELL]]
        if tid in self.ended:
            return False
        self._end(tid, cell)
        self.last.pop(tid, None)
        if why:
            self.stopped_failed.add(tid)
        text = why or _trial_error_text(trial)
        message = next((line for line in reversed(text.strip().splitlines()) if "Error" in line), text.strip()[-500:])
        self.tracker.log_text(tid, text, "error.txt")
        self.tracker.end_run(tid, "FAILED", {STATUS: "failed", ERROR: message, ATTEMPTS: trial.num_failures})
        self.progress.trial_done(cell, None, "failed")
        return True

    def _end(self, tid: str, cell: Cell) -> None:
        self.ended.add(tid)

    def kill_open(self) -> None:
        """End the runs of trials cut off by an interrupt as KILLED (``resume`` reopens them)."""
        for tid in self.opened:
            if tid not in self.ended and tid not in self.killed:
                self.killed.add(tid)
                self.tracker.end_run(tid, "KILLED", {STATUS: "interrupted"})

    def reconcile(self, trials: list[Trial], history: Optional[dict] = None) -> int:
        """Bring into the store every trial Tune finished while nobody logged it; returns how many.

        ``history`` (trial id -> Tune's progress table) replays every reported step; without it the
        trial's last result is logged. Metrics carry Tune's own timestamps, so a step already in the
        store is not stored twice.
        """
        n = 0
        for trial in trials:
            self.known(trial)
            if trial.status not in TUNE_DONE or trial.trial_id in self.ended:
                continue
            self.start(trial)
            rows = history.get(trial.trial_id) if history else None
            results = rows.to_dict("records") if rows is not None and len(rows) else [trial.last_result]
            for result in results:
                if result and "training_iteration" in result:
                    self.result(trial, result)
            if trial.status == Trial.ERROR:
                self.error(trial)
            else:
                self.complete(trial)
            n += 1
        return n


def _trial_error_text(trial: Trial) -> str:
    """The trial's traceback: Tune writes it to the trial's local directory before storage sees it."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text()
    return str(trial.get_error() or "unknown error")


def last_results(trials: list[Trial], failed: Container[str] = ()) -> list[tuple[dict, bool, dict]]:
    """(last result, errored, config) per trial: what a cell's summary is counted from (``failed``: ids of trials
    the study stopped as failed)."""
    return [(t.last_result or {}, t.status == Trial.ERROR or t.trial_id in failed, t.config) for t in trials]
