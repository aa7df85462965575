"""The trial: the Ray Tune function trainable every cell runs (``run_trial``), the actor that keeps each cell's
best model and its best trials' predictions as they are trained (``BestModels``), and the refit of a selected
configuration (``refit``)."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import pickle
import tempfile
from typing import Any, Optional

import numpy as np

from trainables.base import Context, Data, ModelFamily, evaluate, metric_sign, test_predictions, validated_steps


class NonFiniteMetric(RuntimeError):
    """A trial's loss went NaN or infinite."""


class BestModels:
    """A Ray actor holding, per cell, the best result its trials reported and the model at that step, and the
    validation and test predictions of its best trials.

    A trial offers a step's model only when its score beats the best it last heard of, so a
    cell's best model is kept as it is trained and is not retrained when the cell ends; it offers a step's
    predictions when they could be among the cell's ``k`` best trials'.
    """

    def __init__(self) -> None:
        self.best: dict[str, tuple] = {}  # cell -> (value, trial id, step, curve, pickled model)
        self.predictions: dict[str, dict[str, tuple]] = {}  # cell -> trial id -> (value, step, packed predictions)

    def offer_predictions(
        self, cell: str, sign: int, value: float, trial_id: str, step: int, packed: bytes, k: int
    ) -> Optional[float]:
        """Keep a trial's predictions (a better step of it replaces its earlier one) while it is among the cell's
        ``k`` best trials; returns the score to beat to be among them (None while fewer than ``k`` are kept)."""
        held = self.predictions.setdefault(cell, {})
        held[trial_id] = (value, step, packed)
        if len(held) > k:
            del held[max(held, key=lambda t: sign * held[t][0])]
        return max((v for v, _, _ in held.values()), key=lambda v: sign * v) if len(held) >= k else None

    def take_predictions(self, cell: str) -> dict[str, tuple]:
        return self.predictions.pop(cell, {})

    def offer(self, cell: str, sign: int, value: float, trial_id: str, step: int, curve: list, blob: bytes) -> float:
        """Keep the model if ``value`` is the cell's best yet (``sign`` 1: lower is better); returns the best."""
        held = self.best.get(cell)
        if held is None or sign * value < sign * held[0]:
            self.best[cell] = held = (value, trial_id, step, curve, blob)
        return held[0]

    def take(self, cell: str) -> tuple | None:
        return self.best.pop(cell, None)


_heard: dict[str, float] = {}  # cell -> the best score the keeper last told this worker process
_bar: dict[str, Optional[float]] = {}  # cell -> the score a trial's predictions must beat to be kept, as last told


def pack(val: np.ndarray, test: np.ndarray) -> bytes:
    """A trial's validation and test predictions, compressed (float32)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, val=np.asarray(val, dtype=np.float32), test=np.asarray(test, dtype=np.float32))
    return buf.getvalue()


def unpack(packed: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(packed)) as z:
        return z["val"], z["test"]


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
    keep_predictions: int = 0,
) -> None:
    """The Ray Tune function trainable: train, evaluate on validation, report once per step.

    ``keeper``: a ``BestModels`` actor, offered each step's model that beats the ``cell``'s best so far (none with
    folds: the cell's end refits), and the step's predictions while the trial may be among the cell's
    ``keep_predictions`` best.
    """
    import ray
    from ray import tune

    data: Data = ray.get(data_ref[0])
    ctx = _with_device(ctx)
    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the trial (tag tunelab.node_id)
    trial_id = tune.get_context().get_trial_id()
    sign = metric_sign(metric)
    family = family_cls(ctx)
    models, start, curve, own_best = None, 0, [], math.inf
    keep_model = keeper is not None and not data.folds  # with folds, the cell's end refits on every fold's rows
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.pkl"), "rb") as f:
            models, start, *rest = pickle.load(f)  # (models, step, curve); older checkpoints: one model, no curve
            models = models if isinstance(models, list) else [models]
            curve = list(rest[0]) if rest else []
    for step, (models, scores, val_pred) in enumerate(validated_steps(family, data, config, models), start=start + 1):
        value = scores[metric]
        if not math.isfinite(value):
            raise NonFiniteMetric(f"{metric} is {value} at step {step}")
        curve.append(value)
        try:
            if keep_model and (cell not in _heard or sign * value < sign * _heard[cell]):
                blob = pickle.dumps(family.loggable(copy.deepcopy(models[0])))  # a copy: may move it off the GPU
                _heard[cell] = ray.get(keeper.offer.remote(cell, sign, value, trial_id, step, list(curve), blob))
            bar = _bar.get(cell)
            if keep_predictions and sign * value < own_best and (bar is None or sign * value < sign * bar):
                packed = pack(val_pred, test_predictions(family, models, data.X_test))
                offer = keeper.offer_predictions.remote(cell, sign, value, trial_id, step, packed, keep_predictions)
                _bar[cell], own_best = ray.get(offer), sign * value
        except ray.exceptions.RayError:  # keeper lost (its node died): the driver retrains the best instead
            keep_model, keep_predictions = False, 0
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
