"""Forests grown a few trees per budget step (shared by random_forest and extra_trees)."""

from __future__ import annotations

from typing import Any, ClassVar, Iterator

import numpy as np

from trainables.base import CLASSIFICATION, ModelFamily


class ForestFamily(ModelFamily):
    """Grows ``per_step`` more trees at each budget step with scikit-learn's ``warm_start``."""

    classifier: ClassVar[type]
    regressor: ClassVar[type]

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        if model is None:
            cls = self.classifier if self.ctx.task == CLASSIFICATION else self.regressor
            model = cls(n_estimators=0, warm_start=True, n_jobs=self.ctx.threads,
                        random_state=self.ctx.seed, **config)
        while model.n_estimators < self.ctx.steps * self.ctx.per_step:
            model.n_estimators += self.ctx.per_step
            model.fit(X, y)
            yield model
