"""The cell-keyed searcher: one searcher per cell inside the study's one Tune experiment.

Lifecycle, as Tune drives it:

1. ``suggest(trial_id)``: the book names the cells that may take a trial now, best first; the
   first whose own searcher has a configuration gets the trial. Its config carries the cell's key
   and the trial's number within the cell (``book.CELL``, ``book.NUMBER``). ``None``: no cell can
   take one now; ``FINISHED`` only once every cell is done suggesting (Tune latches it).
2. ``on_trial_result`` / ``on_trial_complete`` / ``on_pause`` / ``on_unpause``: routed by trial
   id to the cell's own searcher; the book counts the trial's end.
3. ``save`` / ``restore``: with the experiment. Each cell's searcher is saved through its own
   ``save``; the book and the cell scheduler's state ride along (Tune saves no scheduler state).

A cell's searcher is made on the cell's first trial, so that a thousand-cell study holds only
the searchers of the cells that started.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

from ray import cloudpickle
from ray.tune.search import Searcher

from tunelab.run.book import CELL, NUMBER, CellBook
from tunelab.search import SEARCHERS


@dataclass
class SubSearch:
    """How to make one cell's searcher: the study's searcher by name, over the cell's space."""

    searcher: str
    space: dict  # Tune domains
    metric: str
    mode: str
    seed: int
    concurrent: int
    startup: int
    points: list = field(default_factory=list)

    def make(self) -> Searcher:
        sub = SEARCHERS[self.searcher](self.seed, self.concurrent, list(self.points), self.startup)
        sub.set_search_properties(self.metric, self.mode, dict(self.space))
        return sub


class CellSearcher(Searcher):
    """Routes Tune's searcher calls to each cell's own searcher; the book decides who gets a trial.

    Args:
        subs: per cell key, how to make its searcher.
        book: the cells' budgets, shared with the cell scheduler and the trial logger.
        scheduler_state: an object with ``state()`` and ``load(state)`` whose state is saved with
            this searcher's (the cell scheduler).
    """

    def __init__(self, subs: dict[str, SubSearch], book: CellBook, scheduler_state: Any = None):
        super().__init__()  # metric and mode stay None: each cell has its own (Tune checks them on every result)
        self.subs, self.book, self.scheduler_state = subs, book, scheduler_state
        self._searchers: dict[str, Searcher] = {}
        self._cell_of: dict[str, str] = {}  # trial id -> cell key

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return True  # each cell's cap is the book's; Tune's limiter then only sizes the pending queue

    def cell_of(self, trial_id: str) -> Optional[str]:
        return self._cell_of.get(trial_id)

    def searcher_of(self, key: str) -> Searcher:
        if key not in self._searchers:
            self._searchers[key] = self.subs[key].make()
        return self._searchers[key]

    def suggest(self, trial_id: str) -> Optional[dict]:
        for key in self.book.candidates():
            config = self.searcher_of(key).suggest(trial_id)
            if config == Searcher.FINISHED:
                self.book.exhaust(key)
                continue
            if config is None:  # nothing from this cell now (BayesOpt waiting for results): the next cell
                continue
            self._cell_of[trial_id] = key
            return {**config, CELL: key, NUMBER: self.book.suggested(key)}
        return Searcher.FINISHED if self.book.all_done_suggesting() else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        key = self._cell_of.get(trial_id)
        if key is not None:
            self.searcher_of(key).on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        key = self._cell_of.pop(trial_id, None)
        if key is None:
            return
        self.book.ended(key)
        self.searcher_of(key).on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str) -> None:
        self._paused(trial_id, True)

    def on_unpause(self, trial_id: str) -> None:
        self._paused(trial_id, False)

    def _paused(self, trial_id: str, paused: bool) -> None:
        key = self._cell_of.get(trial_id)
        if key is None:
            return
        self.book.paused(key, paused)
        hook = getattr(self.searcher_of(key), "on_pause" if paused else "on_unpause", None)
        if hook is not None:
            hook(trial_id)

    # --- with the experiment -----------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        searchers = {}
        with tempfile.TemporaryDirectory(prefix="tunelab-searcher-") as d:
            for key, sub in self._searchers.items():
                path = os.path.join(d, "s")
                sub.save(path)
                with open(path, "rb") as f:
                    searchers[key] = f.read()
        state = {
            "book": self.book.state(),
            "cell_of": self._cell_of,
            "searchers": searchers,
            "scheduler": self.scheduler_state.state() if self.scheduler_state is not None else None,
        }
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(state, f)  # HyperOpt's and BOHB's states need cloudpickle

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = cloudpickle.load(f)
        self.book.load(state["book"])
        self._cell_of = dict(state["cell_of"])
        with tempfile.TemporaryDirectory(prefix="tunelab-searcher-") as d:
            for key, blob in state["searchers"].items():
                path = os.path.join(d, "s")
                with open(path, "wb") as f:
                    f.write(blob)
                sub = self.subs[key].make()
                sub.restore(path)
                self._searchers[key] = sub
        if self.scheduler_state is not None and state["scheduler"] is not None:
            self.scheduler_state.load(state["scheduler"])
