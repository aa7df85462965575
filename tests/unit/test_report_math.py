"""The report's arithmetic on hand-made tables (no store): normalised scores, ranks, anytime curves, preview."""

import numpy as np
import pandas as pd
import pytest

from tunelab.preview import describe, draws
from tunelab.report import across_datasets, anytime_curve, asha_savings, block_scores, nemenyi_cd
from tunelab.report.stats import rank_blocks
from tunelab.spaces import load_space


def _cells(rows):
    return pd.DataFrame(rows, columns=["dataset", "family", "split", "metric", "test", "steps_run", "steps_full"])


def test_normalised_scores_and_ranks_follow_the_metric_direction():
    cells = _cells(
        [
            ("a", "x", 0, "val_logloss", 0.2, 1, 1),
            ("a", "y", 0, "val_logloss", 0.4, 1, 1),
            ("a", "z", 0, "val_logloss", 0.6, 1, 1),
            ("b", "x", 0, "val_accuracy", 0.7, 1, 1),
            ("b", "y", 0, "val_accuracy", 0.9, 1, 1),
            ("b", "z", 0, "val_accuracy", 0.9, 1, 1),
        ]
    )
    blocks = block_scores(cells).set_index(["dataset", "family"])
    assert blocks.loc[("a", "x"), "normalised"] == 1.0 and blocks.loc[("a", "z"), "normalised"] == 0.0
    assert blocks.loc[("a", "y"), "normalised"] == pytest.approx(0.5)
    assert blocks.loc[("b", "y"), "rank"] == blocks.loc[("b", "z"), "rank"] == 1.5  # a tie shares its ranks
    norm, summary = across_datasets(block_scores(cells))
    s = summary.set_index("family")
    assert s.loc["x", "mean_rank"] == pytest.approx((1 + 3) / 2)
    assert s.loc["y", "mean_normalised"] == pytest.approx((0.5 + 1.0) / 2)
    assert list(summary["family"]) == ["y", "x", "z"]  # by mean rank
    assert norm.loc["z", "b"] == 1.0


def test_splits_are_averaged_within_a_dataset_before_datasets():
    cells = _cells(
        [
            ("a", "x", 0, "val_rmse", 1.0, 1, 1),
            ("a", "y", 0, "val_rmse", 2.0, 1, 1),
            ("a", "x", 1, "val_rmse", 2.0, 1, 1),
            ("a", "y", 1, "val_rmse", 1.0, 1, 1),
            ("a", "x", 2, "val_rmse", 1.0, 1, 1),
            ("a", "y", 2, "val_rmse", 2.0, 1, 1),
        ]
    )
    _, summary = across_datasets(block_scores(cells))
    s = summary.set_index("family")
    assert s.loc["x", "mean_normalised"] == pytest.approx(2 / 3) and s.loc["x", "mean_rank"] == pytest.approx(4 / 3)


def test_the_rank_tests_take_one_block_per_dataset_not_per_split():
    """With splits: 3, counting (dataset, split) pairs as blocks would triple n and shrink the critical difference
    by sqrt(3): each dataset is one block, its splits' scores averaged (higher is better, whatever the metric)."""
    rows = []
    for dataset, metric in (("a", "val_rmse"), ("b", "val_accuracy")):
        for split in range(3):
            rows += [(dataset, "x", split, metric, 1.0 + split, 1, 1), (dataset, "y", split, metric, 2.0, 1, 1)]
    cells = _cells(rows)
    wide = rank_blocks(block_scores(cells), cells.drop_duplicates("dataset").set_index("dataset")["metric"])
    assert list(wide.index) == ["a", "b"] and sorted(wide.columns) == ["x", "y"]
    assert wide.loc["a", "x"] == pytest.approx(-2.0) and wide.loc["a", "y"] == pytest.approx(-2.0)  # rmse: lower
    assert wide.loc["b", "x"] == pytest.approx(2.0)


def test_asha_savings():
    cells = _cells([("a", "x", 0, "val_rmse", 1.0, 6, 12), ("a", "y", 0, "val_rmse", 1.0, 3, 3)])
    out = asha_savings(cells).set_index("family")
    assert out.loc["x", "saved_fraction"] == 0.5 and out.loc["y", "saved_fraction"] == 0.0
    assert out.loc["all", "steps_run"] == 9 and out.loc["all", "saved_fraction"] == pytest.approx(1 - 9 / 15)


