"""The report's figures (matplotlib, Agg backend): each drawn from the report's tables, returned as PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from tunelab.report.stats import CD_ALPHA, FEW_BLOCKS, friedman, nemenyi_cd, rank_blocks  # noqa: E402
from tunelab.report.tables import Report  # noqa: E402

FIG_DPI = 110
CMAP = "viridis"
#: a metric spanning more than this factor is drawn on a log scale
LOG_SCALE_SPAN = 20


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def normalised_heatmap(rep: Report) -> bytes:
    """Families × datasets, normalised test score (1 = best family on the dataset), with the mean."""
    norm = rep.normalised.copy()
    norm["mean"] = rep.summary.set_index("family")["mean_normalised"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * norm.shape[1], 0.9 + 0.45 * norm.shape[0]))
    ax.imshow(norm.to_numpy(dtype=float), cmap=CMAP, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(norm.shape[1]), norm.columns, rotation=30, ha="right")
    ax.set_yticks(range(norm.shape[0]), norm.index)
    for (i, j), v in np.ndenumerate(norm.to_numpy(dtype=float)):
        ax.text(
            j,
            i,
            "—" if math.isnan(v) else f"{v:.2f}",
            ha="center",
            va="center",
            color="white" if not math.isnan(v) and v < 0.6 else "black",
            fontsize=9,
        )
    ax.axvline(norm.shape[1] - 1.5, color="white", lw=3)
    ax.set_title("normalised test score (1 = best family, 0 = worst)")
    return png(fig)


def cd_diagram(rep: Report, alpha: float, few_blocks: int) -> tuple[bytes, str]:
    """Demšar's critical-difference diagram: mean ranks over datasets (each dataset's splits averaged first:
    ``rank_blocks``), the Friedman test, the Nemenyi critical difference, and bars joining families closer than
    it. Only families present in every (dataset, split) take part.

    Drawn here rather than with autorank: autorank 1.3.0 (and baycomp, which it pulls in) install a
    top-level ``tests`` package into site-packages, which shadows this project's ``tests``.
    """
    wide = rank_blocks(rep.blocks, rep.cells.drop_duplicates("dataset").set_index("dataset")["metric"])
    k, n = wide.shape[1], len(wide)
    if k < 2:
        return b"", "critical-difference diagram: fewer than two families ran on every dataset"
    ranks, _, _, p = friedman(wide)
    ranks = ranks.sort_values()
    cd = nemenyi_cd(k, n, alpha)
    fig, ax = plt.subplots(figsize=(7, 1.3 + 0.35 * k))
    ax.set_xlim(k + 0.2, 0.8)  # rank 1 (best) on the right, as in Demšar's diagrams
    top = k + 0.2  # the rank axis
    ax.set_ylim(-0.6, top + 1.6)
    ax.hlines(top, 1, k, color="black")
    for r in range(1, k + 1):
        ax.text(r, top + 0.12, str(r), ha="center", va="bottom", fontsize=9)
    for i, (family, rank) in enumerate(ranks.items()):
        y = k - 1 - i
        ax.plot([rank, rank], [y, top], color="grey", lw=0.8)
        ax.plot(rank, top, "ko", ms=4)
        ax.text(
            rank,
            y,
            f"{family} ({rank:.2f})",
            ha="center",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
    values, reach, level = ranks.to_numpy(), -1, 0
    for i in range(k):  # maximal groups of families whose mean ranks differ by less than the CD
        j = max(j for j in range(i, k) if values[j] - values[i] < cd)
        if j > i and j > reach:
            ax.hlines(top - 0.3 - 0.18 * level, values[i] - 0.03, values[j] + 0.03, color="black", lw=3)
            reach, level = j, level + 1
    ax.errorbar([1 + cd / 2], [top + 0.9], xerr=[[cd / 2], [cd / 2]], color="crimson", capsize=4)
    ax.text(1 + cd / 2, top + 1.05, f"CD = {cd:.2f}", color="crimson", ha="center", va="bottom", fontsize=9)
    ax.axis("off")
    ax.set_title(f"mean rank over {n} datasets (1 = best; a dataset's splits averaged first)", fontsize=10)
    note = f"critical-difference diagram: Nemenyi CD {cd:.2f} at alpha {alpha} over {n} datasets"
    if k >= 3 and n >= 2:
        note += f"; Friedman test (Iman-Davenport F) p = {p:.3g}" + (
            " (no family differs significantly: the bars are moot)" if p >= alpha else ""
        )
    if n < few_blocks:
        note += f"; with fewer than {few_blocks} datasets, read it as a summary, not as a test"
    return png(fig), note


def _by_family(df: pd.DataFrame, dataset: str, x: str, y: str, title: str, xlabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    metric = df["metric"].iloc[0]
    for family, g in df.groupby("family"):
        ax.plot(
            g[x],
            g[y],
            label=family,
            drawstyle="steps-post" if x == "compute_s" else "default",
            marker=None if x == "compute_s" else "o",
            ms=3,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    for col, axis in ((y, ax.yaxis), (x, ax.xaxis)):
        values = df.dropna(subset=[y])[col]
        if len(values) and values.min() > 0 and values.max() / values.min() > LOG_SCALE_SPAN:
            _log_scale(ax, axis)  # families many times faster or better than others stay visible
    ax.set_title(f"{dataset}: {title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def _log_scale(ax, axis) -> None:
    """A log axis with a few plainly written ticks (1, 2, 5 per decade at most) and no minor labels: matplotlib's
    default labels minor ticks on a short span, and they run into each other."""
    (ax.set_yscale if axis is ax.yaxis else ax.set_xscale)("log")
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


#: per-dataset figures drawn as Ray tasks from this many on (a Ray worker takes seconds to import the report)
PARALLEL_FROM = 8


def _per_dataset(jobs: dict[str, tuple]) -> dict[str, bytes]:
    """``_by_family(*args)`` per file name: side by side as Ray tasks where Ray runs and there are many (a study
    of hundreds of datasets, at the end of ``tunelab run``), one after another in this process otherwise."""
    import ray

    if len(jobs) < PARALLEL_FROM or not ray.is_initialized():
        return {name: _by_family(*args) for name, args in jobs.items()}
    draw_one = ray.remote(num_cpus=1)(_by_family)  # once per report
    return dict(zip(jobs, ray.get([draw_one.remote(*args) for args in jobs.values()])))


def anytime(rep: Report) -> dict[str, bytes]:
    return _per_dataset(
        {
            f"anytime_{d}.png": (
                g,
                d,
                "compute_s",
                "best_val_so_far",
                "best validation score so far (mean over shuffled trial orders)",
                "cumulative compute (trial seconds)",
            )
            for d, g in rep.anytime.groupby("dataset", sort=False)
        }
    )


def learning(rep: Report) -> dict[str, bytes]:
    jobs = {}
    for d, g in rep.learning.groupby("dataset", sort=False):
        g = g.groupby(["family", "metric", "step"], as_index=False)["value"].mean()  # over splits
        if g["step"].max() > 1:
            jobs[f"learning_{d}.png"] = (
                g,
                d,
                "step",
                "value",
                "learning curve of each family's best trial",
                "budget step",
            )
    return _per_dataset(jobs)


def importance_bars(rep: Report) -> dict[str, bytes]:
    """One panel per family: its hyperparameters' mean share of the validation score's variance, with spread."""
    families = list(rep.importance["family"].unique()) if not rep.importance.empty else []
    if not families:
        return {}
    longest = rep.importance.groupby("family").size().max()
    fig, axes = plt.subplots(
        1, len(families), figsize=(3.2 * len(families), 0.8 + 0.32 * longest), squeeze=False, sharex=True
    )
    for ax, family in zip(axes[0], families):
        rows = rep.importance[rep.importance["family"] == family].iloc[::-1]  # most important on top
        ax.barh(rows["param"], rows["importance"], xerr=rows["std"], color="tab:blue", alpha=0.8)
        cells = int(rows["cells"].max())
        ax.set_title(f"{family} ({cells} cell{'s' if cells != 1 else ''})", fontsize=10)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="y", labelsize=8)
    fig.supxlabel("share of the validation score explained (mean over cells)", fontsize=9)
    fig.tight_layout()
    return {"importance.png": png(fig)}


def tuning_gain(rep: Report) -> dict[str, bytes]:
    """Per family: each dataset's gain over the defaults (dots) and the pooled mean with its 95 % interval."""
    if rep.tunability.empty:
        return {}
    families = list(rep.tunability["family"])
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.45 * len(families)))
    ax.axvline(0, color="grey", lw=0.8)
    for y, r in enumerate(rep.tunability.itertuples()):
        dots = rep.gains.loc[rep.gains["family"] == r.family, "gain"]
        ax.plot(dots, [y] * len(dots), "o", color="tab:grey", alpha=0.6, ms=4)
        ax.errorbar([r.gain], [y], xerr=[[r.gain - r.ci_low], [r.ci_high - r.gain]], fmt="D", color="tab:blue")
    ax.set_yticks(range(len(families)), families)
    ax.invert_yaxis()  # most gained on top
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set_xlabel("share of the defaults' test error removed by tuning (dots: datasets; ◆: mean, 95 % interval)")
    ax.set_title("what tuning bought over each family's defaults", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return {"tuning_gain.png": png(fig)}


FIGURES: dict[str, Callable[[Report], dict[str, bytes]]] = {
    "normalised": lambda rep: {"normalised.png": normalised_heatmap(rep)},
    "importance": importance_bars,
    "tunability": tuning_gain,
    "anytime": anytime,
    "learning": learning,
}


def draw(rep: Report) -> dict[str, bytes]:
    """Every figure of the report by file name; notes about them go into ``rep.notes``."""
    out: dict[str, bytes] = {}
    for make in FIGURES.values():
        out.update(make(rep))
    cd, note = cd_diagram(rep, CD_ALPHA, FEW_BLOCKS)
    if cd:
        out["critical_difference.png"] = cd
    rep.notes.append(note)
    return out
