"""Forests grown a few trees per budget step (shared by random_forest and extra_trees)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from trainables.base import CLASSIFICATION, ModelFamily


class ForestFamily(ModelFamily):
    """Grows more trees at each budget step with scikit-learn's ``warm_start``."""

    trusted_types = ("sklearn.tree._tree.Tree",)

    classifier: ClassVar[type]
    regressor: ClassVar[type]

    def start(
        self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None
    ) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
        if model is None:
            cls = self.classifier if self.ctx.task == CLASSIFICATION else self.regressor
            model = cls(n_estimators=0, warm_start=True, n_jobs=self.ctx.threads, random_state=self.ctx.seed, **config)
        return model, (X, y)

    def trained(self, model: Any) -> int:
        return model.n_estimators

    def grow(self, model: Any, data: tuple[np.ndarray, np.ndarray], units: int) -> Any:
        model.n_estimators += units
        return model.fit(*data)
