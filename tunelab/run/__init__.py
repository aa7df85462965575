"""The run core: a study's cells planned, run as one Ray Tune experiment, tracked, resumed.

- ``plan``: cells and the plan (no Ray)
- ``book``, ``searcher``, ``scheduler``: each cell's budget, searcher and scheduler inside the one experiment
- ``experiment``: the trainable, its resources and the Tuner
- ``trial_runs``, ``cell_end``, ``cell_work``, ``trial_log``, ``session``: trials and cells as MLflow runs
- ``runner``, ``resume``, ``console``: running, resuming and syncing a study; what the console shows

Names are imported on first use, so that a Ray worker running a cell's task (``cell_work``) imports
neither MLflow nor Tune's driver side.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "FAILED": "cell_end",
    "FINISHED": "cell_end",
    "INTERRUPTED": "cell_end",
    "CellResult": "cell_end",
    "leaderboard": "console",
    "Cell": "plan",
    "Plan": "plan",
    "plan_study": "plan",
    "sync_study": "resume",
    "StudyRunner": "runner",
    "run_study": "runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