def test_anytime_curve_is_the_running_best_averaged_over_shuffles():
    compute = np.array([1.0, 1.0, 1.0])
    values = np.array([0.5, 0.3, np.nan])  # a failed trial still costs compute
    grid = np.array([0.5, 1.0, 2.0, 3.0])
    as_run = anytime_curve(compute, values, -1, grid, shuffles=1)
    np.testing.assert_allclose(as_run, [np.nan, 0.5, 0.3, 0.3])
    mean = anytime_curve(compute, values, -1, grid, shuffles=200)
    assert np.isnan(mean[:2]).all()  # some shuffles start with the failed trial: no score yet for all
    assert mean[-1] == pytest.approx(0.3) and 0.3 <= mean[2] <= 0.5


def test_nemenyi_cd_matches_demsar_table():
    # Demšar (2006), table 5(a): q_0.05 for k = 4 is 2.569; CD = q * sqrt(k(k+1) / 6N)
    assert nemenyi_cd(4, 10, 0.05) == pytest.approx(2.569 * np.sqrt(4 * 5 / 60), abs=2e-3)


#: Demšar (2006), table 6: AUC of C4.5 with and without its m and cf parameters tuned, on 14 datasets
DEMSAR_TABLE_6 = {
    "adult (sample)": (0.763, 0.768, 0.771, 0.798),
    "breast cancer": (0.599, 0.591, 0.590, 0.569),
    "breast cancer wisconsin": (0.954, 0.971, 0.968, 0.967),
    "cmc": (0.628, 0.661, 0.654, 0.657),
    "ionosphere": (0.882, 0.888, 0.886, 0.898),
    "iris": (0.936, 0.931, 0.916, 0.931),
    "liver disorders": (0.661, 0.668, 0.609, 0.685),
    "lung cancer": (0.583, 0.583, 0.563, 0.625),
    "lymphography": (0.775, 0.838, 0.866, 0.875),
    "mushroom": (1.000, 1.000, 1.000, 1.000),
    "primary tumor": (0.940, 0.962, 0.965, 0.962),
    "rheum": (0.619, 0.666, 0.614, 0.669),
    # printed 0.975 and 0.975, ranked 2 and 3 in the paper (its ranks are of the unrounded AUCs)
    "voting": (0.972, 0.981, 0.9751, 0.975),
    "wine": (0.957, 0.978, 0.946, 0.970),
}


def test_friedman_and_nemenyi_reproduce_demsars_worked_example():
    """Demšar (2006), section 3.2.2: mean ranks 3.143, 2.000, 2.893, 1.964; chi2_F = 9.28, F_F = 3.69 (critical
    value of F(3, 39) at 0.05: 2.85, so the null hypothesis is rejected); CD = 1.25 at 0.05 for k = 4, N = 14. The
    table goes in as the report's cells (one split), through the same block and rank code the diagram uses."""
    from tunelab.report.stats import friedman

    families = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
    rows = [(d, f, 0, "val_roc_auc", auc, 1, 1) for d, aucs in DEMSAR_TABLE_6.items() for f, auc in zip(families, aucs)]
    cells = _cells(rows)
    wide = rank_blocks(block_scores(cells), cells.drop_duplicates("dataset").set_index("dataset")["metric"])
    assert wide.shape == (14, 4)
    ranks, chi2, f, p = friedman(wide)
    assert ranks[families].tolist() == pytest.approx([3.143, 2.000, 2.893, 1.964], abs=5e-4)
    assert chi2 == pytest.approx(9.28, abs=5e-3) and f == pytest.approx(3.69, abs=5e-3)
    assert f > 2.85 and p < 0.05
    assert nemenyi_cd(4, 14, 0.05) == pytest.approx(1.25, abs=5e-3)


def test_tuning_gain_is_the_share_of_the_defaults_error_removed_pooled_over_datasets():
    from tunelab.report import tunability

    cells = pd.DataFrame(
        [
            ("a", "x", 0, "val_logloss", 0.5, 0.4),  # error 0.5 -> 0.4: 20 % removed
            ("a", "x", 1, "val_logloss", 0.5, 0.2),  # the second split: 60 %; the dataset's mean: 0.5 -> 0.3 = 40 %
            ("b", "x", 0, "val_accuracy", 0.8, 0.9),  # error 0.2 -> 0.1: 50 %
            ("a", "y", 0, "val_rmse", 2.0, 2.5),  # worse on test than the defaults: -25 %
            ("b", "y", 0, "val_r2", 0.5, np.nan),  # no test score: left out
            ("b", "z", 0, "val_r2", np.nan, 0.7),  # no defaults' score: left out
        ],
        columns=["dataset", "family", "split", "metric", "default_test", "test"],
    )
    gains = tunability.per_dataset(cells).set_index(["dataset", "family"])["gain"]
    assert gains.to_dict() == pytest.approx({("a", "x"): 0.4, ("b", "x"): 0.5, ("a", "y"): -0.25})
    pooled = tunability.pooled(tunability.per_dataset(cells)).set_index("family")
    assert list(pooled.index) == ["x", "y"] and pooled.loc["x", "gain"] == pytest.approx(0.45)
    assert pooled.loc["x", "ci_low"] == pytest.approx(0.4) and pooled.loc["x", "ci_high"] == pytest.approx(0.5)
    assert pooled.loc["x", "datasets"] == 2 and pooled.loc["y", "datasets"] == 1


