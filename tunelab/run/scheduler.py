"""The cell-keyed scheduler: one FIFO / ASHA / HyperBand / BOHB scheduler per cell.

Each trial goes to its cell's scheduler, which sees only that cell's trials (a cell-filtered view
of Tune's controller): rungs and brackets never compare the scores of two cells, and each cell
has its own metric and mode. A cell whose time budget is spent has its running trials stopped, and so is a trial
that reports nothing for ``trial_timeout_s`` (its id goes into the book's ``timed_out``: its run ends FAILED).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ray import cloudpickle
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tunelab.run.book import CELL, CellBook

#: schedulers whose state is keyed by trial id, so that it can be saved and restored with the experiment;
#: HyperBand's and BOHB's brackets hold Trial objects and are rebuilt from the restored trials instead
CARRIED = (ASHAScheduler,)


class _CellView:
    """Tune's controller as one cell's scheduler sees it: that cell's trials only."""

    def __init__(self, controller: Any, trials: list[Trial]):
        self._controller, self._trials = controller, trials

    def get_trials(self) -> list[Trial]:
        return self._trials

    def get_live_trials(self) -> set[Trial]:
        return {t for t in self._trials if not t.is_finished()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class CellScheduler(TrialScheduler):
    """Routes every scheduler call to the trial's cell's own scheduler.

    Args:
        factories: per cell key, a function making its scheduler (metric and mode set).
        book: the cells' budgets; a cell out of time has its trials stopped.
        buffered: whether every cell's scheduler accepts buffered results (HyperBand does not).
        trial_timeout_s: a running trial that reports nothing for this long is stopped (None: never).
    """

    def __init__(
        self,
        factories: dict[str, Callable[[], TrialScheduler]],
        book: CellBook,
        buffered: bool = True,
        trial_timeout_s: Optional[float] = None,
    ):
        super().__init__()
        self.factories, self.book, self.trial_timeout_s = factories, book, trial_timeout_s
        self._heard: dict[str, float] = {}  # running trial id -> when it started or last reported (monotonic)
        self._supports_buffered_results = buffered
        self._schedulers: dict[str, TrialScheduler] = {}
        self._trials: dict[str, list[Trial]] = {}  # cell key -> its trials, in the order Tune added them

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        return True  # each cell's scheduler has its cell's metric and mode

    def _route(self, controller: Any, trial: Trial) -> tuple[TrialScheduler, _CellView]:
        key = trial.config[CELL]
        if key not in self._schedulers:
            self._schedulers[key] = self.factories[key]()
        return self._schedulers[key], _CellView(controller, self._trials.setdefault(key, []))

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        view.get_trials().append(trial)
        scheduler.on_trial_add(view, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self._heard[trial.trial_id] = time.monotonic()
        scheduler, view = self._route(tune_controller, trial)
        decision = scheduler.on_trial_result(view, trial, result)
        if decision != TrialScheduler.STOP and not self.book.time_left(trial.config[CELL]):
            return TrialScheduler.STOP
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_complete(view, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_error(view, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_remove(view, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Optional[Trial]:
        """The first trial any cell's scheduler wants to (re)start; Tune starts pending trials anyway,
        so only cells with a trial waiting are asked. (Tune asks on every step of its loop: hung trials are
        stopped here.)"""
        if self.trial_timeout_s is not None:
            self._stop_hung(tune_controller)
        for key, trials in self._trials.items():
            if any(t.status in (Trial.PENDING, Trial.PAUSED) for t in trials):
                chosen = self._schedulers[key].choose_trial_to_run(_CellView(tune_controller, trials))
                if chosen is not None:
                    return chosen
        return None

    def _stop_hung(self, tune_controller: Any) -> None:
        now, live = time.monotonic(), list(tune_controller.get_live_trials())  # stop_trial changes the set
        running = {t.trial_id for t in live if t.status == Trial.RUNNING}
        self._heard = {tid: at for tid, at in self._heard.items() if tid in running}
        for trial in live:
            if trial.trial_id in running and now - self._heard.setdefault(trial.trial_id, now) > self.trial_timeout_s:
                self.book.timed_out[trial.trial_id] = (
                    f"reported nothing for {self.trial_timeout_s:g} s (search.trial_timeout_s): stopped"
                )
                tune_controller.stop_trial(trial)

    def debug_string(self) -> str:
        return f"one scheduler per cell ({len(self._schedulers)} cells started)"

    # --- saved with the experiment, by the cell searcher ---------------------------------
    def state(self) -> dict[str, bytes]:
        return {k: cloudpickle.dumps(s) for k, s in self._schedulers.items() if isinstance(s, CARRIED)}

    def load(self, state: dict[str, bytes]) -> None:
        """Take the saved schedulers back; the trials Tune restored meanwhile are added to them again."""
        for key, blob in state.items():
            if key not in self.factories:
                continue
            scheduler = cloudpickle.loads(blob)
            for trial in self._trials.get(key, []):
                scheduler.on_trial_add(_CellView(None, self._trials[key]), trial)
            self._schedulers[key] = scheduler
