"""Every family trains step by step, reports its task's metrics, and resumes from a model."""

import contextlib
import math
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from trainables import FAMILIES
from trainables.base import (
    CLASSIFICATION,
    REGRESSION,
    TASK_METRICS,
    Context,
    evaluate,
    score,
    validated_steps,
)
from trainables.flavors import SKLEARN, Flavor
from trainables.trial import BestModels, refit
from tunelab.datasets import load_dataset
from tunelab.spaces import load_space
from tunelab.study import DatasetSpec, Split
from tunelab.tracking import import_flavors_early

DATA = {
    t: load_dataset(DatasetSpec(name=f"synthetic_{t}", rows=300, features=6), Split(), 0, "w")
    for t in ("classification", "regression")
}


def _sample(space):
    return {n: d.sample() if hasattr(d, "sample") else d for n, d in space.to_tune().items()}


@pytest.mark.parametrize("name,task", [(n, t) for n, c in FAMILIES.items() for t in sorted(c.tasks)])
def test_family_steps_and_metrics(name, task):
    data = DATA[task]
    steps = 2 if FAMILIES[name].iterative else 1
    space = load_space(name, task, {"budget": {"steps": steps}})
    ctx = Context(task=task, n_classes=data.n_classes, steps=steps, per_step=space.per_step)
    fam = FAMILIES[name](ctx)
    config = space.decode(_sample(space))
    models = list(fam.fit(data.X_train, data.y_train, config))
    assert len(models) == steps
    scores = evaluate(fam, models[-1], data.X_val, data.y_val)
    assert set(scores) == set(TASK_METRICS[task])
    out = refit(FAMILIES[name], data, config, ctx, steps=len(models))
    assert set(out["test"]) == {m.replace("val_", "test_") for m in TASK_METRICS[task]}


def test_resume_continues_where_it_stopped():
    data = DATA["classification"]
    ctx = Context(task="classification", n_classes=2, steps=3, per_step=5)
    fam = FAMILIES["random_forest"](ctx)
    first = next(iter(fam.fit(data.X_train, data.y_train, {"max_depth": 3})))
    rest = list(fam.fit(data.X_train, data.y_train, {"max_depth": 3}, model=first))
    assert len(rest) == 2 and rest[-1].n_estimators == 15


#: the units a model holds, read off the model itself rather than from its family's own count
MEASURED = {
    "random_forest": lambda model: len(model.estimators_),
    "extra_trees": lambda model: len(model.estimators_),
    "hist_gradient_boosting": lambda model: model.n_iter_,
    "xgboost": lambda model: model.num_boosted_rounds(),
}


@pytest.mark.parametrize("name", [n for n, c in FAMILIES.items() if c.iterative])
def test_every_step_trains_per_step_units(name):
    """Each budget step adds per_step units (trees, rounds, epochs), fresh and resumed: counted on the model
    itself, the MLP's epochs in optimizer updates (one a batch)."""
    task = sorted(FAMILIES[name].tasks)[0]
    data = DATA[task]
    space = load_space(name, task)
    config = space.decode(space.default_point())
    family = FAMILIES[name](Context(task=task, n_classes=data.n_classes, steps=4, per_step=3))
    with contextlib.ExitStack() as stack:
        units = MEASURED.get(name, family.trained)
        if name == "mlp":
            units = stack.enter_context(_epochs_of_updates(len(data.X_train), config["batch_size"]))
        fresh = [(units(m), family.trained(m)) for m in family.fit(data.X_train, data.y_train, config)]
        first = next(iter(family.fit(data.X_train, data.y_train, config)))
        held = units(first)
        resumed = [(units(m), family.trained(m)) for m in family.fit(data.X_train, data.y_train, config, model=first)]
    assert _added(0, [u for u, _ in fresh]) == [3, 3, 3, 3] and [t for _, t in fresh] == [3, 6, 9, 12]
    assert _added(held, [u for u, _ in resumed]) == [3, 3, 3] and [t for _, t in resumed] == [6, 9, 12]


def _added(start: float, units: list[float]) -> list[float]:
    return [b - a for a, b in zip([start, *units], units)]


