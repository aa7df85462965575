"""The study's one Tune callback: every trial event goes to this session's trial and cell runs."""

from __future__ import annotations

from ray import tune
from ray.tune.experiment import Trial

from tunelab.run.book import CellBook
from tunelab.run.session import Session, session


class TrialLogger(tune.Callback):
    """Mirrors every trial into MLflow and closes a cell once its last trial has ended.

    Args:
        session_key: the experiment's path (its session is looked up, never pickled).
        book: the cells' budgets, the same book as the cell searcher's.
    """

    def __init__(self, session_key: str, book: CellBook):
        self.session_key, self.book = session_key, book

    @property
    def session(self) -> Session:
        return session(self.session_key)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info) -> None:
        self.session.first_step(trials, self.book)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.session.trial_started(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        self.session.trial_runs.result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if trial.trial_id in self.book.timed_out:
            if self.session.trial_runs.error(trial, self.book.timed_out[trial.trial_id]):
                self.session.trial_ended(trial, self.book)
        elif self.session.trial_runs.complete(trial):
            self.session.trial_ended(trial, self.book)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if self.session.trial_runs.error(trial):
            self.session.trial_ended(trial, self.book)
