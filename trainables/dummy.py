from sklearn.dummy import DummyClassifier, DummyRegressor

from trainables._sklearn import OneShotFamily
from trainables.base import CLASSIFICATION


class Dummy(OneShotFamily):
    """scikit-learn's Dummy estimators: the chance baseline every family must beat."""

    name = "dummy"

    @staticmethod
    def make(ctx, strategy: str = "prior"):
        if ctx.task == CLASSIFICATION:
            return DummyClassifier(strategy=strategy, random_state=ctx.seed)
        return DummyRegressor(strategy=strategy)
