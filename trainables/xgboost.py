from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb

from trainables.base import CLASSIFICATION, ModelFamily
from trainables.flavors import XGBOOST


class XGBoost(ModelFamily):
    """XGBoost gradient-boosted trees (native API); a budget step adds boosting rounds to one booster.

    Runs on CUDA (``device=cuda``) when the trial holds a real GPU, else ``nthread`` CPU threads.
    """

    name = "xgboost"
    flavor = XGBOOST

    def params(self, config: dict) -> dict:
        params = {
            "tree_method": "hist",
            "device": self.ctx.device,
            "nthread": self.ctx.threads,
            "seed": self.ctx.seed,
            "verbosity": 0,
            **config,
        }
        if self.ctx.task == CLASSIFICATION:
            if self.ctx.n_classes > 2:
                params.update(objective="multi:softprob", num_class=self.ctx.n_classes)
            else:
                params.update(objective="binary:logistic")
        else:
            params.update(objective="reg:squarederror")
        return params

    def start(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> tuple[Any, xgb.DMatrix]:
        dtrain = xgb.DMatrix(X, label=y)
        # one booster, updated round by round: it keeps its predictions on dtrain, where xgb.train(xgb_model=...)
        # would copy the model and predict every earlier tree again at each step (and reseed its sampling)
        return xgb.Booster(self.params(config), [dtrain], model_file=model), dtrain

    def trained(self, model: Any) -> int:
        return model.num_boosted_rounds()

    def grow(self, model: Any, data: xgb.DMatrix, units: int) -> Any:
        rounds = model.num_boosted_rounds()
        for i in range(rounds, rounds + units):
            model.update(data, i)
        return model

    def predict_proba(self, model: Any, X: np.ndarray) -> np.ndarray:
        p = model.predict(xgb.DMatrix(X))
        return np.column_stack([1 - p, p]) if p.ndim == 1 else p

    def predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        if self.ctx.task == CLASSIFICATION:
            return self.predict_proba(model, X).argmax(axis=1)
        return model.predict(xgb.DMatrix(X))
