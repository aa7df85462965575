"""The study's one Ray Tune experiment: one trainable for every cell, its resources a function of the
trial's cell, the cell-keyed searcher and scheduler, and the trial logger."""

from __future__ import annotations

import math
from typing import Any, Callable

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from trainables import FAMILIES
from trainables.trial import run_trial
from tunelab.run.book import CELL, Budget, CellBook, params_of
from tunelab.run.cell_end import CellRuns
from tunelab.run.plan import Cell, Plan
from tunelab.run.scheduler import CellScheduler
from tunelab.run.searcher import CellSearcher, SubSearch
from tunelab.run.trial_log import TrialLogger
from tunelab.search import CONTINUOUS_ONLY, PAUSING, SCHEDULERS


def experiment_path(plan: Plan) -> str:
    return f"{plan.study.storage().rstrip('/')}/{plan.study.name}"


def trainable(plan: Plan, runs: CellRuns, refs: dict[str, Any]) -> Any:
    """One function trainable for every cell: it runs the trial's cell's family on the cell's data."""
    s = plan.study.search
    encoded, checkpoint, keeper = s.searcher in CONTINUOUS_ONLY, s.scheduler in PAUSING, runs.keeper
    data_refs = {name: [ref] for name, ref in refs.items()}  # lists, so Tune hands trials the reference, not a copy
    per_cell = {
        c.key: (FAMILIES[c.family], plan.context(c), c.metric, c.space, runs.kept_as(c), c.dataset) for c in plan.cells
    }
    resources = {c.key: {"cpu": c.resources.cpus_per_trial, "gpu": c.resources.gpus_per_trial} for c in plan.cells}
    keep_predictions = plan.study.tracking.keep_predictions

    def run_cell_trial(config: dict) -> None:
        family_cls, ctx, metric, space, kept_as, dataset = per_cell[config[CELL]]
        run_trial(
            space.decode(params_of(config), encoded),
            family_cls=family_cls,
            data_ref=data_refs[dataset],
            ctx=ctx,
            metric=metric,
            checkpoint_every_step=checkpoint,
            keeper=keeper,
            cell=kept_as,
            keep_predictions=keep_predictions,
        )

    return tune.with_resources(run_cell_trial, lambda config: resources[config[CELL]])


def searcher_and_scheduler(plan: Plan) -> tuple[CellSearcher, CellScheduler, CellBook]:
    s = plan.study.search
    encoded = s.searcher in CONTINUOUS_ONLY
    book = CellBook(
        {c.key: Budget(s.num_samples, s.max_concurrent_trials, s.time_budget_s) for c in plan.cells},
        plan.study.max_concurrent_cells,
    )
    subs = {
        c.key: SubSearch(
            s.searcher,
            c.space.to_tune(continuous_only=encoded),
            c.metric,
            c.mode,
            c.seed,
            s.max_concurrent_trials,
            s.startup_trials,
            first_points(c, plan.warm.get(c.key, []), encoded),
        )
        for c in plan.cells
    }
    factories = {
        c.key: _scheduler_factory(s.scheduler, c.space.steps, s.grace_period, s.reduction_factor, c.metric, c.mode)
        for c in plan.cells
    }
    scheduler = CellScheduler(
        factories, book, buffered=s.scheduler not in ("hyperband", "bohb"), trial_timeout_s=s.trial_timeout_s
    )
    return CellSearcher(subs, book, scheduler), scheduler, book


def first_points(cell: Cell, warm: list, encoded: bool) -> list[dict]:
    """What the cell's searcher evaluates first: the family's defaults (the cell's first trial, as without a warm
    start: benchmarks/warm_start.py found that order no worse), then the warm start's configurations."""
    points = [cell.space.default_point(encoded)] if cell.space.defaults else []
    return points + [p for p in (cell.space.point(s.config, encoded) for s in warm) if p not in points]


def _scheduler_factory(name: str, steps: int, grace: int, rf: int, metric: str, mode: str) -> Callable:
    def make() -> Any:
        scheduler = SCHEDULERS[name](steps, grace, rf)
        scheduler.set_search_properties(metric, mode)
        return scheduler

    return make


def max_pending_trials(plan: Plan) -> int:
    """How many trials may wait for resources at once: per resource shape of the study's cells, about the trials
    of that shape the cluster runs at once (GPU trials do not wait behind CPU trials), never more than the cells
    may run at once; so that each cell's searcher proposes as late as it can (with the results before)."""
    res, s = ray.cluster_resources(), plan.study.search
    pending = 0
    for cpus, gpus in {(c.resources.cpus_per_trial, c.resources.gpus_per_trial) for c in plan.cells}:
        fits = min(res.get("CPU", 0) / cpus if cpus else math.inf, res.get("GPU", 0) / gpus if gpus else math.inf)
        pending += math.ceil(1.1 * fits) if math.isfinite(fits) else 16
    cells = min(len(plan.cells), plan.study.max_concurrent_cells or len(plan.cells))
    return max(1, min(cells * min(s.max_concurrent_trials, s.num_samples), max(4, pending)))


def new_tuner(plan: Plan, fn: Any, session_key: str) -> tune.Tuner:
    s = plan.study.search
    searcher, scheduler, book = searcher_and_scheduler(plan)
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            num_samples=s.num_samples * len(plan.cells), search_alg=searcher, scheduler=scheduler, reuse_actors=True
        ),  # actors reused across cells
        run_config=tune.RunConfig(
            name=plan.study.name,
            storage_path=plan.study.storage(),
            verbose=0,
            callbacks=[TrialLogger(session_key, book), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def restored_tuner(plan: Plan, fn: Any) -> tune.Tuner:
    """The experiment as Tune's storage holds it: its searcher, scheduler, book and logger come back with it."""
    return tune.Tuner.restore(experiment_path(plan), trainable=fn, resume_unfinished=True, resume_errored=False)
