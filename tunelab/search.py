"""Searchers and schedulers by name: the registry the study's ``search`` section picks from."""

from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, HyperBandScheduler
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain


class RandomSearch(Searcher):
    """Independent seeded samples of the space, after the points to evaluate first."""

    def __init__(self, seed: int, points: list[dict] | None = None):
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self._points = list(points or [])
        self._space: dict = {}

    def set_search_properties(self, metric, mode, config: dict, **spec) -> bool:
        super().set_search_properties(metric, mode, config, **spec)
        self._space = config
        return True

    def suggest(self, trial_id: str) -> dict:
        point = self._points.pop(0) if self._points else {}  # a point names some parameters: the rest are drawn
        return {n: point[n] if n in point else self._draw(d) for n, d in self._space.items()}

    def _draw(self, domain: Any) -> Any:
        return domain.sample(random_state=self._rng) if isinstance(domain, Domain) else domain

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def _random(seed: int, max_concurrent: int, points: list[dict], startup: int) -> Any:
    return RandomSearch(seed, points)


def _optuna(seed: int, max_concurrent: int, points: list[dict], startup: int) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), points_to_evaluate=points or None
    )


def _hyperopt(seed: int, max_concurrent: int, points: list[dict], startup: int) -> Any:
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=seed, n_initial_points=startup, points_to_evaluate=points or None)


def _bayesopt(seed: int, max_concurrent: int, points: list[dict], startup: int) -> Any:
    from ray.tune.search.bayesopt import BayesOptSearch

    return BayesOptSearch(random_state=seed, verbose=0, random_search_steps=startup, points_to_evaluate=points or None)


def _bohb(seed: int, max_concurrent: int, points: list[dict], startup: int) -> Any:
    from ray.tune.search.bohb import TuneBOHB

    return TuneBOHB(seed=seed, points_to_evaluate=points or None)


#: name -> factory(seed, max_concurrent, points to evaluate first,
#: random trials before modelling (Search.startup_trials);
#: BOHB models once its own Hyperband brackets have enough results); each cell's concurrency is the cell searcher's
SEARCHERS: dict[str, Callable[[int, int, list, int], Any]] = {
    "random": _random,
    "optuna": _optuna,
    "hyperopt": _hyperopt,
    "bayesopt": _bayesopt,
    "bohb": _bohb,
}
#: searchers that only take floats: integers and choices are encoded (see spaces.Param.domain)
CONTINUOUS_ONLY = {"bayesopt"}

#: name -> factory(max_t, grace_period, reduction_factor)
SCHEDULERS: dict[str, Callable[[int, int, int], Any]] = {
    "fifo": lambda max_t, grace, rf: FIFOScheduler(),
    "asha": lambda max_t, grace, rf: ASHAScheduler(
        time_attr="training_iteration", max_t=max_t, grace_period=min(grace, max_t), reduction_factor=rf
    ),
    "hyperband": lambda max_t, grace, rf: HyperBandScheduler(
        time_attr="training_iteration", max_t=max_t, reduction_factor=rf
    ),
    "bohb": lambda max_t, grace, rf: HyperBandForBOHB(time_attr="training_iteration", max_t=max_t, reduction_factor=rf),
}
#: schedulers that pause trials and resume them later: trials checkpoint every step
PAUSING = {"hyperband", "bohb"}