def test_preview_draws_decoded_values_within_the_space():
    space = load_space("xgboost", "classification")
    d = draws(space, 300, seed=0)
    assert set(d) == set(space.params)
    assert all(isinstance(v, int) and 2 <= v <= 10 for v in d["max_depth"]) and {2, 10} <= set(d["max_depth"])
    assert all(0.01 <= v <= 0.3 for v in d["learning_rate"])
    encoded = draws(load_space("knn", "classification"), 300, seed=0, continuous_only=True)
    assert set(encoded["weights"]) == {"uniform", "distance"} and set(encoded["p"]) == {1, 2}
    assert describe(["a", "b", "b", "b"], categorical=True) == "a: 25%  b: 75%"


def test_validate_preview_shows_each_cells_draws(capsys):
    from tests.conftest import ROOT
    from tunelab.cli import main

    assert main(["validate", str(ROOT / "studies" / "tiny.yaml"), "--preview"]) == 0
    out = capsys.readouterr().out
    assert "300 draws per cell" in out and "logistic_regression · iris" in out
    assert "C                    loguniform [0.001, 100.0]" in out and "default 1.0" in out
    assert "strategy" in out and "%" in out  # a choice: how often each option came up


def _normalised_suite(rng, n_datasets: int) -> pd.DataFrame:
    """Three families whose test scores differ by a known amount plus per-dataset noise, normalised per dataset."""
    scores = np.array([[0.8], [0.5], [0.45]]) + rng.normal(0, 0.3, size=(3, n_datasets))
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    return pd.DataFrame((scores - lo) / (hi - lo), index=["good", "mid", "close"])


def test_bootstrap_intervals_cover_the_truth_and_the_better_family_wins():
    """200 simulated suites of 15 datasets: each family's 95 % interval covers its true mean normalised score (from
    a suite of 200,000 datasets) in at least 85 % of them, and P(good beats close) is high where it should be."""
    from tunelab.report.stats import bootstrap

    rng = np.random.default_rng(7)
    truth = _normalised_suite(rng, 200_000).mean(axis=1)
    covered, sure = pd.Series(0, index=truth.index), 0
    for _ in range(200):
        intervals, pairwise = bootstrap(_normalised_suite(rng, 15), draws=500, seed=int(rng.integers(1 << 31)))
        ci = intervals.set_index("family")
        covered += (ci["ci_low"] <= truth) & (truth <= ci["ci_high"])
        sure += pairwise.loc["good", "close"] > 0.95
        assert pairwise.loc["good", "close"] + pairwise.loc["close", "good"] == pytest.approx(1.0)
    assert (covered / 200 >= 0.85).all(), covered / 200
    assert sure / 200 >= 0.75  # 85 % of the suites with this seed


def test_bootstrap_skips_resamples_without_a_familys_dataset():
    from tunelab.report.stats import bootstrap

    norm = pd.DataFrame([[1, 1, 0.8, 1], [0, 0.2, 0, 0.1], [0.5, np.nan, 0.5, 0.4]], index=["a", "b", "c"])
    intervals, pairwise = bootstrap(norm)
    assert pairwise.loc["a", "c"] == 1.0 and pairwise.loc["c", "a"] == 0.0 and np.isnan(pairwise.loc["a", "a"])
    assert intervals.set_index("family").loc["c"].tolist() == pytest.approx([0.4, 0.5])


def test_importance_ranks_first_the_one_hyperparameter_the_score_depends_on():
    """A synthetic family: its validation score depends on learning_rate only; depth, a choice and a constant are
    noise. The surrogate gives learning_rate nearly all of the share, and drops what never varied."""
    from tunelab.report.importance import cell_importance

    rng = np.random.default_rng(0)
    n = 40
    params = pd.DataFrame(
        {
            "learning_rate": rng.uniform(1e-3, 0.3, n).astype(str),  # as MLflow holds params: strings
            "depth": rng.integers(2, 10, n).astype(str),
            "booster": rng.choice(["gbtree", "dart"], n),
            "n_jobs": ["1"] * n,
        }
    )
    scores = (params["learning_rate"].astype(float) - 0.1) ** 2
    share = cell_importance(params, scores.to_numpy())
    assert share.idxmax() == "learning_rate" and share["learning_rate"] > 0.8
    assert share.sum() == pytest.approx(1.0) and "n_jobs" not in share
    assert cell_importance(params.head(3), scores.head(3).to_numpy()).empty  # too few trials to tell


