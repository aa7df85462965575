"""What the console shows while a study runs: a line per finished trial, and the leaderboard at the end."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Optional

from trainables.base import on_test_split
from tunelab.run.plan import Cell, Plan

if TYPE_CHECKING:
    from tunelab.run.cell_end import CellResult


class Progress:
    """One line per finished trial (trials done / planned, best so far), not a wall of Ray logs."""

    def __init__(self, plan: Plan, enabled: bool = True, stream: Any = None):
        self.enabled, self.stream = enabled, stream or sys.stdout
        self.planned = plan.study.search.num_samples
        self.done: dict[str, int] = {c.key: 0 for c in plan.cells}
        self.best: dict[str, Optional[float]] = {c.key: None for c in plan.cells}
        self.cells_done = 0
        self._lock = threading.Lock()

    def trial_done(self, cell: Cell, value: Optional[float], outcome: str, quiet: bool = False) -> None:
        with self._lock:
            self.done[cell.key] += 1
            best = self.best[cell.key]
            if value is not None and (best is None or cell.sign * value < cell.sign * best):
                self.best[cell.key] = best = value
            self.cells_done += self.done[cell.key] == self.planned
            if self.enabled and not quiet:
                shown = "—" if best is None else f"{best:.4f}"
                print(
                    f"  [{self.done[cell.key]:>3}/{self.planned}] {cell.label:<40} best {cell.metric} {shown:<8}"
                    f" ({outcome}; cells done {self.cells_done}/{len(self.done)})",
                    file=self.stream,
                    flush=True,
                )


def leaderboard(results: list["CellResult"]) -> str:
    """Per dataset, families ranked by validation score, with the test score of the selected config."""
    lines = []
    for dataset in dict.fromkeys(r.cell.dataset for r in results):
        rows = [r for r in results if r.cell.dataset == dataset]
        metric = rows[0].cell.metric
        test_metric = on_test_split(metric)
        sign = rows[0].cell.sign
        rows.sort(key=lambda r: (r.best_val is None, sign * (r.best_val or 0)))
        lines.append(f"\n{dataset} (ranked by {metric}; test = score of the selected configuration)")
        lines.append(
            f"  {'family':<24}{metric:>14}{test_metric:>16}{'trials':>8}{'early':>7}{'failed':>8}{'compute s':>11}"
        )
        for r in rows:
            val = "—" if r.best_val is None else f"{r.best_val:.4f}"
            test = "—" if test_metric not in r.test else f"{r.test[test_metric]:.4f}"
            lines.append(
                f"  {r.cell.family:<24}{val:>14}{test:>16}{r.trials:>8}{r.early_stopped:>7}{r.failed:>8}"
                f"{r.compute_s:>11.1f}"
            )
    return "\n".join(lines)
