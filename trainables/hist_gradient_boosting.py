from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from trainables.base import CLASSIFICATION, ModelFamily


class HistGradientBoosting(ModelFamily):
    """scikit-learn histogram gradient boosting; a budget step adds boosting iterations.

    Threads follow the trial's allocation through OpenMP (``OMP_NUM_THREADS``, set by Ray).
    """

    name = "hist_gradient_boosting"
    trusted_types = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)

    def start(
        self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None
    ) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
        if model is None:
            cls = HistGradientBoostingClassifier if self.ctx.task == CLASSIFICATION else HistGradientBoostingRegressor
            model = cls(max_iter=0, warm_start=True, early_stopping=False, random_state=self.ctx.seed, **config)
        return model, (X, y)

    def trained(self, model: Any) -> int:
        return model.max_iter

    def grow(self, model: Any, data: tuple[np.ndarray, np.ndarray], units: int) -> Any:
        model.max_iter += units
        return model.fit(*data)
