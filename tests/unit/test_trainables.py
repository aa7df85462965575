"""Every family trains step by step, reports its task's metrics, and resumes from a model."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from trainables import FAMILIES
from trainables.base import CLASSIFICATION, REGRESSION, TASK_METRICS, BestModels, Context, evaluate, refit, score
from tunelab.datasets import load_dataset
from tunelab.spaces import load_space
from tunelab.study import DatasetSpec, Split

DATA = {t: load_dataset(DatasetSpec(name=f"synthetic_{t}", rows=300, features=6), Split(), 0, "w")
        for t in ("classification", "regression")}


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
    assert score(Context(task=REGRESSION, n_classes=0), np.ones(5), np.ones(5))["val_r2"] == skm.r2_score(np.ones(5), np.ones(5))


def test_best_models_keeps_each_cells_best_step():
    keeper = BestModels()
    assert keeper.offer("a", 1, 0.5, "t1", 1, [0.5], b"m1") == 0.5
    assert keeper.offer("a", 1, 0.7, "t2", 1, [0.7], b"m2") == 0.5  # worse for a min metric: not kept
    assert keeper.offer("b", -1, 0.7, "t3", 2, [0.6, 0.7], b"m3") == 0.7  # a max metric, another cell
    assert keeper.offer("a", 1, 0.4, "t1", 2, [0.5, 0.4], b"m4") == 0.4
    assert keeper.take("a") == (0.4, "t1", 2, [0.5, 0.4], b"m4")
    assert keeper.take("a") is None and keeper.take("b")[1] == "t3"
