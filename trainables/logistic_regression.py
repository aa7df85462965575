from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables._sklearn import OneShotFamily
from trainables.base import CLASSIFICATION


class LogisticRegressionFamily(OneShotFamily):
    """Standardised features, L2-regularised logistic regression (the linear classifier)."""

    name = "logistic_regression"
    tasks = frozenset({CLASSIFICATION})

    @staticmethod
    def make(ctx, C: float = 1.0):
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=ctx.seed))
