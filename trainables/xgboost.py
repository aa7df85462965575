from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import xgboost as xgb

from trainables.base import CLASSIFICATION, ModelFamily


class XGBoost(ModelFamily):
    """XGBoost gradient-boosted trees (native API); a budget step adds boosting rounds to one booster.

    Runs on CUDA (``device=cuda``) when the trial holds a real GPU, else ``nthread`` CPU threads.
    """

    name = "xgboost"
    flavor = "xgboost"

    def params(self, config: dict) -> dict:
        params = {"tree_method": "hist", "device": self.ctx.device, "nthread": self.ctx.threads,
                  "seed": self.ctx.seed, "verbosity": 0, **config}
        if self.ctx.task == CLASSIFICATION:
            if self.ctx.n_classes > 2:
                params.update(objective="multi:softprob", num_class=self.ctx.n_classes)
            else:
                params.update(objective="binary:logistic")
        else:
            params.update(objective="reg:squarederror")
        return params

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        dtrain = xgb.DMatrix(X, label=y)
        # one booster, updated round by round: it keeps its predictions on dtrain, where xgb.train(xgb_model=...)
        # would copy the model and predict every earlier tree again at each step (and reseed its sampling)
        booster = xgb.Booster(self.params(config), [dtrain], model_file=model)
        rounds = booster.num_boosted_rounds()
        while rounds < self.ctx.steps * self.ctx.per_step:
            for _ in range(self.ctx.per_step):
                booster.update(dtrain, rounds)
                rounds += 1
            yield booster

    def predict_proba(self, model: Any, X: np.ndarray) -> np.ndarray:
        p = model.predict(xgb.DMatrix(X))
        return np.column_stack([1 - p, p]) if p.ndim == 1 else p

    def predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        if self.ctx.task == CLASSIFICATION:
            return self.predict_proba(model, X).argmax(axis=1)
        return model.predict(xgb.DMatrix(X))
