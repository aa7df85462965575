"""A cell's best model into MLflow: logged with its family's flavour and registered; the imports that needs, early."""

from __future__ import annotations

import contextlib
import importlib
import threading
import warnings
from importlib import metadata
from typing import Any, Iterable, Optional

import mlflow

from trainables.flavors import Flavor


def import_flavors_early(flavors: Iterable[Flavor]) -> threading.Thread:
    """Import what logging these flavours' models needs in a background thread, while Ray starts,
    rather than in the writer thread when the first cell ends, beside cells that still run."""

    def load() -> None:
        for name in (m for f in sorted(flavors, key=str) for m in (f.module, *f.imports)):
            with contextlib.suppress(Exception):  # a failure shows where the module is really used
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # every log_model checks its requirements against this map (0.7-3 s)
            from mlflow.utils.requirements_utils import _init_modules_to_packages_map

            _init_modules_to_packages_map()

    thread = threading.Thread(target=load, name="tunelab-imports", daemon=True)
    thread.start()
    return thread


def requirements(flavor: Flavor) -> list[str]:
    pkgs = ("numpy", "pandas", *flavor.packages)
    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in pkgs]


def log_model(run_id: str, flavor: Flavor, model: Any, input_example: Any, registered_name: Optional[str]) -> Any:
    """Log ``model`` with its MLflow flavour (signature inferred from the example) into run ``run_id``."""
    module = flavor.mlflow_module()
    with mlflow.start_run(run_id=run_id, nested=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # schema hints about integer outputs
        return module.log_model(
            model,
            name="model",
            registered_model_name=registered_name,
            pip_requirements=requirements(flavor),
            **flavor.log_kwargs(model, input_example),
        )
