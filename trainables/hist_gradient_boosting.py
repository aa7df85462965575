from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from trainables.base import CLASSIFICATION, ModelFamily


class HistGradientBoosting(ModelFamily):
    """scikit-learn histogram gradient boosting; a budget step adds boosting iterations.

    Threads follow the trial's allocation through OpenMP (``OMP_NUM_THREADS``, set by Ray).
    """

    name = "hist_gradient_boosting"

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        if model is None:
            cls = HistGradientBoostingClassifier if self.ctx.task == CLASSIFICATION else HistGradientBoostingRegressor
            model = cls(max_iter=0, warm_start=True, early_stopping=False, random_state=self.ctx.seed, **config)
        while model.max_iter < self.ctx.steps * self.ctx.per_step:
            model.max_iter += self.ctx.per_step
            model.fit(X, y)
            yield model
