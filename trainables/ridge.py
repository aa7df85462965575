from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables._sklearn import OneShotFamily
from trainables.base import REGRESSION


class RidgeFamily(OneShotFamily):
    """Standardised features, ridge regression (the linear regressor)."""

    name = "ridge"
    tasks = frozenset({REGRESSION})

    @staticmethod
    def make(ctx, alpha: float = 1.0):
        return make_pipeline(StandardScaler(), Ridge(alpha=alpha))
