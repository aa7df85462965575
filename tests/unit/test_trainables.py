"""Every family trains step by step, reports its task's metrics, and resumes from a model."""

import pytest

from trainables import FAMILIES
from trainables.base import TASK_METRICS, Context, evaluate, refit
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
