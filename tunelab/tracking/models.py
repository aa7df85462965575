"""Models and datasets in MLflow's own terms: a cell's best model as the whole predictor (``tunelab.predictor``),
one pyfunc model, registered (and the imports that needs, early); a dataset as an MLflow dataset input."""

from __future__ import annotations

import contextlib
import importlib
import json
import tempfile
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType

from trainables.base import CLASSIFICATION, Data
from trainables.flavors import Flavor
from tunelab import predictor
from tunelab.tracking.schema import DATASET_CONTEXT

#: the most of the content hash MLflow's dataset digest holds
DIGEST_CHARS = 36
#: what every logged model needs, besides its flavour's packages
BASE_PACKAGES = ("mlflow", "numpy", "pandas", "scikit-learn", "skops")


def import_flavors_early(flavors: Iterable[Flavor]) -> threading.Thread:
    """Import what logging these flavours' models needs in a background thread, while Ray starts,
    rather than in the writer thread when the first cell ends, beside cells that still run."""

    def load() -> None:
        for name in (m for f in sorted(flavors, key=str) for m in f.imports):
            with contextlib.suppress(Exception):  # a failure shows where the module is really used
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # every log_model checks its requirements against this map (0.7-3 s)
            from mlflow.utils.requirements_utils import _init_modules_to_packages_map

            _init_modules_to_packages_map()

    thread = threading.Thread(target=load, name="tunelab-imports", daemon=True)
    thread.start()
    return thread


def requirements(*flavors: Flavor) -> list[str]:
    pkgs = dict.fromkeys((*BASE_PACKAGES, *(p for f in flavors for p in f.packages)))
    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in pkgs]


def signature(data: Data) -> ModelSignature:
    """On the raw columns: text as strings; numbers (and booleans) of any type, missing values allowed (MLflow
    refuses an integer column for a double one, and a missing value in an integer one)."""

    def kind(column: str, what: str) -> Any:
        text = what == predictor.CATEGORICAL and not pd.api.types.is_bool_dtype(data.example[column])
        return DataType.string if text else AnyType()

    inputs = Schema([ColSpec(kind(c, k), c) for c, k in data.columns.items()])
    params = None
    if data.task == CLASSIFICATION:
        params = ParamSchema([ParamSpec("output", DataType.string, predictor.LABEL)])
    return ModelSignature(inputs=inputs, params=params)


def dataset_input(data: Data) -> DatasetInput:
    """``data`` as MLflow's dataset: its name, tunelab's content hash as digest, its source, its raw columns."""
    source_type, uri = data.source
    return DatasetInput(
        Dataset(
            name=data.name,
            digest=data.content_hash[:DIGEST_CHARS],
            source_type=source_type,
            source=json.dumps({"uri": uri}),
            schema=json.dumps({"mlflow_colspec": signature(data).inputs.to_dict()}),
            profile=json.dumps({"rows": sum(len(y) for y in (data.y_train, data.y_val, data.y_test))}),
        ),
        [InputTag(DATASET_CONTEXT, "training")],
    )


def log_model(
    run_id: str,
    flavor: Flavor,
    model: Any,
    data: Data,
    registered_name: Optional[str],
    trusted_types: Iterable[str],
) -> Any:
    """Log ``model`` with ``data``'s fitted preprocessing and labels, as one pyfunc model, into run ``run_id``."""
    return log_members(run_id, [(flavor, model, 1.0)], data, registered_name, trusted_types)


def log_members(
    run_id: str,
    members: list[tuple[Flavor, Any, float]],
    data: Data,
    registered_name: Optional[str],
    trusted_types: Iterable[str],
) -> Any:
    """Log (flavour, model, weight) members, one or an ensemble, with ``data``'s fitted preprocessing and labels, as
    one pyfunc model into run ``run_id`` (``tunelab.predictor``)."""
    meta = {
        "task": data.task,
        "target": data.target,
        "labels": data.labels,
        "columns": data.columns,
        "trusted_types": sorted(trusted_types),
    }
    with tempfile.TemporaryDirectory(prefix="tunelab-model-") as tmp:
        where = Path(tmp) / "predictor"
        predictor.save_ensemble(where, [(f.name, m, w) for f, m, w in members], data.preprocessor, meta)
        with mlflow.start_run(run_id=run_id, nested=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # schema hints about integer outputs
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=predictor.__file__,
                artifacts={"predictor": str(where)},
                signature=signature(data),
                input_example=data.example,
                pip_requirements=requirements(*(f for f, _, _ in members)),
                registered_model_name=registered_name,
            )
