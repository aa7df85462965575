"""Resume and sync: what an earlier run of a study recorded, in MLflow and in Tune's storage."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ray import tune

from tunelab.errors import StudyError
from tunelab.run.book import CELL
from tunelab.run.cell_end import FAILED, FINISHED, STUDY_KEY, CellRuns, count, resource_seconds
from tunelab.run.console import Progress
from tunelab.run.driver_lock import driver_lock
from tunelab.run.experiment import experiment_path
from tunelab.run.plan import Plan
from tunelab.run.trial_runs import TUNE_DONE, TrialRuns, last_results
from tunelab.search import CONTINUOUS_ONLY
from tunelab.study import data_key
from tunelab.tracking import (
    DATASET,
    MODEL,
    PARENT,
    ROLE_CELL,
    ROLE_TRIAL,
    SPLIT,
    STUDY,
    SYNCED,
    Tracker,
    dataset_hash,
    run_filter,
)
from tunelab.tracking.retry import Lost


def earlier_run(tracker: Tracker, plan: Plan) -> tuple[Any, dict[str, Any]]:
    """The study's latest run and its cell runs by cell key; a StudyError if there is none, or the data changed."""
    study, where = plan.study, str(plan.source)
    tracker.open(study.experiment)
    run = tracker.latest_study_run(study.name)
    if run is None:
        raise StudyError(
            where, f"nothing to resume: no run of study '{study.name}' in {tracker.uri} (start it without --resume)"
        )
    for name, data in plan.datasets.items():
        recorded = run.data.tags.get(dataset_hash(name))
        if recorded and recorded != data.content_hash:
            raise StudyError(
                f"{where}: datasets ({name})",
                f"the data changed since the study started (sha256 {data.content_hash[:12]}, "
                f"recorded {recorded[:12]}); resuming would mix results of two datasets",
            )
    cells = {}
    for cell_run in tracker.children(run.info.run_id, ROLE_CELL):
        tags = cell_run.data.tags
        cells[f"{tags[MODEL]}.{data_key(tags[DATASET], int(tags.get(SPLIT, 0)))}"] = cell_run
    return run, cells


def earlier_trial_runs(tracker: Tracker, cell_runs: dict[str, Any]) -> dict[str, list]:
    """The trial runs under each earlier cell run, by cell key (one search for all of them)."""
    key_of = {run.info.run_id: key for key, run in cell_runs.items()}
    out: dict[str, list] = defaultdict(list)
    study = next(iter(cell_runs.values())).data.tags.get(STUDY) if cell_runs else None
    if study is None:
        return out
    for run in tracker.search(run_filter(ROLE_TRIAL, study=study)):
        key = key_of.get(run.data.tags.get(PARENT, ""))
        if key is not None:
            out[key].append(run)
    return out


def check_storage(plan: Plan, earlier_cells: dict[str, Any]) -> None:
    """A study cut off mid-way is resumed from its Tune storage; where that is gone (moved, another machine, a
    mount not there), stop rather than train its cells again from scratch."""
    path = experiment_path(plan)
    unfinished = [c for c in earlier_cells.values() if c.info.status != FINISHED]
    if unfinished and "://" not in path and not Path(path).is_dir():
        raise StudyError(
            "storage_path",
            f"Tune's storage of study '{plan.study.name}', {path}, is not there: resuming needs it (mount it, "
            "or run from the machine that has it)",
        )


def can_restore(plan: Plan) -> bool:
    return tune.Tuner.can_restore(experiment_path(plan))


def sync_study(plan: Plan) -> tuple[dict[str, int], Lost]:
    """Make the MLflow store hold what Tune's storage holds: every trial run, every step, every status.

    For a store that was unreachable during part of a study (or a driver killed and never resumed).
    Returns, per cell, how many trial runs were written, and what the store did not take. Cells Tune finished get
    their summary (best validation score, trial counts) but no best model: ``tunelab resume`` does that.
    """
    tracker = Tracker(plan.study.tracking.resolved_uri())
    study_run, cell_runs = earlier_run(tracker, plan)
    written = {}
    if can_restore(plan):
        with driver_lock(experiment_path(plan), plan.study.name):
            written = _sync(plan, tracker, study_run, cell_runs)
    tracker.close()
    return written, tracker.lost


def _sync(plan: Plan, tracker: Tracker, study_run: Any, cell_runs: dict[str, Any]) -> dict[str, int]:
    tracker.adopt(STUDY_KEY, study_run.info.run_id)
    cells = {c.key: c for c in plan.cells}
    encoded = plan.study.search.searcher in CONTINUOUS_ONLY
    trial_runs = TrialRuns(tracker, cells, plan.study.name, encoded, Progress(plan, enabled=False))
    opener = CellRuns(plan, tracker, {}, None, "")
    written: dict[str, int] = {}
    analysis = tune.ExperimentAnalysis(experiment_path(plan))
    trials_by_cell: dict[str, list] = defaultdict(list)
    for trial in analysis.trials:
        trials_by_cell[trial.config[CELL]].append(trial)
    all_done = all(t.status in TUNE_DONE for t in analysis.trials)
    earlier_trials = earlier_trial_runs(tracker, cell_runs)
    finished_cells = 0
    for key, trials in trials_by_cell.items():
        cell, earlier = cells[key], cell_runs.get(key)
        if earlier is None:
            opener.open(cell)
        else:
            tracker.adopt(key, earlier.info.run_id)
            trial_runs.adopt(key, earlier_trials.get(key, []))
        written[key] = trial_runs.reconcile(trials, analysis.trial_dataframes)
        done = all(t.status in TUNE_DONE for t in trials) and (all_done or len(trials) >= plan.study.search.num_samples)
        finished_cells += done
        if done and (earlier is None or earlier.info.status != FINISHED):
            r = count(cell, last_results(trials), encoded)
            if r.best_val is not None:
                tracker.log_metrics(
                    key,
                    {
                        f"best_{cell.metric}": r.best_val,
                        "trials": r.trials,
                        "trials_early_stopped": r.early_stopped,
                        "trials_failed": r.failed,
                        "compute_seconds": r.compute_s,
                        **resource_seconds(cell, r.compute_s),
                    },
                    step=0,
                )
            tracker.end_run(key, FINISHED if r.best_val is not None else FAILED, {SYNCED: "true"})
    if finished_cells == len(plan.cells) and study_run.info.status in ("RUNNING", "KILLED"):
        tracker.end_run(STUDY_KEY, FINISHED)
    return written
