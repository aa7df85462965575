"""The work a cell does beyond its trials, run as a Ray task where the cell's resources are: its best model
(as the best trial kept it, or retrained), scored on the test split, with its diagnostics and, on request,
their figures. The driver only logs what comes back."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from typing import Any, Optional

import ray

from trainables.base import Context, Data, ModelFamily
from trainables.trial import refit
from tunelab import diagnostics
from tunelab.diagnostics import diagnose, refit_with_diagnostics

log = logging.getLogger("tunelab")


@dataclass(frozen=True)
class BestSoFar:
    """What the driver counted from the trials' last results: the best value, and the configuration to retrain
    (its trial, steps) if the kept model is lost. ``trials``: the ids of the trials that did not fail.
    ``defaults``: the family's default configuration, trained to the full budget and scored on test beside the
    best (``default_test_*``: what tuning gained); empty: none to compare with."""

    value: float
    sign: int
    config: dict
    steps: int
    trial_id: str
    trials: frozenset
    defaults: dict = field(default_factory=dict)


def kept_model(
    family: type[ModelFamily],
    data: Data,
    ctx: Context,
    metric: str,
    best: BestSoFar,
    keeper: Any,
    kept_as: str,
    title: Optional[str],
) -> tuple[Optional[dict], Optional[dict]]:
    """The model the best trial reported, as it kept it, scored: see ``_finish``; ``(None, None)`` where it is
    lost (the keeper died, its trial failed later, or it finished before an interrupted run was resumed)."""
    try:
        kept = ray.get(keeper.take.remote(kept_as)) if keeper is not None else None
    except ray.exceptions.RayError as e:  # the keeper's process died: retrain, as for any lost model
        log.warning("%s: the kept best model is lost (%s); retraining it", kept_as, type(e).__name__)
        kept = None
    if kept is None or kept[1] not in best.trials or best.sign * kept[0] > best.sign * best.value:
        return None, None
    value, trial_id, steps, curve, blob = kept
    out = diagnose(family, data, pickle.loads(blob), ctx, metric, curve)
    return _finish(out, "trial", value, trial_id, steps, title, _defaults_test(family, data, ctx, best))


def retrained_model(
    family: type[ModelFamily], data: Data, ctx: Context, metric: str, best: BestSoFar, title: Optional[str]
) -> tuple[dict, dict]:
    """The best configuration retrained with the same seed and steps, scored: see ``_finish``."""
    out = refit_with_diagnostics(family, data, best.config, ctx, best.steps, metric)
    defaults_test = _defaults_test(family, data, ctx, best)
    return _finish(out, "retrained", best.value, best.trial_id, best.steps, title, defaults_test)


def _defaults_test(family: type[ModelFamily], data: Data, ctx: Context, best: BestSoFar) -> dict:
    """The default configuration's test scores as ``default_test_<metric>`` (trained as the refit is)."""
    if not best.defaults:
        return {}
    try:
        test = refit(family, data, best.defaults, ctx, ctx.steps)["test"]
    except Exception as e:  # what tuning bought is left out for this cell; its best model is what matters
        log.warning(
            "%s: the defaults %s could not be trained (%s: %s)", family.name, best.defaults, type(e).__name__, e
        )
        return {}
    return {f"default_{k}": v for k, v in test.items()}


def _finish(
    out: dict, source: str, value: float, trial_id: str, steps: int, title: Optional[str], defaults_test: dict
) -> tuple[dict, dict]:
    """``({"model", "test", "defaults_test", "files", "source", "value", "trial_id", "steps"}, diagnostics)``:
    ``files`` holds ``importance.json``, and the figures with a ``title``."""
    out.update(source=source, value=value, trial_id=trial_id, steps=steps, defaults_test=defaults_test)
    d = out.pop("diagnostics")
    out["files"] = diagnostics.figures(d, title) if title else {"importance.json": diagnostics.importance_json(d)}
    return out, d


def figures(d: dict, title: str) -> dict[str, bytes]:
    """The figures of a cell's diagnostics (for a dataset's champion, rendered after the study)."""
    return diagnostics.figures(d, title)
