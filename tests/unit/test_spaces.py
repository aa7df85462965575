"""Search spaces: every family's YAML parses; the syntax becomes Tune domains; BayesOpt encoding round-trips."""

import numpy as np
import pytest
import yaml
from ray import tune

from trainables import FAMILIES
from tunelab.errors import StudyError
from tunelab.spaces import _Reader, load_space
from tunelab.study import Search


def test_every_family_has_a_valid_space():
    for name, cls in FAMILIES.items():
        for task in cls.tasks:
            space = load_space(name, task)
            assert space.steps >= 1
            assert set(space.to_tune()) == set(space.params)


def test_randint_includes_both_bounds_and_overrides_apply():
    space = load_space(
        "xgboost", "classification", {"max_depth": {"randint": [2, 3]}, "budget": {"steps": 2}}, with_defaults=False
    )
    d = space.to_tune()["max_depth"]
    assert isinstance(d, tune.search.sample.Integer) and (d.lower, d.upper) == (2, 4)
    assert space.steps == 2


def test_continuous_encoding_decodes_to_valid_values():
    space = load_space("knn", "classification")
    enc = space.to_tune(continuous_only=True)
    assert all(isinstance(d, tune.search.sample.Float) for d in enc.values())
    decoded = space.decode({"n_neighbors": 50.99, "weights": 1.7, "p": 0.2}, encoded=True)
    assert decoded == {"n_neighbors": 50, "weights": "distance", "p": 1}
    assert space.decode({"n_neighbors": 3, "weights": "uniform", "p": 2}) == {
        "n_neighbors": 3,
        "weights": "uniform",
        "p": 2,
    }


def test_every_family_default_lies_within_its_space_and_encodes_back():
    for name, cls in FAMILIES.items():
        for task in cls.tasks:
            space = load_space(name, task)
            tuned = {n for n, p in space.params.items() if p.kind != "constant"}
            assert set(space.defaults) == tuned, name
            assert space.decode(space.default_point(continuous_only=True), encoded=True) == space.defaults


def test_an_override_that_leaves_out_the_default_is_refused_naming_the_field():
    with pytest.raises(
        StudyError, match=r"spaces.xgboost.max_depth: randint \[2, 3\] leaves out the family's default 6"
    ):
        load_space("xgboost", "classification", {"max_depth": {"randint": [2, 3]}}, "s.yaml: spaces.xgboost")
    space = load_space("xgboost", "classification", {"max_depth": 4})  # fixed: no default needed for it
    assert "max_depth" not in space.defaults and space.defaults["learning_rate"] == 0.3


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt", "bayesopt", "bohb"])
def test_every_searcher_suggests_the_family_default_first(searcher):
    from tunelab.search import CONTINUOUS_ONLY, SEARCHERS

    encoded = searcher in CONTINUOUS_ONLY
    space = load_space("knn", "classification")  # an integer, a string choice and an integer choice
    alg = SEARCHERS[searcher](0, 2, [space.default_point(encoded)], Search().startup_trials)
    assert alg.set_search_properties("val_logloss", "min", space.to_tune(encoded))
    first, second = alg.suggest("t1"), alg.suggest("t2")
    assert space.decode(first, encoded) == space.defaults == {"n_neighbors": 5, "weights": "uniform", "p": 2}
    assert space.decode(second, encoded) != space.defaults


def test_a_space_written_as_yaml_reads_back_the_same():
    space = load_space("random_forest", "classification", {"max_depth": 7, "budget": {"steps": 3, "per_step": 5}})
    written = yaml.safe_load(space.to_yaml())
    assert written["budget"] == {"steps": 3, "per_step": 5}
    assert {n: _Reader("w").param(n, spec) for n, spec in written["params"].items()} == space.params
    assert written["params"]["max_depth"] == 7 and written["defaults"] == space.defaults  # max_depth fixed: none


def test_the_default_config_holds_the_constants_a_study_fixes():
    """A study that fixes parameters the family's defaults name (mlp width, depth, batch_size) still trains its
    defaults with every parameter the family needs: what the cell's end refits to measure what tuning bought."""
    from trainables.base import CLASSIFICATION, Context

    space = load_space("mlp", "classification", {"width": 32, "depth": 1, "batch_size": 32, "budget": {"steps": 1}})
    config = space.default_config()
    assert {"width": 32, "depth": 1, "batch_size": 32}.items() <= config.items() and set(space.defaults) <= set(config)
    family = FAMILIES["mlp"](Context(CLASSIFICATION, 2, steps=1, per_step=1))
    X, y = np.random.default_rng(0).normal(size=(40, 3)).astype("float32"), np.arange(40) % 2
    assert len(list(family.fit(X, y, config))) == 1
    assert load_space("mlp", "classification", with_defaults=False).default_config() == {}


def test_a_cell_tries_its_defaults_first_then_the_warm_start_without_repeats():
    from tunelab.run.experiment import first_points
    from tunelab.run.plan import Cell
    from tunelab.run.warm_start import Start
    from tunelab.study import Resources

    space = load_space("knn", "classification")
    cell = Cell("knn", "iris", "classification", space, Resources(), "val_logloss", 0)
    earlier = {"n_neighbors": 9, "weights": "distance", "p": 1}
    warm = [Start(earlier, "a", "iris", 0.0), Start(dict(space.defaults), "a", "wine", 1.0)]
    assert first_points(cell, warm, encoded=False) == [space.defaults, earlier]  # the defaults once, first
    encoded = first_points(cell, warm[:1], encoded=True)
    assert space.decode(encoded[1], encoded=True) == earlier
    cell.space = load_space("knn", "classification", with_defaults=False)
    assert first_points(cell, warm[:1], encoded=False) == [earlier]