@contextlib.contextmanager
def _epochs_of_updates(rows: int, batch: int):
    """A measure of epochs: every torch optimizer update since entering, over the batches of an epoch."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    updates = []
    hook = register_optimizer_step_post_hook(lambda *_: updates.append(1))
    try:
        yield lambda model: len(updates) / math.ceil(rows / batch)
    finally:
        hook.remove()


@pytest.mark.parametrize("name", [n for n, c in FAMILIES.items() if not c.iterative])
def test_one_shot_families_yield_once_whatever_the_budget(name):
    task = sorted(FAMILIES[name].tasks)[0]
    data = DATA[task]
    space = load_space(name, task)
    family = FAMILIES[name](Context(task=task, n_classes=data.n_classes, steps=4, per_step=3))
    (model,) = family.fit(data.X_train, data.y_train, space.decode(space.default_point()))
    assert list(family.fit(data.X_train, data.y_train, {}, model=model)) == [model]


def test_xgboost_steps_are_one_training_run():
    """A trial's model after k steps is the model of one k x per_step-round training, row sampling included."""
    import xgboost as xgb

    data = DATA["classification"]
    ctx = Context(task="classification", n_classes=2, steps=3, per_step=4)
    fam, config = FAMILIES["xgboost"](ctx), {"subsample": 0.6, "colsample_bytree": 0.7}
    stepped = [m.save_raw() for m in fam.fit(data.X_train, data.y_train, config)]
    whole = xgb.train(fam.params(config), xgb.DMatrix(data.X_train, label=data.y_train), num_boost_round=12)
    assert stepped[-1] == whole.save_raw()


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("seed", range(4))
def test_metrics_agree_with_scikit_learn(n_classes, seed):
    """Our NumPy metrics against scikit-learn's, with tied scores (rounded probabilities) and a missing class."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, n_classes, n)
    proba = np.round(rng.dirichlet(np.ones(n_classes), n), 1 + seed % 2)  # rounding makes ties
    ctx = Context(task=CLASSIFICATION, n_classes=n_classes)
    ours = score(ctx, y, proba)
    p = np.clip(proba, 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    labels = list(range(n_classes))
    assert ours["val_accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(axis=1)), abs=1e-12)
    assert ours["val_logloss"] == pytest.approx(skm.log_loss(y, p, labels=labels), rel=1e-9)
    auc = skm.roc_auc_score(y, p[:, 1]) if n_classes == 2 else skm.roc_auc_score(y, p, multi_class="ovr", labels=labels)
    assert ours["val_roc_auc"] == pytest.approx(auc, rel=1e-9)

    missing = np.where(y == 0, 1, y)  # class 0 absent: AUC undefined
    assert np.isnan(score(ctx, missing, proba)["val_roc_auc"])

    target = rng.normal(size=n)
    pred = target + rng.normal(scale=0.5, size=n)
    reg = score(Context(task=REGRESSION, n_classes=0), target, pred)
    assert reg["val_rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(target, pred)), rel=1e-12)
    assert reg["val_mae"] == pytest.approx(skm.mean_absolute_error(target, pred), rel=1e-12)
    assert reg["val_r2"] == pytest.approx(skm.r2_score(target, pred), rel=1e-12)
    assert score(Context(task=REGRESSION, n_classes=0), np.ones(5), np.ones(5))["val_r2"] == skm.r2_score(
        np.ones(5), np.ones(5)
    )


def test_best_models_keeps_each_cells_best_step():
    keeper = BestModels()
    assert keeper.offer("a", 1, 0.5, "t1", 1, [0.5], b"m1") == 0.5
    assert keeper.offer("a", 1, 0.7, "t2", 1, [0.7], b"m2") == 0.5  # worse for a min metric: not kept
    assert keeper.offer("b", -1, 0.7, "t3", 2, [0.6, 0.7], b"m3") == 0.7  # a max metric, another cell
    assert keeper.offer("a", 1, 0.4, "t1", 2, [0.5, 0.4], b"m4") == 0.4
    assert keeper.take("a") == (0.4, "t1", 2, [0.5, 0.4], b"m4")
    assert keeper.take("a") is None and keeper.take("b")[1] == "t3"


def test_each_family_declares_its_flavour():
    flavors = {name: cls.flavor for name, cls in FAMILIES.items()}
    assert all(isinstance(f, Flavor) for f in flavors.values())
    assert {n: f"{f}" for n, f in flavors.items() if f != SKLEARN} == {"mlp": "pytorch", "xgboost": "xgboost"}


def test_the_modules_a_flavour_names_are_imported_early():
    """A flavour defined beside its family needs no edit in tunelab: the runner imports what it names, early."""
    for module in ("wave", "quopri"):
        sys.modules.pop(module, None)
    import_flavors_early({Flavor("one", (), ("wave",)), Flavor("other", (), ("quopri",))}).join(timeout=60)
    assert {"colorsys", "wave", "quopri"} <= set(sys.modules)


FOLDS = {
    t: load_dataset(DatasetSpec(name=f"synthetic_{t}", rows=300, features=6), Split(folds=2), 0, "w")
    for t in ("classification", "regression")
}


@pytest.mark.parametrize("name,task", [(n, t) for n, c in FAMILIES.items() for t in sorted(c.tasks)])
def test_every_family_validates_on_folds(name, task):
    steps = 2 if FAMILIES[name].iterative else 1
    space = load_space(name, task, {"budget": {"steps": steps}})
    family = FAMILIES[name](Context(task=task, n_classes=FOLDS[task].n_classes, steps=steps, per_step=space.per_step))
    stepped = list(validated_steps(family, FOLDS[task], space.decode(_sample(space))))
    assert len(stepped) == steps and all(len(models) == 2 for models, _, _ in stepped)
    assert set(stepped[-1][1]) == {n for m in TASK_METRICS[task] for n in (m, m + "_std")}


def test_k_fold_steps_report_the_fold_mean_and_spread():
    data = load_dataset(DatasetSpec(name="synthetic_classification", rows=300, features=6), Split(folds=3), 0, "w")
    family = FAMILIES["xgboost"](Context(task=CLASSIFICATION, n_classes=2, steps=2, per_step=5))
    stepped = list(validated_steps(family, data, {"max_depth": 3}))
    assert len(stepped) == 2 and all(len(models) == 3 for models, _, _ in stepped)
    models, scores, oof = stepped[-1]
    per_fold = [evaluate(family, m, X, y)["val_logloss"] for m, (_, _, X, y) in zip(models, data.validation_splits())]
    assert scores["val_logloss"] == pytest.approx(np.mean(per_fold))
    assert scores["val_logloss_std"] == pytest.approx(np.std(per_fold)) and scores["val_logloss_std"] > 0
    for rows, model in zip(data.folds, models):  # each row predicted by the one fold model it did not train
        np.testing.assert_allclose(oof[rows], family.predict_proba(model, data.X_train[rows]), rtol=1e-6)
    out = refit(FAMILIES["xgboost"], data, {"max_depth": 3}, family.ctx, steps=2)  # on every non-test row
    assert out["val"] == {} and set(out["test"]) == {"test_accuracy", "test_logloss", "test_roc_auc"}
