"""The shape every model family shares, and the trial loop Ray Tune runs for all of them."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, NamedTuple, Optional

import numpy as np

from trainables import _metrics as metrics
from trainables.flavors import SKLEARN, Flavor

CLASSIFICATION = "classification"
REGRESSION = "regression"

#: Every validation metric a trial reports, and whether lower or higher is better.
METRIC_MODES: dict[str, str] = {
    "val_accuracy": "max",
    "val_logloss": "min",
    "val_roc_auc": "max",
    "val_rmse": "min",
    "val_mae": "min",
    "val_r2": "max",
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    CLASSIFICATION: ("val_accuracy", "val_logloss", "val_roc_auc"),
    REGRESSION: ("val_rmse", "val_mae", "val_r2"),
}
DEFAULT_METRIC = {CLASSIFICATION: "val_logloss", REGRESSION: "val_rmse"}


def metric_sign(metric: str) -> int:
    """1 where lower is better, -1 where higher is: ``sign * value`` is always a loss to minimise."""
    return 1 if METRIC_MODES[metric] == "min" else -1


def on_test_split(metric: str) -> str:
    """The test split's name for a validation metric: val_logloss -> test_logloss."""
    return "test_" + metric.removeprefix("val_")


@dataclass
class Data:
    """A dataset already split and encoded to numbers: what a trial receives from the object store."""

    name: str
    task: str
    feature_names: list[str]
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)
    content_hash: str = ""
    #: per encoded column, the raw column it came from (one-hot columns share theirs)
    raw_features: list[str] = field(default_factory=list)
    #: the target column's name in the file
    target: str = ""
    #: where the rows came from, as MLflow's dataset source: (type, URI): ("local", a path), ("openml", a URL), ...
    source: tuple[str, str] = ("code", "")
    #: the raw columns, in the file's order, and their kinds (``tunelab.predictor``: numeric or categorical)
    columns: dict[str, str] = field(default_factory=dict)
    #: per class, the label as the file holds it (``classes`` holds its text)
    labels: list = field(default_factory=list)
    #: the fitted ``ColumnTransformer`` that encoded the raw columns; it goes into every logged model
    preprocessor: Any = None
    #: a few raw rows of the test split: the logged models' input example
    example: Any = None
    #: k-fold validation: per fold, the rows of ``X_train`` (then every row beside test) that validate it, and
    #: ``X_val`` is empty; no folds: ``X_val`` validates
    folds: list[np.ndarray] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def validation_splits(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """``(X_train, y_train, X_val, y_val)`` per fold; the one validation split when there are no folds."""
        if not self.folds:
            return [(self.X_train, self.y_train, self.X_val, self.y_val)]
        out = []
        for val in self.folds:
            train = np.ones(len(self.y_train), dtype=bool)
            train[val] = False
            out.append((self.X_train[train], self.y_train[train], self.X_train[val], self.y_train[val]))
        return out


@dataclass(frozen=True)
class Context:
    """What a family needs to know besides its hyperparameters."""

    task: str
    n_classes: int
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    steps: int = 1  # budget steps of a full trial
    per_step: int = 1  # units (trees, rounds, epochs) added per budget step


class ModelFamily(ABC):
    """A model family: a name, the tasks it can do, its MLflow flavour, and how it trains step by step.

    ``fit``, the same for every family, is the budget's step loop, run once per trial (or per resumed trial)::

        model, data = start(X, y, config, model)  # a new model with no units, or a paused trial's to go on from
        while trained(model) < ctx.steps * ctx.per_step:
            model = grow(model, data, ctx.per_step)  # per_step more units: trees, boosting rounds, epochs
            yield model  # scored on validation and reported: a scheduler such as ASHA may stop the trial here

    A family gives ``start``, ``trained`` and ``grow``; one that trains in one go overrides ``fit`` to yield once
    (``trainables._sklearn.OneShotFamily``). A subclass is found by the registry from its module in ``trainables/``.
    """

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]] = frozenset({CLASSIFICATION, REGRESSION})
    #: How the best model is stored in its logged MLflow model (``trainables.flavors``).
    flavor: ClassVar[Flavor] = SKLEARN
    #: Types a skops file of this family's models holds beyond those skops trusts: loading trusts these and no more.
    trusted_types: ClassVar[tuple[str, ...]] = ()
    #: Whether the same config, data and seed always give the same model.
    deterministic: ClassVar[bool] = True
    #: Whether ``fit`` trains over several budget steps (False: one step, whatever the budget says).
    iterative: ClassVar[bool] = True

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def fit(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> Iterator[Any]:
        """Train step by step, yielding the model after each step; continue ``model`` if given."""
        model, data = self.start(X, y, config, model)
        while self.trained(model) < self.ctx.steps * self.ctx.per_step:
            model = self.grow(model, data, self.ctx.per_step)
            yield model

    def start(self, X: np.ndarray, y: np.ndarray, config: dict, model: Any = None) -> tuple[Any, Any]:
        """The model this ``fit`` trains (a new one when ``model`` is None, else ``model``, ready to go on) and what
        ``grow`` trains it on: ``(X, y)``, or what the family derives from them once per ``fit`` (a DMatrix, tensors,
        an optimizer)."""
        raise NotImplementedError(f"{type(self).__name__} gives start, trained and grow, or a fit of its own")

    def trained(self, model: Any) -> int:
        """The units (trees, boosting rounds, epochs) ``model`` holds."""
        raise NotImplementedError(f"{type(self).__name__} gives start, trained and grow, or a fit of its own")

    def grow(self, model: Any, data: Any, units: int) -> Any:
        """Train ``units`` more on ``data`` (from ``start``); returns the model."""
        raise NotImplementedError(f"{type(self).__name__} gives start, trained and grow, or a fit of its own")

    def predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        """Class indices (classification) or values (regression)."""
        return np.asarray(model.predict(X))

    def predict_proba(self, model: Any, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes)."""
        return np.asarray(model.predict_proba(X))

    def loggable(self, model: Any) -> Any:
        """The object handed to the MLflow flavour's ``log_model``."""
        return model


class Validated(NamedTuple):
    """A budget step of a trial on its validation splits."""

    models: list  # one per fold (one without folds)
    scores: dict  # the validation metrics; with folds, each one's fold mean and spread (``spread_of``)
    predictions: np.ndarray  # of every validation row (``predictions``); with folds, out of fold, in X_train's order


def validated_steps(
    family: ModelFamily, data: Data, config: dict, models: Optional[list] = None
) -> Iterator[Validated]:
    """Train ``config`` on every validation split (``Data.validation_splits``) in step, continuing ``models`` if
    given; per budget step, the models, their validation scores and predictions."""
    splits = data.validation_splits()
    models = models or [None] * len(splits)
    fits = [family.fit(X, y, config, m) for (X, y, _, _), m in zip(splits, models)]
    for stepped in zip(*fits):
        preds = [predictions(family, m, X) for m, (_, _, X, _) in zip(stepped, splits)]
        scores = [score(family.ctx, y, p) for p, (_, _, _, y) in zip(preds, splits)]
        yield Validated(list(stepped), fold_mean(scores), _in_row_order(preds, data))


def _in_row_order(preds: list[np.ndarray], data: Data) -> np.ndarray:
    """The folds' validation predictions as one array in X_train's row order (the one split's as they are)."""
    if not data.folds:
        return preds[0]
    out = np.empty((len(data.y_train), *preds[0].shape[1:]), dtype=preds[0].dtype)
    for rows, p in zip(data.folds, preds):
        out[rows] = p
    return out


def test_predictions(family: ModelFamily, models: list, X: np.ndarray) -> np.ndarray:
    """The test rows' predictions of a trial: its one model's, or the mean of its fold models'."""
    return np.mean([predictions(family, m, X) for m in models], axis=0)


def spread_of(metric: str) -> str:
    """The name of a metric's standard deviation over the folds: val_logloss -> val_logloss_std."""
    return metric + "_std"


def fold_mean(scores: list[dict]) -> dict:
    """One fold's scores as they are; several folds' as each metric's mean and its standard deviation."""
    if len(scores) == 1:
        return scores[0]
    out = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return out | {spread_of(k): float(np.std([s[k] for s in scores])) for k in scores[0]}


def evaluate(family: ModelFamily, model: Any, X: np.ndarray, y: np.ndarray, prefix: str = "val") -> dict:
    """The full metric set of the task, named ``<prefix>_<metric>``."""
    return score(family.ctx, y, predictions(family, model, X), prefix)


def predictions(family: ModelFamily, model: Any, X: np.ndarray) -> np.ndarray:
    """What ``score`` takes: class probabilities (classification) or values (regression)."""
    if family.ctx.task == CLASSIFICATION:
        return family.predict_proba(model, X)
    return np.asarray(family.predict(model, X))


def score(ctx: Context, y: np.ndarray, pred: np.ndarray, prefix: str = "val") -> dict:
    """The task's metric set from ``predictions``, named ``<prefix>_<metric>``."""
    y = np.asarray(y)
    if ctx.task == CLASSIFICATION:
        proba = np.clip(np.asarray(pred, dtype=np.float64), 1e-15, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
        y = y.astype(np.int64)
        out = {
            "accuracy": metrics.accuracy(y, proba),
            "logloss": metrics.logloss(y, proba),
            "roc_auc": metrics.roc_auc(y, proba),
        }
    else:
        y, pred = y.astype(np.float64), np.asarray(pred, dtype=np.float64).reshape(len(y))
        out = {"rmse": metrics.rmse(y, pred), "mae": metrics.mae(y, pred), "r2": metrics.r2(y, pred)}
    return {f"{prefix}_{k}": float(v) for k, v in out.items()}
