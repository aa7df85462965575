from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables._sklearn import OneShotFamily
from trainables.base import CLASSIFICATION


class KNN(OneShotFamily):
    """Standardised features, k nearest neighbours."""

    name = "knn"
    trusted_types = (
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
    )

    @staticmethod
    def make(ctx, n_neighbors: int = 5, weights: str = "uniform", p: int = 2):
        cls = KNeighborsClassifier if ctx.task == CLASSIFICATION else KNeighborsRegressor
        return make_pipeline(StandardScaler(), cls(n_neighbors=n_neighbors, weights=weights, p=p, n_jobs=ctx.threads))
