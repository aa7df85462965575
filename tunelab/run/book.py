"""Each cell's budget as the study spends it: trials suggested, in flight, ended; active time; done or not.

One ``CellBook`` is shared by the cell-keyed searcher (which spends it), the cell-keyed scheduler
(which stops a cell's trials when its time is up) and the trial logger (which closes a cell once its
last trial ended). All three are pickled together in Tune's ``tuner.pkl``, so they share the same
book again after a restore; the searcher saves and restores its contents with the experiment.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

#: keys the searcher adds to every trial's config: which cell it belongs to, its number within the cell
CELL, NUMBER = "__cell", "__trial"


def params_of(config: dict) -> dict:
    """A trial's hyperparameters: its config without the keys the study adds."""
    return {k: v for k, v in config.items() if k not in (CELL, NUMBER)}


@dataclass(frozen=True)
class Budget:
    """What a cell may spend: trials in all, trials at once, seconds of active time (None: no limit)."""

    samples: int
    concurrent: int
    time_s: Optional[float] = None


@dataclass
class _Spent:
    suggested: int = 0
    ended: int = 0
    paused: int = 0  # paused by a scheduler that says so (BOHB): not counted against the concurrency cap
    exhausted: bool = False  # its searcher has nothing more to suggest
    elapsed_s: float = 0.0  # active time in earlier driver sessions
    started_at: Optional[float] = field(default=None, repr=False)  # monotonic, this session

    @property
    def in_flight(self) -> int:
        return self.suggested - self.ended


class CellBook:
    """Per cell, in plan order: its budget and what it spent.

    Which cell gets the next trial (``candidates``): among the cells that may take one (not done,
    under their sample count, concurrency cap and time budget; with ``max_active_cells``, a new
    cell only while fewer cells than that are active), the one with the fewest trials in flight,
    then the first in plan order. Cells thus share the cluster evenly, and among equals the
    earlier cells finish first, so that results stream in while later cells run.
    """

    def __init__(self, budgets: dict[str, Budget], max_active_cells: Optional[int] = None):
        self.budgets = budgets
        self.max_active_cells = max_active_cells
        self.spent: dict[str, _Spent] = {key: _Spent() for key in budgets}
        self._order = list(budgets)
        self.timed_out: dict[str, str] = {}  # trial id -> why the scheduler stopped it (nothing reported in time)
        self._first_open = 0  # every cell before this index is done

    # --- asking ------------------------------------------------------------------------
    def time_left(self, key: str) -> bool:
        limit = self.budgets[key].time_s
        return limit is None or self._elapsed(self.spent[key]) < limit

    def open_for_more(self, key: str) -> bool:
        s = self.spent[key]
        return not s.exhausted and s.suggested < self.budgets[key].samples and self.time_left(key)

    def done(self, key: str) -> bool:
        return self.spent[key].in_flight == 0 and not self.open_for_more(key)

    def active(self, key: str) -> bool:
        return self.spent[key].suggested > 0 and not self.done(key)

    def all_done_suggesting(self) -> bool:
        return not any(self.open_for_more(k) for k in self._order[self._first_open :])

    def candidates(self) -> list[str]:
        """The cells that may take a trial now, best first (see the class's docstring)."""
        while self._first_open < len(self._order) and self.done(self._order[self._first_open]):
            self._first_open += 1
        keys = self._order[self._first_open :]
        room = math.inf
        if self.max_active_cells is not None:
            room = self.max_active_cells - sum(1 for k in keys if self.active(k))
        eligible = []
        for k in keys:
            s = self.spent[k]
            if not self.open_for_more(k) or s.in_flight - s.paused >= self.budgets[k].concurrent:
                continue
            if s.suggested == 0:  # a cell that has not started: it takes a place among the active cells
                if room <= 0:
                    continue
                room -= 1
            eligible.append(k)
        return sorted(eligible, key=lambda k: self.spent[k].in_flight - self.spent[k].paused)  # stable: plan order

    # --- spending ----------------------------------------------------------------------
    def suggested(self, key: str) -> int:
        """Count one more trial for ``key``; returns its number within the cell (1, 2, ...)."""
        s = self.spent[key]
        if s.started_at is None:
            s.started_at = time.monotonic()
        s.suggested += 1
        return s.suggested

    def ended(self, key: str) -> None:
        self.spent[key].ended += 1

    def paused(self, key: str, paused: bool) -> None:
        self.spent[key].paused += 1 if paused else -1

    def exhaust(self, key: str) -> None:
        self.spent[key].exhausted = True

    # --- saving ------------------------------------------------------------------------
    def state(self) -> dict:
        out = {}
        for k, s in self.spent.items():
            row = asdict(s)
            row["elapsed_s"] = self._elapsed(s)
            row["started_at"] = None
            row["paused"] = 0  # paused trials come back pending after a restore
            out[k] = row
        return out

    def load(self, state: dict) -> None:
        """Take what an earlier driver session spent; its trials in flight are Tune's to resume."""
        for k, row in state.items():
            if k in self.spent:
                self.spent[k] = _Spent(**row)
                if self.spent[k].suggested:  # its clock goes on while this session runs its trials
                    self.spent[k].started_at = time.monotonic()
        self._first_open = 0

    def _elapsed(self, s: _Spent) -> float:
        return s.elapsed_s + (time.monotonic() - s.started_at if s.started_at is not None else 0.0)
