"""MLflow flavours: how a family's best model is logged and registered.

A family names its flavour with the class attribute ``flavor`` (default ``SKLEARN``). A new flavour is one more
``Flavor`` (a subclass where its ``log_model`` needs arguments of its own), written next to the family that needs
it, in its module or here; ``tunelab`` asks the object and names no flavour.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Flavor:
    """An MLflow flavour: the module whose ``log_model`` logs the model, and what logging it needs."""

    name: str
    module: str
    #: pip packages the model needs besides numpy and pandas; stated, because MLflow's own inference of them
    #: imports the world (seconds per model)
    packages: tuple[str, ...]
    #: modules ``log_model`` imports besides ``module``, seconds of CPU on first use: imported early, while Ray starts
    imports: tuple[str, ...] = ()

    def mlflow_module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def log_kwargs(self, model: Any, input_example: Any) -> dict:
        """Arguments of ``log_model`` besides the model, its name, its registration and its requirements."""
        return {"input_example": input_example}

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


class _Sklearn(Flavor):
    def log_kwargs(self, model: Any, input_example: Any) -> dict:
        """skops, a safe format, trusting the types this very model holds (our own pipelines' included)."""
        import skops.io

        return {
            "input_example": input_example,
            "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        }


class _PyTorch(Flavor):
    def log_kwargs(self, model: Any, input_example: Any) -> dict:
        """An exported graph (pt2), traced by ``forward()`` on an array, not a DataFrame."""
        return {"input_example": input_example.to_numpy(dtype="float32")}


# skops.io lists every scikit-learn estimator on import; torch.export._trace: pt2 export, 2 s
SKLEARN = _Sklearn("sklearn", "mlflow.sklearn", ("scikit-learn",), ("skops.io",))
XGBOOST = Flavor("xgboost", "mlflow.xgboost", ("xgboost",))
PYTORCH = _PyTorch("pytorch", "mlflow.pytorch", ("torch",), ("torch.export._trace",))
