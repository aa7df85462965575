"""This driver session of a study: the live objects (store, cell runs, trial runs) behind the experiment.

Tune pickles its callbacks with the experiment and unpickles them on a restore; they find the
session they belong to here, by the experiment's path, instead of carrying it.
"""

from __future__ import annotations

import sys
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

from ray.tune.experiment import Trial

from tunelab.run.book import CELL, CellBook
from tunelab.run.cell_end import FAILED, FINISHED, INTERRUPTED, CellResult, CellRuns
from tunelab.run.plan import Cell
from tunelab.run.trial_runs import TrialRuns, last_results
from tunelab.tracking import ERROR, STATUS, Tracker, registered_name

_SESSIONS: dict[str, "Session"] = {}
#: cells closed at once (summary, best model, diagnostics, registration); the driver's threads do not grow with cells
CELL_END_THREADS = 2


def session(key: str) -> "Session":
    return _SESSIONS[key]


class Session:
    """Opens each cell's run with its first trial and closes it (on a small pool) once the book says it is done.

    Args:
        key: the experiment's path, by which pickled Tune objects find this session.
        cells: the study's cells by key.
        tracker, trial_runs, cell_runs: the store, and the trial and cell runs written into it.
        earlier_cells: cell key -> its run in the study run being resumed.
    """

    def __init__(
        self,
        key: str,
        cells: dict[str, Cell],
        tracker: Tracker,
        trial_runs: TrialRuns,
        cell_runs: CellRuns,
        earlier_cells: Optional[dict[str, Any]] = None,
    ):
        self.key, self.cells, self.tracker = key, cells, tracker
        self.trial_runs, self.cell_runs = trial_runs, cell_runs
        self.earlier_cells = earlier_cells or {}
        self.results: dict[str, Future] = {}
        self.opened: set[str] = set()
        self.reconciled = False
        self.book: Optional[CellBook] = None
        self._pool = ThreadPoolExecutor(CELL_END_THREADS, thread_name_prefix="tunelab-cell-end")

    def __enter__(self) -> "Session":
        _SESSIONS[self.key] = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _SESSIONS.pop(self.key, None)
        self._pool.shutdown(wait=True)

    # --- trials ------------------------------------------------------------------------
    def first_step(self, trials: list[Trial], book: Optional[CellBook]) -> None:
        """Take the book as Tune's objects hold it (after a restore: the restored one); on a resume, the trials
        Tune finished while no driver was logging them go into the store."""
        if not self.reconciled:
            self.reconciled, self.book = True, book
            for trial in trials:
                self._open_cell(trial.config[CELL])
            self.trial_runs.reconcile(trials)

    def trial_started(self, trial: Trial) -> None:
        self._open_cell(trial.config[CELL])
        self.trial_runs.start(trial)

    def trial_ended(self, trial: Trial, book: CellBook) -> None:
        key = trial.config[CELL]
        if book.done(key):
            self.close(key)

    # --- cells -------------------------------------------------------------------------
    def _open_cell(self, key: str) -> None:
        if key in self.opened:
            return
        self.opened.add(key)
        earlier = self.earlier_cells.get(key)
        if earlier is None:
            self.cell_runs.open(self.cells[key])
        elif earlier.info.status != FINISHED:
            self.tracker.adopt(key, earlier.info.run_id, reopen=True)

    def close(self, key: str) -> None:
        """Close cell ``key`` (once), on the pool."""
        if key not in self.results:
            self.results[key] = self._pool.submit(self._close, key)

    def _close(self, key: str) -> CellResult:
        cell = self.cells[key]
        earlier = self.earlier_cells.get(key)
        if earlier is not None and earlier.info.status == FINISHED:
            return self.result_from_store(cell, earlier)
        try:
            self._open_cell(key)
            trials = self.trial_runs.trials_of[key]
            result = self.cell_runs.close(cell, last_results(trials, self.trial_runs.stopped_failed))
            self.cell_runs.closed(cell)
            return result
        except Exception as e:  # one broken cell must not take the others down
            self.cell_runs.closed(cell)
            print(
                f"  cell {cell.label} failed: {type(e).__name__}: {e} (traceback in its run's error.txt)",
                file=sys.stderr,
                flush=True,
            )
            self.tracker.log_text(key, traceback.format_exc(), "error.txt")
            self.tracker.end_run(key, FAILED, {ERROR: f"{type(e).__name__}: {e}"})
            return CellResult(cell, status=FAILED, error=f"{type(e).__name__}: {e}")

    def result_from_store(self, cell: Cell, run: Any) -> CellResult:
        """A cell that finished before the run being resumed was cut off: its result as the store holds it."""
        m = run.data.metrics
        r = CellResult(
            cell,
            trials=int(m.get("trials", 0)),
            early_stopped=int(m.get("trials_early_stopped", 0)),
            failed=int(m.get("trials_failed", 0)),
            compute_s=m.get("compute_seconds", 0.0),
            best_val=m.get(f"best_{cell.metric}"),
            test={k: v for k, v in m.items() if k.startswith("test_")},
        )
        if self.cell_runs.study.tracking.register_models:
            try:
                mv = self.tracker.client.get_model_version_by_alias(
                    registered_name(self.cell_runs.study.name, cell.dataset), cell.family
                )
                r.model_version = mv.version if mv.run_id == run.info.run_id else None
            except Exception:  # no alias: the model was never registered
                r.model_version = None
        return r

    # --- the end -----------------------------------------------------------------------
    def nothing_ran(self, trials: list[Trial]) -> None:
        """A restored experiment that had nothing left to run (the driver was killed as its last cells were
        closing): ``trials``, Tune's record of it, go into the store as a first step would; every cell is done."""
        self.first_step(trials, None)

    def _done(self, key: str) -> bool:
        if self.book is not None:
            return self.book.done(key)
        return bool(self.trial_runs.trials_of[key])  # nothing ran: every cell with trials is done

    def finish(self) -> list[CellResult]:
        """Close every cell that is done and has not been closed; the others were cut off (INTERRUPTED)."""
        out = []
        for key, cell in self.cells.items():
            earlier = self.earlier_cells.get(key)
            finished_before = earlier is not None and earlier.info.status == FINISHED
            if key not in self.results and (finished_before or self._done(key)):
                self.close(key)
            out.append(self.results[key].result() if key in self.results else CellResult(cell, status=INTERRUPTED))
        if all(r.status != INTERRUPTED for r in out):
            self.trial_runs.retire_unmatched(self.trial_runs.started)
        else:
            self.trial_runs.kill_open()
            for r in out:
                if r.status == INTERRUPTED and r.cell.key in self.opened:
                    self.tracker.end_run(r.cell.key, "KILLED", {STATUS: "interrupted"})
        return out
