"""Search spaces: every family's YAML parses; the syntax becomes Tune domains; BayesOpt encoding round-trips."""

import yaml
from ray import tune

from trainables import FAMILIES
from tunelab.spaces import _Reader, load_space


def test_every_family_has_a_valid_space():
    for name, cls in FAMILIES.items():
        for task in cls.tasks:
            space = load_space(name, task)
            assert space.steps >= 1
            assert set(space.to_tune()) == set(space.params)


def test_randint_includes_both_bounds_and_overrides_apply():
    space = load_space("xgboost", "classification", {"max_depth": {"randint": [2, 3]}, "budget": {"steps": 2}})
    d = space.to_tune()["max_depth"]
    assert isinstance(d, tune.search.sample.Integer) and (d.lower, d.upper) == (2, 4)
    assert space.steps == 2


def test_continuous_encoding_decodes_to_valid_values():
    space = load_space("knn", "classification")
    enc = space.to_tune(continuous_only=True)
    assert all(isinstance(d, tune.search.sample.Float) for d in enc.values())
    decoded = space.decode({"n_neighbors": 50.99, "weights": 1.7, "p": 0.2}, encoded=True)
    assert decoded == {"n_neighbors": 50, "weights": "distance", "p": 1}
    assert space.decode({"n_neighbors": 3, "weights": "uniform", "p": 2}) == {"n_neighbors": 3, "weights": "uniform", "p": 2}


def test_a_space_written_as_yaml_reads_back_the_same():
    space = load_space("random_forest", "classification", {"max_depth": 7, "budget": {"steps": 3, "per_step": 5}})
    written = yaml.safe_load(space.to_yaml())
    assert written["budget"] == {"steps": 3, "per_step": 5}
    assert {n: _Reader("w").param(n, spec) for n, spec in written["params"].items()} == space.params
    assert written["params"]["max_depth"] == 7
