"""The shape every model family shares, and the trial loop Ray Tune runs for all of them."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import pickle
import tempfile
from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Optional

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


def validated_steps(
    family: ModelFamily, data: Data, config: dict, models: Optional[list] = None
) -> Iterator[tuple[list, dict]]:
    """Train ``config`` on every validation split (``Data.validation_splits``) in step; per budget step, the models
    (one per fold; continued from ``models`` if given) and their validation scores: with folds, the fold mean of
    each metric and its spread over the folds (``<metric>_std``)."""
    splits = data.validation_splits()
    models = models or [None] * len(splits)
    fits = [family.fit(X, y, config, m) for (X, y, _, _), m in zip(splits, models)]
    for stepped in zip(*fits):
        scores = [evaluate(family, m, X, y) for m, (_, _, X, y) in zip(stepped, splits)]
        yield list(stepped), fold_mean(scores)


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


class NonFiniteMetric(RuntimeError):
    """A trial's loss went NaN or infinite."""


class BestModels:
    """A Ray actor holding, per cell, the best result its trials reported and the model at that step.

    A trial offers a step's model only when its score beats the best it last heard of, so a
    cell's best model is kept as it is trained and is not retrained when the cell ends.
    """

    def __init__(self) -> None:
        self.best: dict[str, tuple] = {}  # cell -> (value, trial id, step, curve, pickled model)

    def offer(self, cell: str, sign: int, value: float, trial_id: str, step: int, curve: list, blob: bytes) -> float:
        """Keep the model if ``value`` is the cell's best yet (``sign`` 1: lower is better); returns the best."""
        held = self.best.get(cell)
        if held is None or sign * value < sign * held[0]:
            self.best[cell] = held = (value, trial_id, step, curve, blob)
        return held[0]

    def take(self, cell: str) -> tuple | None:
        return self.best.pop(cell, None)


_heard: dict[str, float] = {}  # cell -> the best score the keeper last told this worker process


def run_trial(
    config: dict,
    *,
    family_cls: type[ModelFamily],
    data_ref: list,
    ctx: Context,
    metric: str,
    checkpoint_every_step: bool = False,
    keeper: Any = None,
    cell: str = "",
) -> None:
    """The Ray Tune function trainable: train, evaluate on validation, report once per step.

    ``keeper``: a ``BestModels`` actor, offered each step's model that beats the ``cell``'s best so far.
    """
    import ray
    from ray import tune

    data: Data = ray.get(data_ref[0])
    ctx = _with_device(ctx)
    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the trial (tag tunelab.node_id)
    trial_id = tune.get_context().get_trial_id()
    sign = metric_sign(metric)
    family = family_cls(ctx)
    models, start, curve = None, 0, []
    if data.folds:
        keeper = None  # the selected configuration is refit on every fold's rows at the cell's end
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.pkl"), "rb") as f:
            models, start, *rest = pickle.load(f)  # (models, step, curve); older checkpoints: one model, no curve
            models = models if isinstance(models, list) else [models]
            curve = list(rest[0]) if rest else []
    for step, (models, scores) in enumerate(validated_steps(family, data, config, models), start=start + 1):
        model = models[0]
        value = scores[metric]
        if not math.isfinite(value):
            raise NonFiniteMetric(f"{metric} is {value} at step {step}")
        curve.append(value)
        if keeper is not None and (cell not in _heard or sign * value < sign * _heard[cell]):
            blob = pickle.dumps(family.loggable(copy.deepcopy(model)))  # a copy: loggable may move it off the GPU
            try:
                _heard[cell] = ray.get(keeper.offer.remote(cell, sign, value, trial_id, step, list(curve), blob))
            except ray.exceptions.RayError:  # keeper lost (its node died): the driver retrains the best instead
                keeper = None
        scores.update(
            step=step,
            device=ctx.device,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            node_id=node_id,
        )
        if checkpoint_every_step and step < ctx.steps:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.pkl"), "wb") as f:
                    pickle.dump((models, step, curve), f)
                tune.report(scores, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(scores)


def refit(
    family_cls: type[ModelFamily],
    data: Data,
    config: dict,
    ctx: Context,
    steps: int,
    in_ray_worker: bool = True,
    curve_metric: str | None = None,
) -> dict:
    """Train ``config`` for ``steps`` budget steps and score it on validation and test.

    ``in_ray_worker``: on the device Ray gave this worker; False: on the CPU of the calling process.
    ``curve_metric``: also that validation metric after every step (``curve``).
    """
    ctx = _with_device(ctx) if in_ray_worker else ctx
    family = family_cls(ctx)
    model, curve = None, []
    validate = len(data.y_val) > 0  # with folds, every row beside test trains the refit: none is left to validate
    for step, model in enumerate(family.fit(data.X_train, data.y_train, config), start=1):
        if curve_metric is not None and validate:
            curve.append(evaluate(family, model, data.X_val, data.y_val)[curve_metric])
        if step >= steps:
            break
    return {
        "model": family.loggable(model),
        "val": evaluate(family, model, data.X_val, data.y_val, "val") if validate else {},
        "test": evaluate(family, model, data.X_test, data.y_test, "test"),
        "device": ctx.device,
        "curve": curve,
    }


_warned_logical_gpu = False


def _with_device(ctx: Context) -> Context:
    """Use CUDA when Ray gave this worker a GPU that really exists; say so once when it doesn't."""
    global _warned_logical_gpu
    import ray

    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # not inside a Ray worker
        gpu_ids = []
    if not gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a trial given no GPU sees none
        return ctx
    import torch

    if torch.cuda.is_available():
        return dataclasses.replace(ctx, device="cuda")
    if not _warned_logical_gpu:
        print(f"tunelab: GPU {gpu_ids} is logical only (no CUDA device); running on CPU", flush=True)
        _warned_logical_gpu = True
    return ctx
