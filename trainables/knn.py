from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables._sklearn import OneShotFamily
from trainables.base import CLASSIFICATION


class KNN(OneShotFamily):
    """Standardised features, k nearest neighbours."""

    name = "knn"

    @staticmethod
    def make(ctx, n_neighbors: int = 5, weights: str = "uniform", p: int = 2):
        cls = KNeighborsClassifier if ctx.task == CLASSIFICATION else KNeighborsRegressor
        return make_pipeline(StandardScaler(), cls(n_neighbors=n_neighbors, weights=weights, p=p, n_jobs=ctx.threads))
