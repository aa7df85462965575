"""The work a cell does beyond its trials, run as a Ray task where the cell's resources are: its best model
(as the best trial kept it, or retrained), scored on the test split, with its diagnostics and, on request,
their figures. The driver only logs what comes back."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import Any, Optional

import ray

from trainables.base import Context, Data, ModelFamily
from tunelab import diagnostics
from tunelab.diagnostics import diagnose, refit_with_diagnostics

log = logging.getLogger("tunelab")


@dataclass(frozen=True)
class BestSoFar:
    """What the driver counted from the trials' last results: the best value, and the configuration to retrain
    (its trial, steps) if the kept model is lost. ``trials``: the ids of the trials that did not fail."""

    value: float
    sign: int
    config: dict
    steps: int
    trial_id: str
    trials: frozenset


def best_model(family: type[ModelFamily], data: Data, ctx: Context, metric: str, best: BestSoFar, keeper: Any,
               kept_as: str, title: Optional[str]) -> tuple[dict, dict]:
    """``({"model", "test", "files", "source", "value", "trial_id", "steps"}, diagnostics)``: ``files`` holds
    ``importance.json``, and the figures with a ``title``. The model the best trial reported, as it kept it
    (``source`` "trial"); a trial that failed later, a best that finished before an interrupted run was resumed,
    or a keeper that died: retrained ("retrained")."""
    try:
        kept = ray.get(keeper.take.remote(kept_as)) if keeper is not None else None
    except ray.exceptions.RayError as e:  # the keeper's process died: retrain, as for any lost model
        log.warning("%s: the kept best model is lost (%s); retraining it", kept_as, type(e).__name__)
        kept = None
    if kept is not None and kept[1] in best.trials and best.sign * kept[0] <= best.sign * best.value:
        value, trial_id, steps, curve, blob = kept
        out = {**diagnose(family, data, pickle.loads(blob), ctx, metric, curve), "source": "trial"}
    else:
        value, trial_id, steps = best.value, best.trial_id, best.steps
        out = {**refit_with_diagnostics(family, data, best.config, ctx, steps, metric), "source": "retrained"}
    out.update(value=value, trial_id=trial_id, steps=steps)
    d = out.pop("diagnostics")
    out["files"] = diagnostics.figures(d, title) if title else {"importance.json": diagnostics.importance_json(d)}
    return out, d


def figures(d: dict, title: str) -> dict[str, bytes]:
    """The figures of a cell's diagnostics (for a dataset's champion, rendered after the study)."""
    return diagnostics.figures(d, title)
