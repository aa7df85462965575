from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from trainables._sklearn import OneShotFamily
from trainables.base import CLASSIFICATION


class SVM(OneShotFamily):
    """Standardised features, RBF support vector machine (probabilities calibrated by cross-validation)."""

    name = "svm"
    trusted_types = (
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    )

    @staticmethod
    def make(ctx, C: float = 1.0, gamma: float | str = "scale"):
        if ctx.task == CLASSIFICATION:
            return make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(C=C, gamma=gamma), ensemble=False))
        return make_pipeline(StandardScaler(), SVR(C=C, gamma=gamma))