def test_log_axes_write_few_ticks_that_do_not_run_into_each_other(monkeypatch):
    """A family 30 times slower than another puts the anytime plot's axis on a log scale: its tick labels are
    plain numbers, and none overlaps the next (matplotlib's default labels minor ticks on a short span)."""
    from tunelab.report import figures

    drawn = []
    monkeypatch.setattr(figures, "png", lambda fig: drawn.append(fig) or b"")
    rows = []
    for family, scale in (("fast", 1.0), ("slow", 30.0)):
        x = np.cumsum(np.linspace(0.5, 2.0, 20)) * scale
        rows += [{"family": family, "metric": "val_rmse", "compute_s": a, "best_val_so_far": 100.0 / a} for a in x]
    figures._by_family(pd.DataFrame(rows), "d", "compute_s", "best_val_so_far", "anytime", "seconds")
    (fig,) = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis in (fig.axes[0].xaxis, fig.axes[0].yaxis):
        assert axis.get_scale() == "log"
        low, high = sorted(axis.get_view_interval())
        ticks = zip(axis.get_ticklabels(), axis.get_majorticklocs())
        labels = [t for t, at in ticks if t.get_visible() and t.get_text() and low <= at <= high]
        assert 2 <= len(labels) <= 12 and all("$" not in t.get_text() for t in labels)
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: (b.x0, b.y0))
        for a, b in zip(boxes, boxes[1:]):
            assert not a.overlaps(b), [t.get_text() for t in labels]


def test_greedy_ensemble_selection_mixes_complementary_predictors_and_weighs_by_picks():
    """Two classifiers wrong on different halves of the rows, and a poor third: Caruana's selection picks the two,
    about evenly, and their average beats each on validation; the poor one is left out."""
    from collections import Counter

    from trainables.base import Context, score
    from tunelab.report.ensemble import blend, select

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    sure = np.where(y[:, None] == np.arange(2), 0.9, 0.1)
    a, b = sure.copy(), sure.copy()
    a[:200], b[200:] = 1 - sure[:200], 1 - sure[200:]  # each wrong on its own half
    a, b = 0.5 * a + 0.5 * sure, 0.5 * b + 0.5 * sure  # ... and unsure there
    poor = np.full_like(sure, 0.5) + rng.normal(0, 0.2, sure.shape).clip(-0.4, 0.4) * [1, -1]
    ctx = Context(task="classification", n_classes=2)
    picks = select([a, b, poor], y, ctx, "val_logloss", rounds=20)
    assert set(picks) == {0, 1} and abs(picks[0] - picks[1]) <= 2 and sum(picks.values()) == 20
    mixed = score(ctx, y, blend([a, b, poor], picks))["val_logloss"]
    assert mixed < min(score(ctx, y, p)["val_logloss"] for p in (a, b, poor))
    np.testing.assert_allclose(blend([a, b], Counter({0: 3, 1: 1})), 0.75 * a + 0.25 * b)


def test_ensemble_share_counts_datasets_with_splits_averaged_against_either_bar():
    """Per dataset, splits averaged: the ensemble against the family selected on validation and the family best on
    test; lower is better for logloss, higher for accuracy, and a tie counts as at least as good."""
    import pandas as pd

    from tunelab.report.ensemble import at_least

    table = pd.DataFrame(
        [  # dataset, split, metric, ensemble test, selected family's test, best family's test
            ("a", 0, "val_logloss", 0.30, 0.32, 0.25),
            ("a", 1, "val_logloss", 0.30, 0.30, 0.31),  # a: 0.30 vs 0.31 selected, 0.28 best
            ("b", 0, "val_accuracy", 0.90, 0.90, 0.90),  # b: ties both
            ("c", 0, "val_accuracy", 0.80, 0.85, 0.85),  # c: below both
        ],
        columns=["dataset", "split", "metric", "test", "selected_family_test", "best_family_test"],
    )
    assert at_least(table, "selected_family") == pytest.approx(2 / 3)
    assert at_least(table, "best_family") == pytest.approx(1 / 3)
    assert np.isnan(at_least(table.iloc[:0]))
