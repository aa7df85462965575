"""Families trained in one go: one scikit-learn estimator, one budget step."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from trainables.base import ModelFamily


class OneShotFamily(ModelFamily):
    """Builds the estimator from the config with ``make`` and fits it once."""

    make: ClassVar[Callable[..., Any]]
    iterative = False

    def estimator(self, config: dict) -> Any:
        return type(self).make(self.ctx, **config)

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        if model is None:
            model = self.estimator(config).fit(X, y)
        yield model
