"""The random searcher: seeded draws, and a point to evaluate first that names only some parameters."""

from ray import tune

from tunelab.search import RandomSearch

SPACE = {"width": 32, "lr": tune.loguniform(1e-4, 1e-1), "depth": tune.randint(1, 4)}


def _searcher(points=None) -> RandomSearch:
    s = RandomSearch(seed=0, points=points)
    s.set_search_properties("val_logloss", "min", SPACE)
    return s


def test_a_partial_point_is_completed_from_the_space():
    first = _searcher([{"lr": 0.01}]).suggest("t1")
    assert first["lr"] == 0.01 and first["width"] == 32 and 1 <= first["depth"] < 4


def test_draws_are_seeded_and_hold_every_parameter():
    a, b = _searcher(), _searcher()
    draws = [a.suggest(f"t{i}") for i in range(3)]
    assert draws == [b.suggest(f"t{i}") for i in range(3)]
    assert all(set(d) == set(SPACE) for d in draws) and len({d["lr"] for d in draws}) == 3
