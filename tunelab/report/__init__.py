"""The study report: how the model families compare, per dataset and across datasets.

Reads the MLflow store only (study run > cell runs > trial runs) and writes one
self-contained HTML page (figures embedded as PNG), the same figures as PNG files and the
tables as CSV; ``log`` adds them to the study run as artifacts under ``report/``.

Scores compared across families are test scores of each family's selected configuration
(selected on validation). Normalised score: 0 = worst family, 1 = best family on that
dataset (and split). Ranks: 1 = best, ties averaged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
from mlflow.tracking import MlflowClient

from trainables.base import metric_sign
from tunelab.errors import StudyError
from tunelab.report import ensemble, figures, tunability
from tunelab.report.html import to_html
from tunelab.report.importance import family_importance
from tunelab.report.record import StudyRecord, best_configs, cell_diagnostics
from tunelab.report.stats import MIN_DATASETS, across_datasets, block_scores, bootstrap, nemenyi_cd
from tunelab.report.tables import (
    Report,
    anytime_curve,
    anytime_table,
    asha_savings,
    cell_table,
    leaderboard,
    learning_curves,
    protocol,
)
from tunelab.tracking import STUDY

ARTIFACT_DIR = "report"
TABLES = {
    "leaderboard.csv": "leaderboard",
    "scores_by_split.csv": "blocks",
    "families.csv": "summary",
    "asha.csv": "asha",
    "anytime.csv": "anytime",
    "learning_curves.csv": "learning",
    "importance.csv": "importance",
    "tuning_gain.csv": "gains",
    "tunability.csv": "tunability",
    "ensembles.csv": "ensembles",
}

__all__ = [
    "ARTIFACT_DIR",
    "Report",
    "StudyRecord",
    "across_datasets",
    "anytime_curve",
    "asha_savings",
    "best_configs",
    "block_scores",
    "build",
    "log",
    "make_report",
    "nemenyi_cd",
    "short_report",
    "to_html",
    "write",
]


def build(record: StudyRecord, notes: tuple[str, ...] = ()) -> Report:
    """All tables of the report and its figures; ``notes`` go on its page."""
    cells = cell_table(record)
    if cells.empty:
        raise StudyError(record.study.data.tags.get(STUDY, "?"), "the study has no finished cell to report on")
    blocks = block_scores(cells)
    norm, summary = across_datasets(blocks)
    intervals, pairwise = bootstrap(norm)
    summary = summary.merge(intervals, on="family", how="left")
    gains = tunability.per_dataset(cells)
    ensembles = ensemble.ensembles(record)
    rep = Report(
        record.study.data.tags[STUDY],
        record,
        cells,
        with_ensembles(leaderboard(cells), ensembles),
        blocks,
        norm,
        summary,
        asha_savings(cells),
        anytime_table(record),
        learning_curves(record),
        protocol(record),
        pairwise=pairwise,
        importance=family_importance(record),
        gains=gains,
        tunability=tunability.pooled(gains),
        ensembles=ensembles,
        notes=list(notes),
    )
    if norm.shape[1] < MIN_DATASETS:
        rep.notes.append(
            f"95 % intervals and P(A beats B) resample the study's {norm.shape[1]} dataset(s): with fewer than "
            f"{MIN_DATASETS} they say little"
        )
    rep.figures = figures.draw(rep)
    rep.figures.update(cell_diagnostics(record))
    return rep


def with_ensembles(board: pd.DataFrame, ensembles: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with an ``ensemble`` row per dataset (splits averaged), in its place by validation score."""
    if ensembles.empty:
        return board
    g = ensembles.groupby("dataset", sort=False)
    rows = g.agg(metric=("metric", "first"), best_val=("best_val", "mean"), test=("test", "mean")).reset_index()
    rows = rows.assign(family=ensemble.NAME, splits=g.size().to_numpy())
    out = pd.concat([board, rows], ignore_index=True)
    out["_key"] = [metric_sign(m) * v for m, v in zip(out["metric"], out["best_val"])]
    order = {d: i for i, d in enumerate(board["dataset"].unique())}
    out["_dataset"] = out["dataset"].map(order)
    return out.sort_values(["_dataset", "_key"]).drop(columns=["_key", "_dataset"]).reset_index(drop=True)


def write(rep: Report, out: Path) -> Path:
    """The HTML page, PNGs and CSVs into ``out``; returns the HTML page's path."""
    out.mkdir(parents=True, exist_ok=True)
    for name, attr in TABLES.items():
        getattr(rep, attr).to_csv(out / name, index=False)
    rep.normalised.to_csv(out / "normalised.csv")
    rep.pairwise.to_csv(out / "pairwise.csv")
    for name, png in rep.figures.items():
        (out / name).write_bytes(png)
    page = out / "report.html"
    page.write_text(to_html(rep))
    return page


def log(rep: Report, out: Path) -> None:
    """Add the written report to the study run's artifacts under ``report/``."""
    rep.record.client.log_artifacts(rep.record.study.info.run_id, str(out), ARTIFACT_DIR)


def make_report(client: MlflowClient, name: str, out: Path, log_artifacts: bool = True) -> tuple[Report, Path]:
    """Read study ``name`` from the store, write its report into ``out`` and (by default) log it to the study run."""
    rep = build(StudyRecord.load(client, name))
    page = write(rep, out)
    if log_artifacts:
        log(rep, out)
    return rep, page


def short_report(uri: str, name: str, out: Optional[Path] = None) -> str:
    """For the end of ``tunelab run``: write and log the report, return its short text."""
    out = out or Path("reports") / name
    rep, page = make_report(MlflowClient(uri), name, out)
    return rep.short_text() + f"\nfull report: {page} (also in the study run's artifacts under {ARTIFACT_DIR}/)"
