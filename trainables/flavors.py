"""Flavours: how a family's best model is stored inside the one MLflow model tunelab logs for it.

Every logged model is the whole predictor (``tunelab.predictor``): the fitted preprocessing, the estimator and the
labels. A family names the estimator's format with the class attribute ``flavor`` (default ``SKLEARN``); a new
format is one more ``Flavor`` here and its save/load/outputs in ``tunelab.predictor.FORMATS`` under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavor:
    """A format of the estimator (a key of ``tunelab.predictor.FORMATS``) and what serving it needs."""

    name: str
    #: pip packages the model needs besides MLflow, numpy, pandas, scikit-learn and skops; stated, because MLflow's
    #: own inference of them imports the world (seconds per model)
    packages: tuple[str, ...] = ()
    #: modules saving the model imports, seconds of CPU on first use: imported early, while Ray starts
    imports: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


# skops.io lists every scikit-learn estimator on import; torch.export._trace: pt2 export, 2 s
SKLEARN = Flavor("sklearn", (), ("skops.io",))
XGBOOST = Flavor("xgboost", ("xgboost",))
PYTORCH = Flavor("pytorch", ("torch",), ("torch.export._trace",))
