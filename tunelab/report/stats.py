"""The report's statistics: scores normalised and ranked per (dataset, split), across datasets, critical differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from trainables.base import metric_sign

#: with fewer datasets, the rank tests are a summary rather than a test
FEW_BLOCKS = 5
CD_ALPHA = 0.05


def block_scores(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, split) block and family: test score, normalised score and rank within the block."""
    rows = []
    for (dataset, split), block in cells.groupby(["dataset", "split"], sort=False):
        block = block.dropna(subset=["test"])
        if block.empty:
            continue
        score = -metric_sign(block["metric"].iloc[0]) * block["test"].to_numpy()  # higher is better
        lo, hi = score.min(), score.max()
        norm = (score - lo) / (hi - lo) if hi > lo else np.ones_like(score)
        ranks = stats.rankdata(-score)
        for fam, test, n, r in zip(block["family"], block["test"], norm, ranks):
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "family": fam,
                    "test": test,
                    "normalised": float(n),
                    "rank": float(r),
                }
            )
    return pd.DataFrame(rows, columns=["dataset", "split", "family", "test", "normalised", "rank"])


def across_datasets(blocks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dataset × family normalised score, averaged over splits) and the per-family summary:
    mean normalised score, its spread over datasets, mean rank, datasets counted."""
    per_ds = blocks.groupby(["dataset", "family"], sort=False)[["normalised", "rank"]].mean().reset_index()
    norm = per_ds.pivot(index="family", columns="dataset", values="normalised")
    summary = per_ds.groupby("family").agg(
        mean_normalised=("normalised", "mean"),
        std_normalised=("normalised", "std"),
        mean_rank=("rank", "mean"),
        datasets=("dataset", "nunique"),
    )
    summary["std_normalised"] = summary["std_normalised"].fillna(0.0)
    summary = summary.sort_values(["mean_rank", "mean_normalised"], ascending=[True, False])
    return norm.loc[summary.index], summary.reset_index()


def rank_blocks(blocks: pd.DataFrame, metrics: pd.Series) -> pd.DataFrame:
    """The rank tests' blocks (Friedman, Nemenyi): one per dataset, not per (dataset, split), since a dataset's
    splits are not independent datasets. Each family's test score, higher is better, averaged over the dataset's
    splits; only the families with a score in every (dataset, split)."""
    wide = blocks.pivot_table(index=["dataset", "split"], columns="family", values="test").dropna(axis=1)
    wide = wide.mul([-metric_sign(metrics[d]) for d, _ in wide.index], axis=0)  # higher is better everywhere
    return wide.groupby(level="dataset", sort=False).mean()


def friedman(wide: pd.DataFrame) -> tuple[pd.Series, float, float, float]:
    """The Friedman test as Demšar (2006) gives it, on ``wide`` (dataset × family, higher is better): each
    family's mean rank (1 = best, ties averaged), Friedman's chi-square, Iman and Davenport's F (less conservative)
    and F's p-value with (k - 1, (k - 1)(N - 1)) degrees of freedom."""
    n, k = wide.shape
    ranks = wide.rank(axis=1, ascending=False).mean()
    chi2 = 12 * n / (k * (k + 1)) * (float((ranks**2).sum()) - k * (k + 1) ** 2 / 4)
    f = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) > chi2 else math.inf
    return ranks, chi2, f, float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def nemenyi_cd(k: int, n: int, alpha: float) -> float:
    """Demšar's critical difference of mean ranks for k methods on n datasets (Nemenyi test)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


#: resamples of the datasets for the intervals; below MIN_DATASETS the report says the intervals are rough
BOOTSTRAP_DRAWS, MIN_DATASETS = 2000, 5


def pooled(wide: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per family (``wide``: family × dataset, NaN where it did not run): the mean over its datasets as ``column``,
    the 95 % interval of that mean with datasets resampled (``ci_low``, ``ci_high``) and the datasets counted."""
    intervals, _ = bootstrap(wide)
    means = pd.DataFrame({"family": list(wide.index), column: wide.mean(axis=1).to_numpy()})
    means["datasets"] = wide.count(axis=1).to_numpy()
    return means.merge(intervals, on="family")[["family", column, "ci_low", "ci_high", "datasets"]]


def bootstrap(norm: pd.DataFrame, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How sure the comparison is, by resampling datasets with replacement (``norm``: family × dataset normalised
    scores, NaN where a family did not run). Returns each family's 95 % percentile interval of its mean normalised
    score (``family``, ``ci_low``, ``ci_high``), and P(row family's mean > column family's mean), ties counted half.
    """
    families, values = list(norm.index), norm.to_numpy(dtype=float)
    picks = np.random.default_rng(seed).integers(0, values.shape[1], size=(draws, values.shape[1]))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any dataset of a family: NaN
        means = np.nanmean(values[:, picks], axis=2)  # family × draw
        low, high = np.nanpercentile(means, [2.5, 97.5], axis=1)
    intervals = pd.DataFrame({"family": families, "ci_low": low, "ci_high": high})
    a, b = means[:, None, :], means[None, :, :]
    both = np.isfinite(a) & np.isfinite(b)  # the resamples in which both families have a dataset
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = ((a > b) + 0.5 * (a == b)).sum(axis=2, where=both) / both.sum(axis=2)
    np.fill_diagonal(wins, np.nan)
    return intervals, pd.DataFrame(wins, index=families, columns=families)
