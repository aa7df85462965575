"""The run core: a study's cells planned, run as one Ray Tune experiment, tracked, resumed.

- ``plan``: cells and the plan (no Ray)
- ``book``, ``searcher``, ``scheduler``: each cell's budget, searcher and scheduler inside the one experiment
- ``experiment``: the trainable, its resources and the Tuner
- ``trial_runs``, ``cell_end``, ``trial_log``, ``session``: trials and cells as MLflow runs
- ``runner``, ``resume``, ``console``: running, resuming and syncing a study; what the console shows
"""

from tunelab.run.cell_end import FAILED, FINISHED, INTERRUPTED, CellResult
from tunelab.run.console import leaderboard
from tunelab.run.plan import Cell, Plan, plan_study
from tunelab.run.resume import sync_study
from tunelab.run.runner import StudyRunner, run_study

__all__ = ["FAILED", "FINISHED", "INTERRUPTED", "Cell", "CellResult", "Plan", "StudyRunner", "leaderboard",
           "plan_study", "run_study", "sync_study"]
